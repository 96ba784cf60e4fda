"""Score-distillation variants: the latent direction that replaces paper SDS's (eps_hat_cfg - eps) in eq. (4).

One file per variant (its settings and its `ScoreVariant` subclass), the shared interface in `base.py`; the
registry (`trainables/registry.py`, SCORE_VARIANTS) names them for `guidance.variant`. Torch-free at import.
"""
from trainables.guidance.variants.base import (FROZEN, NEGATIVE, PROMPT_ORDER, SOURCE, TARGET, TRAIN, UNCOND,
                                               Predictions, Row, ScoreVariant, guided, rescale_noise)

__all__ = ["FROZEN", "NEGATIVE", "PROMPT_ORDER", "SOURCE", "TARGET", "TRAIN", "UNCOND", "Predictions", "Row",
           "ScoreVariant", "guided", "rescale_noise"]
