"""Feature diversity: mean pairwise cosine distance 1 - cos(f_i, f_j) over all pairs i < j of the samples'
FID features (`eval/feature_diversity`; no weights beyond the FID feature extractor, whose `fid.*` settings it
shares). Settings at `diversity.feature.*`. The math is `evaluation.fid.feature_diversity`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from trainables.settings import StrictModel

from .base import Metric, MetricKey
from .fid import feature_params, feature_problems

if TYPE_CHECKING:  # type names only
    from evaluation.context import EvalContext


class FeatureDiversityConfig(StrictModel):
    """Mean pairwise cosine distance 1 - cos(f_i, f_j) over all pairs i < j of the FID features."""

    enabled: bool = True
    num_images: int | None = Field(None, ge=2)   # None = every sample


class FeatureDiversity(Metric):
    name = "feature_diversity"
    Settings = FeatureDiversityConfig
    address = ("diversity", "feature")
    keys = (MetricKey("eval/feature_diversity", "Feature div. ↑", "max", ".4f", paper=4),)

    def params(self, settings: FeatureDiversityConfig, cfg: Any) -> dict[str, Any]:
        p = {**feature_params(cfg.fid), "eval.feature_diversity": "mean_pairwise_cosine_distance"}
        if settings.num_images is not None:
            p["eval.feature_diversity.num_images"] = settings.num_images
        return p

    def problems(self, settings: FeatureDiversityConfig, cfg: Any, prompts: list[str] | None) -> list[str]:
        return feature_problems(cfg.fid, prompts)

    def compute(self, ctx: "EvalContext", settings: FeatureDiversityConfig) -> dict[str, float]:
        from evaluation.fid import feature_diversity  # late: torch + clean-fid; validation reads settings only

        return {"eval/feature_diversity": feature_diversity(ctx.fid_features()[1], settings.num_images)}
