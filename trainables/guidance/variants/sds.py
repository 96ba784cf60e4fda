"""Paper SDS (Poole et al., DreamFusion 2022; StyleGAN-Fusion eq. 4)."""
from __future__ import annotations

from trainables.guidance.variants.base import TARGET, TRAIN, UNCOND, ScoreVariant, rescale_noise


class Sds(ScoreVariant):
    """d = eps_cfg(z_t; y) - eps, or rescale(eps_cfg) - rescale(eps) with guidance.rescale_noise (the paper's EG3D
    run)."""

    name = "sds"
    allows_rescale_noise = True

    def rows(self, t):
        return ((TRAIN, UNCOND), (TRAIN, TARGET))

    def direction(self, e, eps, t):
        eps_hat = self.cfg_eps(e, TRAIN)
        if self.cfg.rescale_noise:
            return rescale_noise(eps_hat) - rescale_noise(eps)
        return eps_hat - eps
