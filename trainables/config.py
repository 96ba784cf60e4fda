"""Typed adaptation config: every knob is a field a sweep can address by dotted path.

One `AdaptConfig` describes one adaptation run (one Ray Tune trial). Sweep axes are dotted paths into
this model (`guidance.cfg_scale`, `reg.directional.weight`, `method`, `seed`), so every field here is a
sweep axis. Defaults are the paper's (`../shared/paper.md`); the pocket world overrides them in its
YAML files.
"""
from __future__ import annotations

import copy
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, Field, create_model, model_validator

from trainables.components import ComponentHost, builtin_settings_fields
# the components' own settings, re-exported: they are declared beside their code (guidance/*_settings.py, variants/)
from trainables.guidance.fusion_settings import (DiffusionGuidanceConfig, DirectionalReg, LpipsReg,  # noqa: F401
                                                 Precision, ReconstructionReg, RegularizerConfig)
from trainables.guidance.nada_settings import ClipModelRef, NadaConfig  # noqa: F401
from trainables.guidance.variants.csd import CSD_NEGATIVE, CsdConfig  # noqa: F401
from trainables.guidance.variants.dds import DdsConfig  # noqa: F401
from trainables.guidance.variants.delta import DeltaConfig  # noqa: F401
from trainables.guidance.variants.nfsd import NFSD_NEGATIVE, NfsdConfig  # noqa: F401
from trainables.registry import GENERATOR_KINDS, GUIDANCE, Registry
from trainables.settings import StrictModel as _Strict

GuidanceName = Annotated[str, AfterValidator(GUIDANCE.check)]               # a registered guidance (method)
GeneratorKindName = Annotated[str, AfterValidator(GENERATOR_KINDS.check)]    # a registered generator family


class GeneratorConfig(ComponentHost):
    kind: GeneratorKindName = "stylegan2"             # generator family (trainables/registry.py)
    checkpoint: str = Field(..., min_length=1)        # .pt (rosinality), .pkl (NVlabs/EG3D) or a state dict
    # StyleGAN2 output resolution (config-f channels), for cost estimates on a machine without the checkpoint;
    # None = read from the checkpoint. Checked against the checkpoint when both are there.
    size: int | None = Field(None, ge=4)
    # a generator kind of your own ('package.module:Class') may declare settings: generator.<its settings_key>
    component_field: ClassVar[str] = "kind"
    component_registry: ClassVar[Registry] = GENERATOR_KINDS


def _fill_defaults(data: dict, defaults: dict) -> None:
    for key, value in defaults.items():
        if isinstance(value, dict):
            node = data.setdefault(key, {})
            if isinstance(node, dict):
                _fill_defaults(node, value)
        else:
            data.setdefault(key, value)


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


class _RunFields(ComponentHost):
    name: str = "adapt"
    method: GuidanceName = "fusion"              # the critic (trainables/registry.py): fusion | nada | module:Class
    prompt: str = Field(..., min_length=1)       # target domain text
    source_prompt: str = "photo"                 # source domain text (NADA's direction; tags)
    seed: int = 42
    generator: GeneratorConfig
    # a method of your own ('package.module:Class') may declare settings: <its settings_key>.<field>
    component_field: ClassVar[str] = "method"
    component_registry: ClassVar[Registry] = GUIDANCE


def _method_fields(registry: Registry) -> dict[str, Any]:
    """Each registered method's settings (fusion: guidance, nada: nada) and the sections it also reads (reg)."""
    fields = builtin_settings_fields(registry)
    for decl in registry.declarations().values():
        for key, settings in getattr(decl, "extra_settings", {}).items():
            fields[key] = (settings, Field(default_factory=settings))
    return fields


# guidance, nada, reg: composed from the GUIDANCE registry's declarations
_WithMethodFields = create_model("_WithMethodFields", __base__=_RunFields, __module__=__name__,
                                 **_method_fields(GUIDANCE))


class AdaptConfig(_WithMethodFields):
    """One adaptation run."""

    layers: LayerSelectionConfig = Field(default_factory=LayerSelectionConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output_dir: str = "runs/adapt"

    @model_validator(mode="before")
    @classmethod
    def _family_defaults(cls, data: Any) -> Any:
        """Fields a config leaves out take the generator family's paper defaults (its kind's `config_defaults`,
        e.g. EG3D's)."""
        if isinstance(data, dict) and isinstance(data.get("generator"), dict):
            defaults = _kind_fact(data["generator"].get("kind", "stylegan2"), "config_defaults", {})
            if defaults:
                data = copy.deepcopy(data)
                _fill_defaults(data, defaults)
        return data

    @model_validator(mode="after")
    def _layer_selection_supported(self) -> "AdaptConfig":
        if self.layers.k > 0 and not _kind_fact(self.generator.kind, "layer_selection", False):
            raise ValueError(f"layers.k > 0 (layer selection) is defined on a W+ latent space, which generator kind "
                             f"{self.generator.kind!r} does not offer; use layers.k=0")
        return self

    @property
    def learning_rate(self) -> float:
        """optim.lr, or the method's own default (its guidance class's `default_lr`: the paper's effective
        rates, Fusion 0.002 / 2 * 0.8 and NADA 0.002 * 0.8). Imports the guidance class (and torch)."""
        if self.optim.lr is not None:
            return self.optim.lr
        return float(GUIDANCE.load(self.method).default_lr)


def _kind_fact(kind: Any, fact: str, default: Any) -> Any:
    """A fact a generator kind declares about itself (trainables/registry.py GENERATOR_KINDS); `default` for a
    name that is not a kind (the kind field's own validator reports it)."""
    try:
        return getattr(GENERATOR_KINDS.declaration(kind), fact, default)
    except Exception:  # noqa: BLE001 - an unknown or unimportable kind is reported by generator.kind's validator
        return default


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
