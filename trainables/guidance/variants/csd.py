"""Classifier Score Distillation (Yu, Guo, Li, Yuan, Qi, ICLR 2024)."""
from __future__ import annotations

from pydantic import Field

from trainables.guidance.variants.base import NEGATIVE, TARGET, TRAIN, UNCOND, ScoreVariant
from trainables.settings import StrictModel

CSD_NEGATIVE = "oversaturated color, ugly, tiling, low quality, noisy"


class CsdConfig(StrictModel):
    """guidance.csd: the classifier term alone."""

    negative_prompt: str = CSD_NEGATIVE      # y_neg of the negative classifier score
    # w2 / w1: the negative classifier score's weight relative to the positive one (0 = pure CSD; their SD
    # refinement anneals w2 1 -> 0.5 with w1 = 1: this is a constant; w1 is guidance.cfg_scale, see Csd)
    negative_weight: float = Field(0.0, ge=0)


class Csd(ScoreVariant):
    """CSD, eqs. 7 and 9:

        d = s [(eps(z_t; y) - eps(z_t; "")) - r (eps(z_t; y_neg) - eps(z_t; ""))],

    the classifier term alone (no noise term, no unconditional score). The paper's w1 = 1 sits at a loss scale
    this engine does not share (the latent clamp and regularizer weights are the paper's): the classifier term
    carries guidance.cfg_scale as its gain, the same s that multiplies it inside SDS, so CSD at scale s is
    exactly SDS at scale s minus its (eps(z_t; "") - eps) part. r = guidance.csd.negative_weight (w2 / w1).
    """

    name = "csd"
    label = "CSD"
    Settings = CsdConfig

    def rows(self, t):
        base = ((TRAIN, UNCOND), (TRAIN, TARGET))
        return base + ((TRAIN, NEGATIVE),) if self.settings.negative_weight > 0 else base

    def texts(self, prompt, source_prompt):
        return {**super().texts(prompt, source_prompt), NEGATIVE: self.settings.negative_prompt}

    def direction(self, e, eps, t):
        u = e[(TRAIN, UNCOND)]
        d = e[(TRAIN, TARGET)] - u
        if self.settings.negative_weight > 0:
            d = d - self.settings.negative_weight * (e[(TRAIN, NEGATIVE)] - u)
        return self.s * d
