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
from pydantic import Field, field_validator, model_validator

from trainables.config_io import apply_overrides
from trainables.settings import StrictModel as _Strict

CLEANFID_INCEPTION = "/tmp/inception-2015-12-05.pt"   # where clean-fid loads (and would download) Inception
DEFAULT_CACHE_DIR = "~/.cache/sgf-evaluation"          # latents, reference statistics


def _check_import_path(value: str) -> str:
    module, sep, attr = value.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected an import path 'module:function', got {value!r}")
    return value


class LatentsConfig(_Strict):
    """The fixed, recorded set of z shared by every method and seed of a comparison."""

    path: str | None = None     # .pt file; created from `seed` when missing; None = cache_dir/latents_seed{seed}_n{N}_d{D}.pt
    seed: int = 0               # torch.Generator("cpu") seed used to create the file (z ~ N(0, I))


class FidConfig(_Strict):
    enabled: bool = True
    mode: Literal["clean", "legacy_tensorflow"] = "clean"   # clean-fid resize/feature mode
    reference: str | None = None          # folder (or .zip) of real target images, or a precomputed .npz (mu, sigma[, feats])
    feature_extractor: str = "inception"  # "inception" or "module:function" -> clean-fid custom extractor
    custom_resize: Literal["native", "mode"] = "native"  # custom extractor input: native size, or the mode's resize (299)
    inception_path: str = CLEANFID_INCEPTION   # pre-staged inception-2015-12-05.pt (linked to clean-fid's /tmp path)
    cache_dir: str | None = None          # reference statistics cache; None = <EvalConfig.cache_dir>/fid_stats
    kid: bool = True                      # KID from the same features (needs reference features, not only stats)
    kid_subsets: int = Field(100, ge=1)   # clean-fid kernel_distance num_subsets
    kid_subset_size: int = Field(1000, ge=2)  # clean-fid kernel_distance max_subset_size
    kid_seed: int = 0                     # numpy seed for KID's subset draws (reproducible numbers)

    @field_validator("feature_extractor")
    @classmethod
    def _extractor(cls, value: str) -> str:
        return value if value == "inception" else _check_import_path(value)


class ClipModelSpec(_Strict):
    name: str = "ViT-B-32"      # open_clip model name (or a registered custom config)
    pretrained: str = "openai"  # open_clip tag or a local state-dict path
    # None = the activation the weights were trained with (open_clip's pretrained cfg: QuickGELU for
    # 'openai'); true/false forces QuickGELU / nn.GELU (an error when it contradicts a known tag)
    quick_gelu: bool | None = None


class ClipScoreConfig(_Strict):
    """CLIPScore 100 x max(cos(image, prompt), 0) with open_clip (and the raw mean 100 x cos); the prompt
    comes from the run."""

    enabled: bool = True
    models: list[ClipModelSpec] = Field(default_factory=lambda: [ClipModelSpec()], min_length=1)
    num_images: int | None = Field(None, ge=1)   # None = every sample
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"


class LpipsDiversityConfig(_Strict):
    """The paper's protocol: mean pairwise LPIPS inside 12 groups of 16 of 200 images (higher = more diverse)."""

    enabled: bool = True
    net: Literal["alex", "vgg", "squeeze"] = "alex"
    num_images: int = Field(200, ge=2)   # images drawn (the first ones of the fixed latents)
    groups: int = Field(12, ge=1)        # disjoint consecutive groups ...
    group_size: int = Field(16, ge=2)    # ... of this size: groups * group_size <= num_images (8 of 200 unused)
    backbone_path: str | None = None     # torchvision backbone state dict; None = torch hub cache (see docs)
    resize: int | None = None            # resize images to this size before LPIPS; None = evaluation size

    @model_validator(mode="after")
    def _fits(self) -> "LpipsDiversityConfig":
        if self.groups * self.group_size > self.num_images:
            raise ValueError(
                f"groups * group_size ({self.groups} * {self.group_size}) exceeds num_images ({self.num_images})"
            )
        return self


class FeatureDiversityConfig(_Strict):
    """Mean pairwise cosine distance 1 - cos(f_i, f_j) over all pairs i < j of the FID features."""

    enabled: bool = True
    num_images: int | None = Field(None, ge=2)   # None = every sample


class DiversityConfig(_Strict):
    lpips: LpipsDiversityConfig = Field(default_factory=LpipsDiversityConfig)
    feature: FeatureDiversityConfig = Field(default_factory=FeatureDiversityConfig)


class EvalConfig(_Strict):
    """How a run is evaluated. Defaults are the paper's protocol (`shared/paper.md`, "Evaluation protocol")."""

    num_samples: int = Field(2000, ge=2)
    truncation: float = Field(0.7, gt=0, le=1)     # around the generator's latent_avg
    batch_size: int = Field(16, ge=1)              # sampling and feature batches
    latents: LatentsConfig = Field(default_factory=LatentsConfig)
    image_size: int | None = Field(512, ge=8)      # saved PNG size; None = the generator's native size (pocket)
    fid: FidConfig = Field(default_factory=FidConfig)
    clip: ClipScoreConfig = Field(default_factory=ClipScoreConfig)
    diversity: DiversityConfig = Field(default_factory=DiversityConfig)
    extra_metrics: list[str] = Field(default_factory=list)   # "module:function" plugins (pocket metrics)
    device: str = "auto"                           # auto | cpu | cuda | cuda:N
    cache_dir: str = DEFAULT_CACHE_DIR             # latents and reference statistics
    output_dir: str | None = None                  # samples; None = <generator dir>/eval (or a temp dir)
    figure_columns: int = Field(8, ge=1)           # latents shown per method in the comparison figure
    progress: bool = True                          # tqdm bars

    @field_validator("extra_metrics")
    @classmethod
    def _plugins(cls, value: list[str]) -> list[str]:
        return [_check_import_path(v) for v in value]

    # ---- derived views -------------------------------------------------------------------------------
    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser()

    def fid_cache_dir(self) -> Path:
        return Path(self.fid.cache_dir).expanduser() if self.fid.cache_dir else self.resolved_cache_dir() / "fid_stats"

    def as_params(self) -> dict[str, str]:
        """Flat `eval.*` MLflow params: the settings every logged number depends on."""
        p: dict[str, Any] = {
            "eval.num_samples": self.num_samples,
            "eval.truncation": self.truncation,
            "eval.noise_mode": "const",
            "eval.image_size": self.image_size if self.image_size is not None else "native",
            "eval.latents.seed": self.latents.seed,
        }
        if self.fid.enabled or self.diversity.feature.enabled:
            p["eval.fid.feature_extractor"] = self.fid.feature_extractor
            p["eval.fid.mode"] = self.fid.mode
            if self.fid.feature_extractor != "inception":
                p["eval.fid.custom_resize"] = self.fid.custom_resize
        if self.fid.enabled:
            p["eval.fid.reference"] = self.fid.reference
            p["eval.fid.kid"] = self.fid.kid
        if self.clip.enabled:
            first = self.clip.models[0]
            p["eval.clip.model"] = first.name
            p["eval.clip.pretrained"] = first.pretrained
            p["eval.clip.quick_gelu"] = "auto" if first.quick_gelu is None else first.quick_gelu
            p["eval.clip.score"] = "100*max(cos,0)"          # eval/clip_score; eval/clip_score_raw = 100*cos
            p["eval.clip.preprocess"] = "open_clip_eval"     # the model's eval transform on the saved PNGs
            if len(self.clip.models) > 1:
                p["eval.clip.models"] = ",".join(
                    f"{m.name}/{m.pretrained}" + ("" if m.quick_gelu is None else f"/quick_gelu={m.quick_gelu}")
                    for m in self.clip.models)
            if self.clip.num_images is not None:
                p["eval.clip.num_images"] = self.clip.num_images
        lp = self.diversity.lpips
        if lp.enabled:
            p["eval.lpips.net"] = lp.net
            p["eval.lpips.protocol"] = f"{lp.num_images}img/{lp.groups}x{lp.group_size}"
            if lp.resize is not None:
                p["eval.lpips.resize"] = lp.resize
        if self.diversity.feature.enabled:
            p["eval.feature_diversity"] = "mean_pairwise_cosine_distance"
            if self.diversity.feature.num_images is not None:
                p["eval.feature_diversity.num_images"] = self.diversity.feature.num_images
        if self.extra_metrics:
            p["eval.extra_metrics"] = ",".join(self.extra_metrics)
        return {k: str(v) for k, v in p.items()}

    def fingerprint(self) -> str:
        """Short hash of the settings that change numbers (not device, paths of caches, progress bars)."""
        return hashlib.sha256(json.dumps(self.as_params(), sort_keys=True).encode()).hexdigest()[:16]


def load_eval_config(path: str | Path | None = None, overrides: list[str] | None = None) -> EvalConfig:
    """Read an EvalConfig from YAML (optionally under a top-level `eval:` key) and apply `a.b=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if set(data) == {"eval"}:
            data = data["eval"] or {}
    data = apply_overrides(data, overrides)
    return EvalConfig.model_validate(data)
