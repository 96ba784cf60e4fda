"""Typed adaptation config: every knob is a field a sweep can address by dotted path.

One `AdaptConfig` describes one adaptation run (one Ray Tune trial). Sweep axes are dotted paths into
this model (`guidance.cfg_scale`, `reg.directional.weight`, `method`, `seed`), so every field here is a
sweep axis. Defaults are the paper's (`../shared/paper.md`); the pocket world overrides them in its
YAML files.
"""
from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from trainables.settings import StrictModel as _Strict
from trainables.registry import GENERATOR_KINDS, GUIDANCE, SCORE_VARIANTS

Precision = Literal["fp32", "bf16", "fp16"]
GuidanceName = Annotated[str, AfterValidator(GUIDANCE.check)]               # a registered guidance (method)
VariantName = Annotated[str, AfterValidator(SCORE_VARIANTS.check)]          # a registered score variant
GeneratorKindName = Annotated[str, AfterValidator(GENERATOR_KINDS.check)]    # a registered generator family


class GeneratorConfig(_Strict):
    kind: GeneratorKindName = "stylegan2"             # generator family (trainables/registry.py)
    checkpoint: str = Field(..., min_length=1)        # .pt (rosinality), .pkl (NVlabs/EG3D) or a state dict
    # StyleGAN2 output resolution (config-f channels), for cost estimates on a machine without the checkpoint;
    # None = read from the checkpoint. Checked against the checkpoint when both are there.
    size: int | None = Field(None, ge=4)


# The paper's EG3D run (paper.md, EG3D; sd.py `if self.args.EG3D: grad = grad/100.0`, ZSSGAN.py
# `lpips_loss * 2000 * w ... /100`): every guidance gradient / 100 (grad_scale also multiplies the LPIPS term,
# so LPIPS is 2000 * 0.01 = 20 x w, applied once), rescaled noise, image clamp off, constant backbone noise
# (frozen and trained renders must differ only by the weights).
EG3D_DEFAULTS = {
    "guidance": {"grad_scale": 0.01, "rescale_noise": True, "image_clamp_quantile": None},
    "train": {"noise_mode": "const"},
}


def _fill_defaults(data: dict, defaults: dict) -> None:
    for key, value in defaults.items():
        if isinstance(value, dict):
            node = data.setdefault(key, {})
            if isinstance(node, dict):
                _fill_defaults(node, value)
        else:
            data.setdefault(key, value)


# ---- score-distillation variants (trainables/guidance/variants.py reads these; docs/variants.md) ----------
NFSD_NEGATIVE = ("unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, "
                 "low-resolution, gloomy")
CSD_NEGATIVE = "oversaturated color, ugly, tiling, low quality, noisy"


class NfsdConfig(_Strict):
    """Noise-Free Score Distillation (Katzir et al., ICLR 2024): delta_D replaces the noise term."""

    negative_prompt: str = NFSD_NEGATIVE     # y_neg of delta_D = eps(z_t; "") - eps(z_t; y_neg) for t >= t_switch
    t_switch: int = Field(200, ge=0, le=1000)  # below it delta_D = eps(z_t; "") (the paper's 200)


class CsdConfig(_Strict):
    """Classifier Score Distillation (Yu et al., ICLR 2024): the classifier term alone."""

    negative_prompt: str = CSD_NEGATIVE      # y_neg of the negative classifier score
    # w2 / w1: the negative classifier score's weight relative to the positive one (0 = pure CSD; their SD
    # refinement anneals w2 1 -> 0.5 with w1 = 1: this is a constant; w1 is guidance.cfg_scale, see variants.py)
    negative_weight: float = Field(0.0, ge=0)


class DeltaConfig(_Strict):
    """The source-prompt bridge (McAllister et al., NeurIPS 2024): target minus source prediction on one z_t."""

    source_prompt: str | None = None         # y_src; None = the run's source_prompt (the source domain)


class DdsConfig(_Strict):
    """Delta Denoising Score (Hertz et al., ICCV 2023): target on the trained render minus source on the frozen."""

    source_prompt: str | None = None         # y_src of the frozen branch; None = the run's source_prompt


class DiffusionGuidanceConfig(_Strict):
    """StyleGAN-Fusion's critic: score distillation from a Stable-Diffusion-layout model."""

    model: str = "CompVis/stable-diffusion-v1-4"              # diffusers dir or hub id (VAE, UNet, scheduler)
    text_encoder: str | None = "openai/clip-vit-large-patch14"  # separate text encoder+tokenizer ref; None = model's own
    negative_prompt: str = ""                                 # unconditional branch of CFG
    cfg_scale: float = Field(100.0, ge=0)                     # s in eps_u + s (eps_c - eps_u)
    t_min: int = Field(10, ge=1, le=999)                      # t ~ U{t_min..t_max}, inclusive
    t_max: int = Field(500, ge=1, le=999)
    weighting: Literal["sds", "uniform"] = "sds"              # w(t) = 1 - alpha_bar_t, or 1
    latent_grad_clamp: float | None = Field(1.0, gt=0)        # clamp grad_z to [-c, c]; None = off
    image_clamp_quantile: float | None = Field(0.95, gt=0, le=1)  # per-sample |grad_x| quantile clamp; None = off
    rescale_noise: bool = False                               # x * sqrt(CHW) / ||x|| on eps_hat and eps
    image_size: int = Field(512, ge=8)                        # generator output resized (bilinear) to this
    grad_scale: float = Field(1.0, gt=0)                      # multiplies every injected gradient (EG3D: 0.01)
    precision: Precision = "fp32"                             # frozen VAE/UNet/text encoder precision
    engine: Literal["reference", "fast"] = "fast"             # same quantities; see docs/engine.md
    compile: bool = False                                     # torch.compile the UNet (fast engine; GPU runs)
    # the score-distillation direction (trainables/registry.py SCORE_VARIANTS): paper SDS or a later variant;
    # each variant reads its own sub-config below, the regularizers combine with every one
    variant: VariantName = "sds"
    nfsd: NfsdConfig = Field(default_factory=NfsdConfig)
    csd: CsdConfig = Field(default_factory=CsdConfig)
    delta: DeltaConfig = Field(default_factory=DeltaConfig)
    dds: DdsConfig = Field(default_factory=DdsConfig)

    @model_validator(mode="after")
    def _t_range(self) -> "DiffusionGuidanceConfig":
        if self.t_min > self.t_max:
            raise ValueError(f"t_min ({self.t_min}) must be <= t_max ({self.t_max})")
        return self

    @model_validator(mode="after")
    def _rescale_is_sds_only(self) -> "DiffusionGuidanceConfig":
        # rescale_noise normalises SDS's two terms (eps_hat and eps) before differencing; the variants have no
        # such pair (NFSD and CSD drop eps), so the option has no meaning there and is refused, not ignored
        if self.rescale_noise and self.variant != "sds":
            raise ValueError(f"guidance.rescale_noise is defined for guidance.variant 'sds' only (it rescales "
                             f"eps_hat and eps before differencing); set guidance.rescale_noise: false to use "
                             f"variant {self.variant!r} (EG3D configs turn it on by default)")
        return self


class ClipModelRef(_Strict):
    name: str = "ViT-B-32"          # open_clip model name (or a registered custom config)
    pretrained: str = "openai"      # open_clip tag or a local state-dict path
    weight: float = Field(1.0, ge=0)


class NadaConfig(_Strict):
    """StyleGAN-NADA's critic: directional CLIP loss."""

    clip_models: list[ClipModelRef] = Field(
        default_factory=lambda: [ClipModelRef(name="ViT-B-32"), ClipModelRef(name="ViT-B-16")], min_length=1
    )
    templates: Literal["imagenet", "none"] = "imagenet"  # 79 ImageNet templates (open_clip ships them)
    # generator output resized (bilinear) to this side and clamped to [-1, 1] before CLIP's own preprocessing;
    # None = the raw output (StyleGAN-NADA's code). The Fusion authors' NADA run resizes to 512 (their
    # SG2Generator.forward), see docs/fidelity.md.
    image_size: int | None = Field(None, ge=8)
    precision: Precision = "fp32"


class DirectionalReg(_Strict):
    weight: float = Field(0.0, ge=0)    # 0 = off
    rescale: bool = False               # rescale both predictions before differencing


class ReconstructionReg(_Strict):
    weight: float = Field(0.0, ge=0)


class LpipsReg(_Strict):
    weight: float = Field(0.0, ge=0)
    scale: float = 2000.0               # the paper's code multiplies LPIPS by 2000 * weight
    net: Literal["vgg", "alex", "squeeze"] = "vgg"


class RegularizerConfig(_Strict):
    directional: DirectionalReg = Field(default_factory=DirectionalReg)
    reconstruction: ReconstructionReg = Field(default_factory=ReconstructionReg)
    lpips: LpipsReg = Field(default_factory=LpipsReg)


class LayerSelectionConfig(_Strict):
    """Adaptive layer selection (NADA's `determine_opt_layers`, used by both methods in the Fusion code).

    Layers are ranked on a FRESH z batch of `batch_size` (the authors' `auto_layer_batch`), mapped without
    truncation and rendered with `noise_mode` noise, not on the step's own latents.
    """

    k: int = Field(0, ge=0)             # 0 = off: train the method's fixed trainable set
    iterations: int = Field(1, ge=1)    # W+ SGD steps used to rank layers (auto_layer_iters)
    lr: float = Field(0.01, gt=0)       # W+ SGD learning rate
    batch_size: int = Field(1, ge=1)    # fresh latents drawn for the ranking (auto_layer_batch; paper runs: 1)
    truncation: float = Field(1.0, gt=0, le=1)            # of the ranking latents (the authors': none)
    noise_mode: Literal["random", "const"] = "random"     # of the ranking renders (the authors': random)
    # Unselected synthesis parameters: 'zero_grad' = the authors' code (torch 1.x zero_grad leaves zero
    # tensors, so Adam steps every synthesis parameter each iteration: its step count rises and its second
    # moment decays while the layer is not chosen); 'no_grad' = no gradient, Adam state untouched.
    unselected: Literal["zero_grad", "no_grad"] = "zero_grad"


class OptimConfig(_Strict):
    lr: float | None = Field(None, gt=0)  # None = method default (Fusion 0.0008, NADA 0.0016)
    beta1: float = Field(0.0, ge=0, lt=1)
    beta2: float = Field(0.99 ** 0.8, ge=0, lt=1)
    freeze_bias: bool = True              # every *.bias stays frozen (all paper runs)


class TrainConfig(_Strict):
    iterations: int = Field(1001, ge=1)
    batch_size: int = Field(1, ge=1)
    # per-layer noise of both generators: 'const' = their fixed noise buffers (the authors' training forward,
    # randomize_noise=False, and what evaluation renders); 'random' = one fresh draw per step, SHARED by the
    # frozen and the trained render so the regularizers see only the weights' difference
    noise_mode: Literal["random", "const"] = "const"
    truncation: float = Field(1.0, gt=0, le=1)          # truncation of training latents
    # render the trained generator twice per step: once without graph for the critic, once with graph for the
    # backward of the critic's image gradient. The same gradient; no generator activations alive while the
    # critic runs (SD 1.x + StyleGAN2-1024: peak 5.7 -> 4.3 GB in bf16) for one more generator forward (+3.5%).
    recompute_generator: bool = True
    sample_every: int = Field(100, ge=0)                 # sample grid interval (0 = only final)
    sample_count: int = Field(8, ge=1)                   # fixed z in every grid
    sample_truncation: float = Field(0.7, gt=0, le=1)
    sample_seed: int = 0                                 # grid latents: the same for every run and method
    checkpoint_every: int = Field(0, ge=0)               # resumable checkpoint interval (0 = only final)
    device: str = "auto"                                 # auto | cpu | cuda | cuda:N
    threads: int | None = Field(None, ge=1)              # torch intra-op (and numpy/scipy BLAS) threads on CPU


class AdaptConfig(_Strict):
    """One adaptation run."""

    name: str = "adapt"
    method: GuidanceName = "fusion"              # the critic (trainables/registry.py): fusion | nada | module:Class
    prompt: str = Field(..., min_length=1)       # target domain text
    source_prompt: str = "photo"                 # source domain text (NADA's direction; tags)
    seed: int = 42
    generator: GeneratorConfig
    guidance: DiffusionGuidanceConfig = Field(default_factory=DiffusionGuidanceConfig)
    nada: NadaConfig = Field(default_factory=NadaConfig)
    reg: RegularizerConfig = Field(default_factory=RegularizerConfig)
    layers: LayerSelectionConfig = Field(default_factory=LayerSelectionConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output_dir: str = "runs/adapt"

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: Any) -> Any:
        """Fields a config leaves out take the generator family's paper defaults (EG3D_DEFAULTS)."""
        if isinstance(data, dict) and isinstance(data.get("generator"), dict) and data["generator"].get("kind") == "eg3d":
            data = copy.deepcopy(data)
            _fill_defaults(data, EG3D_DEFAULTS)
        return data

    @model_validator(mode="after")
    def _layer_selection_supported(self) -> "AdaptConfig":
        if self.generator.kind == "eg3d" and self.layers.k > 0:
            raise ValueError("layers.k > 0 (layer selection) is defined on StyleGAN2's W+ only; use layers.k=0 for EG3D")
        return self

    @property
    def learning_rate(self) -> float:
        """optim.lr, or the method's own default (its guidance class's `default_lr`: the paper's effective
        rates, Fusion 0.002 / 2 * 0.8 and NADA 0.002 * 0.8). Imports the guidance class (and torch)."""
        if self.optim.lr is not None:
            return self.optim.lr
        return float(GUIDANCE.load(self.method).default_lr)


def flatten(cfg: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a config (MLflow params, sweep tables)."""
    data = cfg.model_dump() if isinstance(cfg, BaseModel) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, prefix=path + "."))
        else:
            out[path] = value
    return out
