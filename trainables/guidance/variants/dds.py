"""Delta Denoising Score (Hertz, Aberman, Cohen-Or, ICCV 2023)."""
from __future__ import annotations

from trainables.guidance.variants.base import FROZEN, SOURCE, TARGET, TRAIN, UNCOND, ScoreVariant, source_text
from trainables.settings import StrictModel


class DdsConfig(StrictModel):
    """guidance.dds: target on the trained render minus source on the frozen."""

    source_prompt: str | None = None         # y_src of the frozen branch; None = the run's source_prompt


class Dds(ScoreVariant):
    """DDS, eq. 5:

        d = eps_cfg(z_t; y) - eps_cfg(z~_t; y_src),  z~_t = sqrt(a) z_frozen + sqrt(1 - a) eps (same eps, t),

    the target prediction on the trained render minus the source prediction on the frozen render. Relation
    to the paper's directional regularizer (eq. 6, eps_cfg(z_t; y) - eps_cfg(z~_t; y), both on the target):
    DDS - directional = s (eps(z~_t; y) - eps(z~_t; y_src)), a term independent of the trained weights, which
    drives the edit from step 0; the directional term is zero at initialisation (pure anti-drift). DDS uses
    w(t) = 1 and t ~ U[50, 950] in its paper: set guidance.weighting / t_min / t_max for that.
    """

    name = "dds"
    label = "DDS"
    Settings = DdsConfig
    needs_frozen = True

    def rows(self, t):
        return ((TRAIN, UNCOND), (TRAIN, TARGET), (FROZEN, UNCOND), (FROZEN, SOURCE))

    def texts(self, prompt, source_prompt):
        return {**super().texts(prompt, source_prompt),
                SOURCE: source_text(self, self.settings.source_prompt, source_prompt)}

    def direction(self, e, eps, t):
        return self.cfg_eps(e, TRAIN) - self.cfg_eps(e, FROZEN, SOURCE)
