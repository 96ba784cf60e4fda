"""Score-distillation variants: the latent direction that replaces paper SDS's (eps_hat_cfg - eps) in eq. (4).

Every variant is a small object that says which noise predictions it needs and how it combines them:

    rows(t)                 the (latent, prompt) pairs whose UNet prediction the direction reads at timestep t;
                            latent TRAIN = z_t of the trained render, FROZEN = the frozen render noised with the
                            SAME eps and t; prompt TARGET (the run's prompt), UNCOND (guidance.negative_prompt,
                            CFG's unconditional branch), SOURCE (a source-domain prompt), NEGATIVE (the
                            variant's own negative prompt)
    texts(prompt, source)   the text of every prompt key the rows use
    direction(e, eps, t)    the direction d from the predictions e[(latent, prompt)] and the drawn noise eps

The Fusion engines (fusion.py) compute the rows of a step in one UNet call (fast engine) or one per term
(reference engine), then apply what every variant shares: g_z = clamp(w(t) d * grad_scale, -c, c), the image
clamp (eq. 5), layer selection, and the regularizers (eqs. 6-8), which combine with every variant. Notation:
eps(z; p) is the UNet's noise prediction, s = guidance.cfg_scale, eps_cfg(z; p) = eps(z; "") + s (eps(z; p) -
eps(z; "")). Formulas, sources and how they were checked: docs/variants.md.
"""
from __future__ import annotations

import torch

from trainables.config import DiffusionGuidanceConfig

TRAIN, FROZEN = "train", "frozen"                                    # which render's latent a row noises
TARGET, UNCOND, SOURCE, NEGATIVE = "target", "uncond", "source", "negative"   # which text a row is conditioned on
PROMPT_ORDER = (UNCOND, TARGET, SOURCE, NEGATIVE)                     # row order in a batched UNet call

Row = tuple[str, str]                                                # (latent, prompt key)
Predictions = dict[Row, torch.Tensor]


def rescale_noise(x: torch.Tensor) -> torch.Tensor:
    """x * sqrt(C*H*W) / ||x||, per sample (the paper's code uses the whole-batch norm; equal at batch 1)."""
    n = x[0].numel()
    norm = torch.linalg.vector_norm(x.flatten(1), dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    return x * (n ** 0.5) / norm


def guided(e: Predictions, latent: str, prompt: str, s: float) -> torch.Tensor:
    """eps_cfg(z_latent; prompt) = eps(z; "") + s (eps(z; prompt) - eps(z; "")) (eq. 3)."""
    u = e[(latent, UNCOND)]
    return u + s * (e[(latent, prompt)] - u)


class ScoreVariant:
    """Base: paper SDS's interface. Subclasses set `name`, `needs_frozen` and implement rows / direction."""

    name = "base"
    needs_frozen = False          # the direction reads the frozen render (FROZEN rows)

    def __init__(self, cfg: DiffusionGuidanceConfig):
        self.cfg = cfg
        self.s = float(cfg.cfg_scale)

    def rows(self, t: int) -> tuple[Row, ...]:
        raise NotImplementedError

    def texts(self, prompt: str, source_prompt: str | None) -> dict[str, str]:
        """Prompt key -> text, for every key `rows` may use."""
        return {TARGET: prompt, UNCOND: self.cfg.negative_prompt}

    def direction(self, e: Predictions, eps: torch.Tensor, t: int) -> torch.Tensor:
        raise NotImplementedError

    def cfg_eps(self, e: Predictions, latent: str, prompt: str = TARGET) -> torch.Tensor:
        return guided(e, latent, prompt, self.s)


def _source_text(variant: str, own: str | None, source_prompt: str | None) -> str:
    text = own if own is not None else source_prompt
    if not text:
        raise ValueError(f"guidance.variant {variant!r} needs a source prompt: set the run's source_prompt "
                         f"or guidance.{variant}.source_prompt")
    return text


class Sds(ScoreVariant):
    """Paper SDS (Poole et al., DreamFusion 2022; StyleGAN-Fusion eq. 4):  d = eps_cfg(z_t; y) - eps,
    or rescale(eps_cfg) - rescale(eps) with guidance.rescale_noise (the paper's EG3D run)."""

    name = "sds"

    def rows(self, t):
        return ((TRAIN, UNCOND), (TRAIN, TARGET))

    def direction(self, e, eps, t):
        eps_hat = self.cfg_eps(e, TRAIN)
        if self.cfg.rescale_noise:
            return rescale_noise(eps_hat) - rescale_noise(eps)
        return eps_hat - eps


class Nfsd(ScoreVariant):
    """Noise-Free Score Distillation (Katzir, Patashnik, Cohen-Or, Lischinski, ICLR 2024, eq. 9):

        d = delta_D + s (eps(z_t; y) - eps(z_t; "")),
        delta_D = eps(z_t; "")                          if t < t_switch (200)
                = eps(z_t; "") - eps(z_t; y_neg)        otherwise,

    the "- eps" noise term of SDS replaced by the domain term delta_D (one t per step here, so the paper's
    per-sample switch is per step). Meant for normal CFG scales (7.5).
    """

    name = "nfsd"

    def _negative(self, t: int) -> bool:
        return t >= self.cfg.nfsd.t_switch

    def rows(self, t):
        base = ((TRAIN, UNCOND), (TRAIN, TARGET))
        return base + ((TRAIN, NEGATIVE),) if self._negative(t) else base

    def texts(self, prompt, source_prompt):
        return {**super().texts(prompt, source_prompt), NEGATIVE: self.cfg.nfsd.negative_prompt}

    def direction(self, e, eps, t):
        u = e[(TRAIN, UNCOND)]
        delta_d = u - e[(TRAIN, NEGATIVE)] if self._negative(t) else u
        return delta_d + self.s * (e[(TRAIN, TARGET)] - u)


class Csd(ScoreVariant):
    """Classifier Score Distillation (Yu, Guo, Li, Yuan, Qi, ICLR 2024, eqs. 7 and 9):

        d = s [(eps(z_t; y) - eps(z_t; "")) - r (eps(z_t; y_neg) - eps(z_t; ""))],

    the classifier term alone (no noise term, no unconditional score). The paper's w1 = 1 sits at a loss scale
    this engine does not share (the latent clamp and regularizer weights are the paper's): the classifier term
    carries guidance.cfg_scale as its gain, the same s that multiplies it inside SDS, so CSD at scale s is
    exactly SDS at scale s minus its (eps(z_t; "") - eps) part. r = guidance.csd.negative_weight (w2 / w1).
    """

    name = "csd"

    def rows(self, t):
        base = ((TRAIN, UNCOND), (TRAIN, TARGET))
        return base + ((TRAIN, NEGATIVE),) if self.cfg.csd.negative_weight > 0 else base

    def texts(self, prompt, source_prompt):
        return {**super().texts(prompt, source_prompt), NEGATIVE: self.cfg.csd.negative_prompt}

    def direction(self, e, eps, t):
        u = e[(TRAIN, UNCOND)]
        d = e[(TRAIN, TARGET)] - u
        if self.cfg.csd.negative_weight > 0:
            d = d - self.cfg.csd.negative_weight * (e[(TRAIN, NEGATIVE)] - u)
        return self.s * d


class Delta(ScoreVariant):
    """The source-prompt bridge (McAllister, Gao, Kerr, Kanazawa, Efros, NeurIPS 2024, "Rethinking Score
    Distillation as a Bridge Between Image Distributions"):

        d = eps_cfg(z_t; y) - eps_cfg(z_t; y_src) = s (eps(z_t; y) - eps(z_t; y_src)),

    both predictions on the SAME noisy latent of the trained render: the noise term of SDS replaced by a
    prediction conditioned on a prompt that describes the current (source) image. In domain adaptation the
    source domain is known, so y_src defaults to the run's source_prompt (guidance.delta.source_prompt).
    The two CFG predictions share eps(z_t; ""), which cancels: two UNet rows, not four.
    """

    name = "delta"

    def rows(self, t):
        return ((TRAIN, TARGET), (TRAIN, SOURCE))

    def texts(self, prompt, source_prompt):
        return {**super().texts(prompt, source_prompt),
                SOURCE: _source_text(self.name, self.cfg.delta.source_prompt, source_prompt)}

    def direction(self, e, eps, t):
        return self.s * (e[(TRAIN, TARGET)] - e[(TRAIN, SOURCE)])


class Dds(ScoreVariant):
    """Delta Denoising Score (Hertz, Aberman, Cohen-Or, ICCV 2023, eq. 5):

        d = eps_cfg(z_t; y) - eps_cfg(z~_t; y_src),  z~_t = sqrt(a) z_frozen + sqrt(1 - a) eps (same eps, t),

    the target prediction on the trained render minus the source prediction on the frozen render. Relation
    to the paper's directional regularizer (eq. 6, eps_cfg(z_t; y) - eps_cfg(z~_t; y), both on the target):
    DDS - directional = s (eps(z~_t; y) - eps(z~_t; y_src)), a term independent of the trained weights, which
    drives the edit from step 0; the directional term is zero at initialisation (pure anti-drift). DDS uses
    w(t) = 1 and t ~ U[50, 950] in its paper: set guidance.weighting / t_min / t_max for that.
    """

    name = "dds"
    needs_frozen = True

    def rows(self, t):
        return ((TRAIN, UNCOND), (TRAIN, TARGET), (FROZEN, UNCOND), (FROZEN, SOURCE))

    def texts(self, prompt, source_prompt):
        return {**super().texts(prompt, source_prompt),
                SOURCE: _source_text(self.name, self.cfg.dds.source_prompt, source_prompt)}

    def direction(self, e, eps, t):
        return self.cfg_eps(e, TRAIN) - self.cfg_eps(e, FROZEN, SOURCE)
