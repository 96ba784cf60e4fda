"""Source preservation (`eval/preservation/*`): at the same latents as the frozen source generator's samples,
LPIPS(source, adapted), the cosine of CLIP image embeddings and the cosine of the FID extractor's features
(identity-like features when that extractor is one). Settings at `preservation.*`; the math is
`evaluation/preservation.py`. Each part needs only the weights another metric loads: LPIPS the
`diversity.lpips` backbone, CLIP the `clip.models`, features the `fid.*` extractor."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from trainables.settings import StrictModel

from .base import Metric, MetricKey
from .fid import feature_params, feature_problems

if TYPE_CHECKING:  # type names only
    from evaluation.context import EvalContext


class PreservationConfig(StrictModel):
    """Pairwise source-vs-adapted similarity over the first `num_images` fixed latents."""

    enabled: bool = True
    num_images: int | None = Field(200, ge=1)   # pairs: the first min(num_images, num_samples); None = every sample
    # each part: true / false, or None = on when the metric that loads the same weights is on (so preservation
    # never asks for weights the evaluation does not already need; the pocket world has no LPIPS backbone)
    lpips: bool | None = None     # LPIPS(source_i, adapted_i), diversity.lpips's net/backbone/resize (None: LPIPS div.)
    clip: bool | None = None      # cos of CLIP image embeddings, mean over clip.models (None: CLIP score)
    features: bool | None = None  # cos of the fid.* extractor's features (None: FID or feature diversity)


PARTS = ("lpips", "clip", "features")


def resolve_parts(settings: PreservationConfig, cfg: Any) -> PreservationConfig:
    """The settings with every None part decided by its sibling metric (EvalConfig calls it once validated)."""
    auto = {"lpips": cfg.diversity.lpips.enabled, "clip": cfg.clip.enabled,
            "features": cfg.fid.enabled or cfg.diversity.feature.enabled}
    return settings.model_copy(update={p: auto[p] for p in PARTS if getattr(settings, p) is None})


def _parts(settings: PreservationConfig, cfg: Any) -> list[str]:
    return [p for p in PARTS if getattr(resolve_parts(settings, cfg), p)]


class Preservation(Metric):
    name = "preservation"
    Settings = PreservationConfig
    keys = (
        MetricKey("eval/preservation/lpips", "LPIPS to source ↓", "min", ".4f"),
        MetricKey("eval/preservation/clip", "CLIP cos to source ↑", "max", ".4f"),
        MetricKey("eval/preservation/features", "feature cos to source ↑", "max", ".4f"),
    )

    def required_keys(self, settings: PreservationConfig) -> list[str]:
        # EvalConfig resolves every None part when it validates (resolve_parts)
        return [f"eval/preservation/{p}" for p in PARTS if getattr(settings, p)]

    def enabled(self, settings: PreservationConfig) -> bool:
        return settings.enabled

    def params(self, settings: PreservationConfig, cfg: Any) -> dict[str, Any]:
        p: dict[str, Any] = {"eval.preservation.parts": ",".join(_parts(settings, cfg)),
                             "eval.preservation.num_images": min(settings.num_images or cfg.num_samples, cfg.num_samples)}
        if settings.features:
            p.update(feature_params(cfg.fid))
        return p

    def problems(self, settings: PreservationConfig, cfg: Any, prompts: list[str] | None) -> list[str]:
        # a part whose sibling metric is on shares its weights: that metric already lists what is missing
        parts = _parts(settings, cfg)
        out: list[str] = []
        if "features" in parts and not (cfg.fid.enabled or cfg.diversity.feature.enabled):
            out += [f"preservation.features needs the FID extractor: {p}" for p in feature_problems(cfg.fid, None)]
        if "lpips" in parts and not cfg.diversity.lpips.enabled:
            from evaluation.diversity import check_lpips_backbone  # late: imports torch (torch.hub's cache dir)

            try:
                check_lpips_backbone(cfg.diversity.lpips.net, cfg.diversity.lpips.backbone_path)
            except Exception as exc:  # noqa: BLE001 - listed with its field
                out.append(f"preservation.lpips: {exc} (or set preservation.lpips: false)")
        return out

    def compute(self, ctx: "EvalContext", settings: PreservationConfig) -> dict[str, float]:
        from evaluation import preservation as P  # late: torch, lpips, open_clip; validation reads settings only
        from evaluation.fid import folder_features  # late: clean-fid; validation reads settings only

        src_dir = ctx.source_samples_dir()
        src, ada = P.paired_images(src_dir, ctx.samples_dir, settings.num_images)
        out: dict[str, float] = {}
        parts = _parts(settings, ctx.cfg)
        if "lpips" in parts:
            out["eval/preservation/lpips"] = P.lpips_preservation(src, ada, ctx.cfg)
        if "clip" in parts:
            out["eval/preservation/clip"] = P.clip_preservation(src, ada, ctx.cfg)
        if "features" in parts:
            model, feats = ctx.fid_features()
            src_feats = folder_features(src_dir, model, ctx.cfg.fid.mode, ctx.device, batch_size=ctx.cfg.batch_size,
                                        progress=False, num=len(src))
            out["eval/preservation/features"] = P.feature_preservation(src_feats, feats[: len(src)])
        return out
