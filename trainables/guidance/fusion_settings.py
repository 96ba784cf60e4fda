"""StyleGAN-Fusion's settings: the score-distillation critic (`guidance`) and its regularizers (`reg`). Torch-free.

Read by `trainables/guidance/fusion.py` (FusionGuidance) and the cost model. The score variants' own settings
(`guidance.nfsd`, `guidance.csd`, ...) are declared by the variants themselves (trainables/guidance/variants/)
and composed here from the registry, so a new variant adds its fields without an edit of this file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, create_model, field_validator, model_validator

from trainables.frozen.lora_check import sha256_file
from trainables.components import ComponentHost, builtin_settings_fields
from trainables.guidance.sdxl_settings import SdxlConditioning
from trainables.registry import SCORE_VARIANTS, Registry
from trainables.settings import StrictModel

Precision = Literal["fp32", "bf16", "fp16"]
VariantName = Annotated[str, AfterValidator(SCORE_VARIANTS.check)]          # a registered score variant


class LoraSpec(StrictModel):
    """One LoRA adapter on the critic (trainables/frozen/lora.py): a file diffusers' save_lora_weights wrote."""

    path: str                                                 # .safetensors (UNet and/or text encoder layers)
    scale: float = Field(1.0, allow_inf_nan=False)            # W + scale * (alpha / r) B A (diffusers' set_adapters)
    # the networks whose layers of the file are applied (set_adapters' per-component weights; the others get 0)
    components: list[Literal["unet", "text_encoder"]] = Field(default_factory=lambda: ["unet", "text_encoder"],
                                                              min_length=1)

    @field_validator("path")
    @classmethod
    def _safetensors(cls, v: str) -> str:
        if not v.endswith(".safetensors"):
            raise ValueError(f"{v!r} is not a .safetensors file: LoRA adapters are read with safetensors only "
                             f"(save them with diffusers' save_lora_weights, safe_serialization=True)")
        return v


class _DiffusionGuidanceFields(ComponentHost):
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
    # LoRA adapters fused into the critic's UNet / text encoder at load (diffusers' load_lora_weights), in order;
    # each file is checked against guidance.model before any weight loads (trainables/frozen/lora_check.py)
    lora: list[LoraSpec] = Field(default_factory=list)
    engine: Literal["reference", "fast"] = "fast"             # same quantities; see docs/engine.md
    compile: bool = False                                     # torch.compile the UNet (fast engine; GPU runs)
    sdxl: SdxlConditioning = Field(default_factory=SdxlConditioning)  # SDXL critics' add_time_ids (sdxl_settings.py)
    # the score-distillation direction (trainables/registry.py SCORE_VARIANTS): paper SDS or a later variant;
    # each variant's own settings are a field guidance.<its settings_key> (added below from the registry), the
    # regularizers combine with every one
    variant: VariantName = "sds"
    component_field: ClassVar[str] = "variant"
    component_registry: ClassVar[Registry] = SCORE_VARIANTS

    @model_validator(mode="after")
    def _t_range(self) -> "DiffusionGuidanceConfig":
        if self.t_min > self.t_max:
            raise ValueError(f"t_min ({self.t_min}) must be <= t_max ({self.t_max})")
        return self

    @model_validator(mode="after")
    def _rescale_is_defined(self) -> "_DiffusionGuidanceFields":
        # rescale_noise normalises SDS's two terms (eps_hat and eps) before differencing; a variant without such a
        # pair (NFSD and CSD drop eps) does not define it (its `allows_rescale_noise`): refused, not ignored
        if self.rescale_noise and not getattr(SCORE_VARIANTS.declaration(self.variant), "allows_rescale_noise", False):
            raise ValueError(f"guidance.rescale_noise is defined for guidance.variant 'sds' only (it rescales "
                             f"eps_hat and eps before differencing); set guidance.rescale_noise: false to use "
                             f"variant {self.variant!r} (EG3D configs turn it on by default)")
        return self


class DirectionalReg(StrictModel):
    weight: float = Field(0.0, ge=0)    # 0 = off
    rescale: bool = False               # rescale both predictions before differencing


class ReconstructionReg(StrictModel):
    weight: float = Field(0.0, ge=0)


class LpipsReg(StrictModel):
    weight: float = Field(0.0, ge=0)
    scale: float = 2000.0               # the paper's code multiplies LPIPS by 2000 * weight
    net: Literal["vgg", "alex", "squeeze"] = "vgg"


class RegularizerConfig(StrictModel):
    directional: DirectionalReg = Field(default_factory=DirectionalReg)
    reconstruction: ReconstructionReg = Field(default_factory=ReconstructionReg)
    lpips: LpipsReg = Field(default_factory=LpipsReg)


# the guidance settings with one field per registered variant's settings (guidance.nfsd, guidance.csd, ...)
DiffusionGuidanceConfig = create_model(
    "DiffusionGuidanceConfig", __base__=_DiffusionGuidanceFields, __module__=__name__,
    __doc__="StyleGAN-Fusion's critic: score distillation from a Stable-Diffusion-layout model.",
    **builtin_settings_fields(SCORE_VARIANTS))


class Fusion:
    """The declaration of method 'fusion' (trainables/registry.py): its settings and where they live."""

    name = "fusion"
    label = "Fusion"             # how the comparison table names it
    settings_key = "guidance"
    Settings = DiffusionGuidanceConfig
    extra_settings = {"reg": RegularizerConfig}    # further top-level config sections it reads

    @staticmethod
    def critic_side(cfg) -> int:
        """The side its critic sees images at (trainables/resources.py bounds batches by it)."""
        return cfg.guidance.image_size

    @staticmethod
    def model_refs(cfg) -> list[tuple[str, str, object]]:
        """(config field, reference type, reference) of every frozen model a run needs (trainables/preflight.py)."""
        refs: list[tuple[str, str, object]] = [("guidance.model", "diffusers", cfg.guidance.model)]
        if cfg.guidance.text_encoder:
            refs.append(("guidance.text_encoder", "text_encoder", cfg.guidance.text_encoder))
        for i, spec in enumerate(cfg.guidance.lora):
            refs.append((f"guidance.lora[{i}]", "lora", (spec.path, cfg.guidance.model, cfg.guidance.text_encoder)))
        if cfg.reg.lpips.weight > 0:
            refs.append(("reg.lpips", "lpips", cfg.reg.lpips.net))
        return refs

    @staticmethod
    def models_label(cfg) -> str:
        """Its frozen models in one line (the trial's `guidance_model` tag)."""
        loras = "".join(f" + lora {Path(s.path).name} x{s.scale:g}"
                        + ("" if len(s.components) == 2 else f" ({', '.join(s.components)})") for s in cfg.guidance.lora)
        return cfg.guidance.model + loras

    @staticmethod
    def run_params(cfg) -> dict[str, str]:
        """Run parameters beyond the config's own fields: each LoRA file's sha256 (what the run's critic was)."""
        return {f"guidance.lora.{i}.sha256": sha256_file(s.path) for i, s in enumerate(cfg.guidance.lora)
                if Path(s.path).is_file()}
