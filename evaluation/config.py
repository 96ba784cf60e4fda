"""Typed evaluation config: every knob of the evaluation stage is a field.

One `EvalConfig` describes how every run of a comparison is evaluated (the paper's protocol by default:
2000 samples, truncation 0.7, constant noise, 512 px, FID / CLIP score / LPIPS diversity). The settings
are logged with every number as flat `eval.*` MLflow params (`EvalConfig.as_params()`), so a table can
check that the runs it compares were measured the same way.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_serializer, model_validator

from trainables.config_io import apply_overrides
from trainables.settings import StrictModel as _Strict

from .defaults import CLEANFID_INCEPTION, DEFAULT_CACHE_DIR  # noqa: F401  (re-exported)
from .metrics.base import Metric, check_import_path
from .metrics.clip_score import ClipModelSpec, ClipScoreConfig  # noqa: F401  (re-exported)
from .metrics.feature_diversity import FeatureDiversityConfig
from .metrics.fid import FidConfig
from .metrics.lpips_diversity import LpipsDiversityConfig
from .metrics.preservation import PreservationConfig, resolve_parts
from .metrics.registry import METRICS, builtin_metrics, load_metric


class LatentsConfig(_Strict):
    """The fixed, recorded set of z shared by every method and seed of a comparison."""

    path: str | None = None     # .pt file; created from `seed` when missing; None = cache_dir/latents_seed{seed}_n{N}_d{D}.pt
    seed: int = 0               # torch.Generator("cpu") seed used to create the file (z ~ N(0, I))


class DiversityConfig(_Strict):
    lpips: LpipsDiversityConfig = Field(default_factory=LpipsDiversityConfig)
    feature: FeatureDiversityConfig = Field(default_factory=FeatureDiversityConfig)


class EvalConfig(_Strict):
    """How a run is evaluated. Defaults are the paper's protocol (`shared/paper.md`, "Evaluation protocol").

    The metrics are objects (`evaluation.metrics`): the built-ins' settings sit at their historical addresses
    (`fid`, `clip`, `diversity.lpips`, `diversity.feature`); a plugin listed in `extra_metrics`
    ('package.module:Class') has its settings under its name (`<name>:` in this block), validated here by its
    own settings class, so a bad value is an error at `<name>.<field>`."""

    num_samples: int = Field(2000, ge=2)
    truncation: float = Field(0.7, gt=0, le=1)     # around the generator's latent_avg
    batch_size: int = Field(16, ge=1)              # sampling and feature batches
    latents: LatentsConfig = Field(default_factory=LatentsConfig)
    image_size: int | None = Field(512, ge=8)      # saved PNG size; None = the generator's native size (pocket)
    # the authors' images for metrics (docs/fidelity.md, "Evaluation images"): bilinear without antialias
    # (ZSSGAN.py:128), quantized as torchvision's save_image (utils/file_utils.py:27-34)
    image_resize: Literal["bilinear", "bilinear_antialias"] = "bilinear"
    image_quantize: Literal["save_image", "round"] = "save_image"
    # truncation centre: a fresh mean of `truncation_center_samples` mapped z (the authors' mean_latent(4096),
    # ZSSGAN.py:45,127; seeded here) or the checkpoint's stored average ("checkpoint")
    truncation_center: Literal["mean_latent", "checkpoint"] = "mean_latent"
    truncation_center_samples: int = Field(4096, ge=1)
    truncation_center_seed: int = 0
    fid: FidConfig = Field(default_factory=FidConfig)
    clip: ClipScoreConfig = Field(default_factory=ClipScoreConfig)
    diversity: DiversityConfig = Field(default_factory=DiversityConfig)
    preservation: PreservationConfig = Field(default_factory=PreservationConfig)   # source vs adapted, same z
    extra_metrics: list[str] = Field(default_factory=list)   # plugins: "package.module:Class" (or a plain function)
    device: str = "auto"                           # auto | cpu | cuda | cuda:N
    cache_dir: str = DEFAULT_CACHE_DIR             # latents and reference statistics
    output_dir: str | None = None                  # samples; None = <generator dir>/eval (or a temp dir)
    figure_columns: int = Field(8, ge=1)           # latents shown per method in the comparison figure
    progress: bool = True                          # tqdm bars

    _plugin_settings: dict[str, _Strict] = PrivateAttr(default_factory=dict)   # plugin path -> its settings
    _plugin_names: dict[str, str] = PrivateAttr(default_factory=dict)          # plugin path -> its block's key

    @field_validator("extra_metrics")
    @classmethod
    def _plugins(cls, value: list[str]) -> list[str]:
        return [check_import_path(v) for v in value]

    @model_validator(mode="wrap")
    @classmethod
    def _plugin_blocks(cls, data: Any, handler) -> "EvalConfig":
        """Top-level keys that name a listed plugin are its settings (validated by its class, errors at
        `<name>.<field>`); every other unknown key stays an error. A plugin is imported only when the block
        holds such a key (validation of the usual file imports no plugin, so no torch)."""
        if not isinstance(data, dict):
            return handler(data)
        unknown = [k for k in data if k not in cls.model_fields]
        plugins = data.get("extra_metrics") if isinstance(data.get("extra_metrics"), list) else []
        blocks: dict[str, _Strict] = {}
        errors: list[dict[str, Any]] = []
        by_name: dict[str, tuple[str, Metric]] = {}
        if unknown and plugins:
            for path in plugins:
                try:
                    metric = load_metric(str(path))
                except Exception:  # noqa: BLE001 - an unimportable plugin is preflight's problem (with its fix)
                    continue
                by_name.setdefault(metric.name, (str(path), metric))
            data = dict(data)
            for key in unknown:
                if key in by_name:
                    path, metric = by_name[key]
                    raw = data.pop(key)
                    try:
                        blocks[path] = metric.Settings.model_validate({} if raw is None else raw)
                    except ValidationError as exc:
                        errors += [_line_error(e, (key,)) for e in exc.errors()]
        try:
            model = handler(data)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(
                cls.__name__, [_line_error(e) for e in exc.errors()] + errors) from None
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        model._plugin_settings = blocks
        model._plugin_names = {path: name for name, (path, _) in by_name.items() if path in blocks} if blocks else {}
        return model

    @model_validator(mode="after")
    def _preservation_parts(self) -> "EvalConfig":
        """Preservation parts left to follow their sibling metric (None) are decided here, once."""
        resolved = resolve_parts(self.preservation, self)
        for part, value in resolved.model_dump().items():   # in place: assigning the field would re-validate
            if getattr(self.preservation, part) != value:
                setattr(self.preservation, part, value)
        return self

    @model_serializer(mode="wrap")
    def _dump_plugin_blocks(self, handler) -> dict[str, Any]:
        """A dump holds each plugin's settings under its name, so it validates back to the same config."""
        data = handler(self)
        for path, settings in self._plugin_settings.items():
            data[self._plugin_names[path]] = settings.model_dump()
        return data

    # ---- metrics -------------------------------------------------------------------------------------
    def metric_units(self) -> list[str]:
        """The metrics this config computes, in computing order: enabled built-ins by name, then every plugin
        by its path (not imported here: an unimportable plugin is a failed unit, not a config error)."""
        units = [m.name for m in builtin_metrics() if m.enabled(self.settings_of(m))]
        for path in self.extra_metrics:
            settings = self._plugin_settings.get(path)
            if settings is None or bool(getattr(settings, "enabled", True)):
                units.append(path)
        return units

    def metric(self, unit: str) -> tuple[Metric, _Strict]:
        """(the metric, its settings) of a unit of `metric_units` (a plugin is imported: may raise)."""
        if unit in METRICS.names():
            metric = METRICS.load(unit)()
            return metric, self.settings_of(metric)
        metric = load_metric(unit)
        return metric, self._plugin_settings.get(unit) or metric.Settings()

    def settings_of(self, metric: Metric) -> _Strict:
        """A built-in's settings at its address (`fid`, `diversity.lpips`, ...)."""
        node: Any = self
        for part in metric.settings_address():
            node = getattr(node, part)
        return node

    # ---- derived views -------------------------------------------------------------------------------
    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser()

    def fid_cache_dir(self) -> Path:
        return Path(self.fid.cache_dir).expanduser() if self.fid.cache_dir else self.resolved_cache_dir() / "fid_stats"

    def as_params(self) -> dict[str, str]:
        """Flat `eval.*` MLflow params: the settings every logged number depends on (the protocol's, then
        each enabled metric's own: `Metric.params`)."""
        p: dict[str, Any] = {
            "eval.num_samples": self.num_samples,
            "eval.truncation": self.truncation,
            "eval.noise_mode": "const",
            "eval.image_size": self.image_size if self.image_size is not None else "native",
            "eval.latents.seed": self.latents.seed,
            "eval.image_resize": self.image_resize,
            "eval.image_quantize": self.image_quantize,
            "eval.truncation_center": (
                "none" if self.truncation == 1 else self.truncation_center if self.truncation_center == "checkpoint"
                else f"mean_latent:{self.truncation_center_samples}:seed{self.truncation_center_seed}"),
        }
        for metric in builtin_metrics():
            settings = self.settings_of(metric)
            if metric.enabled(settings):
                p.update(metric.params(settings, self))
        for path, settings in self._plugin_settings.items():   # a plugin's own settings (none: no params)
            if path in self.extra_metrics and bool(getattr(settings, "enabled", True)):
                p.update(load_metric(path).params(settings, self))
        if self.extra_metrics:
            p["eval.extra_metrics"] = ",".join(self.extra_metrics)
        return {k: str(v) for k, v in p.items()}

    def fingerprint(self) -> str:
        """Short hash of the settings that change numbers (not device, paths of caches, progress bars)."""
        return hashlib.sha256(json.dumps(self.as_params(), sort_keys=True).encode()).hexdigest()[:16]


def _line_error(err: dict[str, Any], prefix: tuple = ()) -> dict[str, Any]:
    """A pydantic error dict as init data for `ValidationError.from_exception_data` (its loc under `prefix`)."""
    out = {"type": err["type"], "loc": (*prefix, *err["loc"]), "input": err.get("input")}
    if err.get("ctx"):
        out["ctx"] = err["ctx"]
    return out


def load_eval_config(path: str | Path | None = None, overrides: list[str] | None = None) -> EvalConfig:
    """Read an EvalConfig from YAML (optionally under a top-level `eval:` key) and apply `a.b=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if set(data) == {"eval"}:
            data = data["eval"] or {}
    data = apply_overrides(data, overrides)
    return EvalConfig.model_validate(data)
