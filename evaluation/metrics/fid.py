"""FID and KID (clean-fid) of the samples against `fid.reference`: `eval/fid`, `eval/kid`.

Settings at `fid.*` (`FidConfig`); the feature extractor settings (`fid.feature_extractor`, `fid.mode`,
`fid.custom_resize`, `fid.inception_path`) are shared with feature diversity, which reads the same features
(computed once per evaluation: `EvalContext.fid_features`). The math is `evaluation/fid.py`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from trainables.settings import StrictModel

from ..defaults import CLEANFID_INCEPTION
from .base import Metric, MetricKey, check_import_path, import_problem

if TYPE_CHECKING:  # type names only
    from evaluation.context import EvalContext


class FidConfig(StrictModel):
    enabled: bool = True
    # clean-fid resize/feature mode; legacy_pytorch = StudioGAN's defaults the authors' AFHQ FIDs used
    # (`legacy` torch-bilinear resizer + InceptionV3_tf: docs/fidelity.md, "Evaluation")
    mode: Literal["clean", "legacy_tensorflow", "legacy_pytorch"] = "clean"
    reference: str | None = None          # folder (or .zip) of real target images, or a precomputed .npz (mu, sigma[, feats])
    feature_extractor: str = "inception"  # "inception" or "module:function" -> clean-fid custom extractor
    custom_resize: Literal["native", "mode"] = "native"  # custom extractor input: native size, or the mode's resize (299)
    inception_path: str = CLEANFID_INCEPTION   # pre-staged inception-2015-12-05.pt (linked to clean-fid's /tmp path)
    pt_inception_path: str | None = None  # legacy_pytorch: pre-staged pt_inception-2015-12-05-6726825d.pth (None = torch hub cache)
    cache_dir: str | None = None          # reference statistics cache; None = <EvalConfig.cache_dir>/fid_stats
    kid: bool = True                      # KID from the same features (needs reference features, not only stats)
    kid_subsets: int = Field(100, ge=1)   # clean-fid kernel_distance num_subsets
    kid_subset_size: int = Field(1000, ge=2)  # clean-fid kernel_distance max_subset_size
    kid_seed: int = 0                     # numpy seed for KID's subset draws (reproducible numbers)

    @field_validator("feature_extractor")
    @classmethod
    def _extractor(cls, value: str) -> str:
        return value if value == "inception" else check_import_path(value)


def feature_params(fid: FidConfig) -> dict[str, Any]:
    """The feature extractor's `eval.fid.*` params (FID and feature diversity both depend on them)."""
    p: dict[str, Any] = {"eval.fid.feature_extractor": fid.feature_extractor, "eval.fid.mode": fid.mode}
    if fid.feature_extractor != "inception":
        p["eval.fid.custom_resize"] = fid.custom_resize
    return p


def feature_problems(fid: FidConfig, prompts: list[str] | None) -> list[str]:
    """The feature extractor is here: clean-fid's Inception file, or a custom extractor that imports (and
    accepts the prompts)."""
    if fid.feature_extractor != "inception":
        p = import_problem("fid.feature_extractor", fid.feature_extractor, prompts, "extractor")
        return [p] if p else []
    from evaluation.fid import check_inception, check_pt_inception  # late: the FID math imports torch

    try:
        if fid.mode == "legacy_pytorch":
            check_pt_inception(fid.pt_inception_path)
        else:
            check_inception(fid.inception_path)
    except Exception as exc:  # noqa: BLE001 - listed with its field
        return [f"fid.inception_path: {exc}"]
    return []


class FidMetric(Metric):
    name = "fid"
    Settings = FidConfig
    address = ("fid",)
    keys = (
        MetricKey("eval/fid", "FID ↓", "min", ".2f", paper=1),
        MetricKey("eval/kid", "KID ↓", "min", ".4f", headline=False),
    )

    def required_keys(self, settings: FidConfig) -> list[str]:
        return ["eval/fid"] + (["eval/kid"] if settings.kid else [])

    def params(self, settings: FidConfig, cfg: Any) -> dict[str, Any]:
        return {**feature_params(settings), "eval.fid.reference": settings.reference, "eval.fid.kid": settings.kid}

    def problems(self, settings: FidConfig, cfg: Any, prompts: list[str] | None) -> list[str]:
        out = []
        if not settings.reference:
            out.append("fid.reference: not set; FID needs a folder / .zip of real target images or an .npz of "
                       "statistics (python -m evaluation reference), or set fid.enabled: false")
        elif not Path(settings.reference).expanduser().exists():
            out.append(f"fid.reference: not found: {Path(settings.reference).expanduser()}; put the reference "
                       "images (or .npz) there or fix the path")
        return out + feature_problems(settings, prompts)

    def compute(self, ctx: "EvalContext", settings: FidConfig) -> dict[str, float]:
        from evaluation.fid import compute_fid  # late: torch + clean-fid; validation reads settings only

        model, array = ctx.fid_features()
        res = compute_fid(ctx.samples_dir, ctx.cfg, feature_model=model, feats=array)
        return {k: v for k, v in (("eval/fid", res.fid), ("eval/kid", res.kid)) if v is not None}
