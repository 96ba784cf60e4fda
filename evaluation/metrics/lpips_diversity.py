"""LPIPS diversity, the paper's protocol: mean pairwise LPIPS inside 12 groups of 16 of 200 samples
(`eval/lpips_diversity`, and `eval/lpips_diversity_std` over groups). Settings at `diversity.lpips.*`. The
math is `evaluation/diversity.py`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from trainables.settings import StrictModel

from .base import Metric, MetricKey

if TYPE_CHECKING:  # type names only
    from evaluation.context import EvalContext


class LpipsDiversityConfig(StrictModel):
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


class LpipsDiversity(Metric):
    name = "lpips_diversity"
    Settings = LpipsDiversityConfig
    address = ("diversity", "lpips")
    keys = (
        MetricKey("eval/lpips_diversity", "LPIPS div. ↑", "max", ".4f", paper=3),
        MetricKey("eval/lpips_diversity_std", "LPIPS div. std over groups", None, column=False, required=False,
                  headline=False),
    )

    def params(self, settings: LpipsDiversityConfig, cfg: Any) -> dict[str, Any]:
        p: dict[str, Any] = {"eval.lpips.net": settings.net,
                             "eval.lpips.protocol": f"{settings.num_images}img/{settings.groups}x{settings.group_size}"}
        if settings.resize is not None:
            p["eval.lpips.resize"] = settings.resize
        return p

    def problems(self, settings: LpipsDiversityConfig, cfg: Any, prompts: list[str] | None) -> list[str]:
        from evaluation.diversity import check_lpips_backbone  # late: imports torch (torch.hub's cache dir)

        try:
            check_lpips_backbone(settings.net, settings.backbone_path)
        except Exception as exc:  # noqa: BLE001 - listed with its field
            return [f"diversity.lpips: {exc}"]
        return []

    def compute(self, ctx: "EvalContext", settings: LpipsDiversityConfig) -> dict[str, float]:
        from evaluation.diversity import lpips_diversity_folder  # late: torch + lpips; validation reads settings only

        mean, std = lpips_diversity_folder(ctx.samples_dir, ctx.cfg)
        return {"eval/lpips_diversity": mean, "eval/lpips_diversity_std": std}
