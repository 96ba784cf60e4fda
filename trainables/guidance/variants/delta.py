"""The source-prompt bridge (McAllister, Gao, Kerr, Kanazawa, Efros, NeurIPS 2024, "Rethinking Score Distillation
as a Bridge Between Image Distributions")."""
from __future__ import annotations

from trainables.guidance.variants.base import SOURCE, TARGET, TRAIN, ScoreVariant, source_text
from trainables.settings import StrictModel


class DeltaConfig(StrictModel):
    """guidance.delta: target minus source prediction on one z_t."""

    source_prompt: str | None = None         # y_src; None = the run's source_prompt (the source domain)


class Delta(ScoreVariant):
    """d = eps_cfg(z_t; y) - eps_cfg(z_t; y_src) = s (eps(z_t; y) - eps(z_t; y_src)),

    both predictions on the SAME noisy latent of the trained render: the noise term of SDS replaced by a
    prediction conditioned on a prompt that describes the current (source) image. In domain adaptation the
    source domain is known, so y_src defaults to the run's source_prompt (guidance.delta.source_prompt).
    The two CFG predictions share eps(z_t; ""), which cancels: two UNet rows, not four.
    """

    name = "delta"
    label = "bridge"
    Settings = DeltaConfig

    def rows(self, t):
        return ((TRAIN, TARGET), (TRAIN, SOURCE))

    def texts(self, prompt, source_prompt):
        return {**super().texts(prompt, source_prompt),
                SOURCE: source_text(self, self.settings.source_prompt, source_prompt)}

    def direction(self, e, eps, t):
        return self.s * (e[(TRAIN, TARGET)] - e[(TRAIN, SOURCE)])
