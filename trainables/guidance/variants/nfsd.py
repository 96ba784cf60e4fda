"""Noise-Free Score Distillation (Katzir, Patashnik, Cohen-Or, Lischinski, ICLR 2024)."""
from __future__ import annotations

from pydantic import Field

from trainables.guidance.variants.base import NEGATIVE, TARGET, TRAIN, UNCOND, ScoreVariant
from trainables.settings import StrictModel

NFSD_NEGATIVE = ("unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, "
                 "low-resolution, gloomy")


class NfsdConfig(StrictModel):
    """guidance.nfsd: delta_D replaces the noise term."""

    negative_prompt: str = NFSD_NEGATIVE     # y_neg of delta_D = eps(z_t; "") - eps(z_t; y_neg) for t >= t_switch
    t_switch: int = Field(200, ge=0, le=1000)  # below it delta_D = eps(z_t; "") (the paper's 200)


class Nfsd(ScoreVariant):
    """NFSD, eq. 9:

        d = delta_D + s (eps(z_t; y) - eps(z_t; "")),
        delta_D = eps(z_t; "")                          if t < t_switch (200)
                = eps(z_t; "") - eps(z_t; y_neg)        otherwise,

    the "- eps" noise term of SDS replaced by the domain term delta_D (one t per step here, so the paper's
    per-sample switch is per step). Meant for normal CFG scales (7.5).
    """

    name = "nfsd"
    label = "NFSD"
    Settings = NfsdConfig

    def _negative(self, t: int) -> bool:
        return t >= self.settings.t_switch

    def rows(self, t):
        base = ((TRAIN, UNCOND), (TRAIN, TARGET))
        return base + ((TRAIN, NEGATIVE),) if self._negative(t) else base

    def texts(self, prompt, source_prompt):
        return {**super().texts(prompt, source_prompt), NEGATIVE: self.settings.negative_prompt}

    def direction(self, e, eps, t):
        u = e[(TRAIN, UNCOND)]
        delta_d = u - e[(TRAIN, NEGATIVE)] if self._negative(t) else u
        return delta_d + self.s * (e[(TRAIN, TARGET)] - u)
