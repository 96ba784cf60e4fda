"""What every score-distillation variant shares: its interface, the prediction rows, CFG. Torch-free at import.

A variant is one file in this folder (or a 'package.module:Class' of your own) holding its typed settings and
one `ScoreVariant` subclass; `trainables/registry.py` lists the built-ins. The adaptation config gives every
registered variant's `Settings` a field `guidance.<settings_key>` (a variant of your own gets the same, checked
the same way); the variant reads them as `self.settings`. The interface:

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

The module imports no torch (a variant only combines tensors it is given), so validating a config that names a
variant never loads torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from trainables.settings import StrictModel

if TYPE_CHECKING:
    import torch

TRAIN, FROZEN = "train", "frozen"                                    # which render's latent a row noises
TARGET, UNCOND, SOURCE, NEGATIVE = "target", "uncond", "source", "negative"   # which text a row is conditioned on
PROMPT_ORDER = (UNCOND, TARGET, SOURCE, NEGATIVE)                     # row order in a batched UNet call

Row = tuple[str, str]                                                # (latent, prompt key)
Predictions = dict[Row, "torch.Tensor"]


def rescale_noise(x: "torch.Tensor") -> "torch.Tensor":
    """x * sqrt(C*H*W) / ||x||, per sample (the paper's code uses the whole-batch norm; equal at batch 1)."""
    n = x[0].numel()
    norm = x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    return x * (n ** 0.5) / norm


def guided(e: Predictions, latent: str, prompt: str, s: float) -> "torch.Tensor":
    """eps_cfg(z_latent; prompt) = eps(z; "") + s (eps(z; prompt) - eps(z; "")) (eq. 3)."""
    u = e[(latent, UNCOND)]
    return u + s * (e[(latent, prompt)] - u)


def source_text(variant: "ScoreVariant", own: str | None, source_prompt: str | None) -> str:
    """The variant's own source prompt, else the run's; a clear error when neither is set."""
    text = own if own is not None else source_prompt
    if not text:
        raise ValueError(f"guidance.variant {variant.name!r} needs a source prompt: set the run's source_prompt "
                         f"or guidance.{variant.settings_key}.source_prompt")
    return text


class ScoreVariant:
    """Base: paper SDS's interface. A subclass sets the class attributes below and implements rows / direction.

    name               what `guidance.variant` calls it (and its run names)
    label              how the comparison table names the method: 'Fusion-<label>' (None: the plain 'Fusion')
    Settings           its typed settings (a `StrictModel`), or None; they live at `guidance.<settings_key>`
    settings_key       the config key of its settings (default: `name`)
    needs_frozen       the direction reads the frozen render (FROZEN rows)
    allows_rescale_noise  guidance.rescale_noise is defined for it (SDS's eps_hat/eps pair only)
    """

    name: ClassVar[str] = "base"
    label: ClassVar[str | None] = None
    Settings: ClassVar[type[StrictModel] | None] = None
    settings_key: ClassVar[str | None] = None
    needs_frozen: ClassVar[bool] = False
    allows_rescale_noise: ClassVar[bool] = False

    def __init__(self, cfg: Any):
        self.cfg = cfg                         # the guidance settings (trainables.config.DiffusionGuidanceConfig)
        self.s = float(cfg.cfg_scale)
        key = self.config_key()
        self.settings = getattr(cfg, key) if key is not None else None

    @classmethod
    def config_key(cls) -> str | None:
        """Where its settings live under `guidance.` (None: it has none)."""
        return (cls.settings_key or cls.name) if cls.Settings is not None else None

    def rows(self, t: int) -> tuple[Row, ...]:
        raise NotImplementedError

    def texts(self, prompt: str, source_prompt: str | None) -> dict[str, str]:
        """Prompt key -> text, for every key `rows` may use."""
        return {TARGET: prompt, UNCOND: self.cfg.negative_prompt}

    def direction(self, e: Predictions, eps: "torch.Tensor", t: int) -> "torch.Tensor":
        raise NotImplementedError

    def cfg_eps(self, e: Predictions, latent: str, prompt: str = TARGET) -> "torch.Tensor":
        return guided(e, latent, prompt, self.s)
