"""CLIP score (open_clip) of the samples against the run's prompt: `eval/clip_score` = mean 100 max(cos, 0)
(CLIPScore convention) and `eval/clip_score_raw` = mean 100 cos of the first model; every model also as
`eval/clip_score/<model>-<tag>` and `eval/clip_score_raw/<model>-<tag>`. Settings at `clip.*`. The math is
`evaluation/clip_score.py`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from trainables.settings import StrictModel

from .base import Metric, MetricKey

if TYPE_CHECKING:  # type names only
    from evaluation.context import EvalContext


class ClipModelSpec(StrictModel):
    name: str = "ViT-B-32"      # open_clip model name (or a registered custom config)
    pretrained: str = "openai"  # open_clip tag or a local state-dict path
    # None = the activation the weights were trained with (open_clip's pretrained cfg: QuickGELU for
    # 'openai'); true/false forces QuickGELU / nn.GELU (an error when it contradicts a known tag)
    quick_gelu: bool | None = None


class ClipScoreConfig(StrictModel):
    """CLIPScore 100 x max(cos(image, prompt), 0) with open_clip (and the raw mean 100 x cos); the prompt
    comes from the run."""

    enabled: bool = True
    models: list[ClipModelSpec] = Field(default_factory=lambda: [ClipModelSpec()], min_length=1)
    num_images: int | None = Field(None, ge=1)   # None = every sample
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"


class ClipScore(Metric):
    name = "clip_score"
    Settings = ClipScoreConfig
    address = ("clip",)
    keys = (
        MetricKey("eval/clip_score", "CLIP score ↑", "max", ".2f", paper=2),   # 100 max(cos, 0) (CLIPScore)
        MetricKey("eval/clip_score_raw", "raw 100 cos ↑", "max", ".2f", required=False, headline=False),
        MetricKey("eval/clip_score/", "CLIP score (per model)", "max", column=False, required=False,
                  headline=False, prefix=True),
        MetricKey("eval/clip_score_raw/", "raw 100 cos (per model)", "max", column=False, required=False,
                  headline=False, prefix=True),
    )

    def params(self, settings: ClipScoreConfig, cfg: Any) -> dict[str, Any]:
        first = settings.models[0]
        p: dict[str, Any] = {
            "eval.clip.model": first.name,
            "eval.clip.pretrained": first.pretrained,
            "eval.clip.quick_gelu": "auto" if first.quick_gelu is None else first.quick_gelu,
            "eval.clip.score": "100*max(cos,0)",          # eval/clip_score; eval/clip_score_raw = 100*cos
            "eval.clip.preprocess": "open_clip_eval",     # the model's eval transform on the saved PNGs
        }
        if len(settings.models) > 1:
            p["eval.clip.models"] = ",".join(
                f"{m.name}/{m.pretrained}" + ("" if m.quick_gelu is None else f"/quick_gelu={m.quick_gelu}")
                for m in settings.models)
        if settings.num_images is not None:
            p["eval.clip.num_images"] = settings.num_images
        return p

    def problems(self, settings: ClipScoreConfig, cfg: Any, prompts: list[str] | None) -> list[str]:
        from trainables.preflight import resolve_open_clip_ref  # late: the training preflight imports torch

        out = []
        for i, m in enumerate(settings.models):
            try:
                resolve_open_clip_ref(m.name, m.pretrained)
            except Exception as exc:  # noqa: BLE001 - every model is checked, each listed with its field
                out.append(f"clip.models.{i}: {exc}")
        return out

    def compute(self, ctx: "EvalContext", settings: ClipScoreConfig) -> dict[str, float]:
        from evaluation.clip_score import clip_scores  # late: torch + open_clip; validation reads settings only

        if not ctx.prompt:
            raise ValueError("CLIP score needs the run's prompt (param or tag `prompt`, or --prompt)")
        return clip_scores(ctx.samples_dir, ctx.prompt, ctx.cfg)
