"""What a metric's compute gets: the samples and what it may share with the other metrics of one evaluation.

    ctx.samples_dir          {i:05d}.png of the adapted generator, fixed latents
    ctx.prompt, ctx.cfg      the run's prompt, the EvalConfig
    ctx.fid_features()       (feature model, [N, D] features) of the samples, computed once per evaluation for
                             FID and feature diversity (a failure fails both)
    ctx.source_samples_dir() the frozen source generator sampled with the same latents (shared on disk)
A plain `module:function` plugin gets the same object (`fn(ctx) -> dict[str, float]`); `ctx.features` holds the
FID features when FID or feature diversity ran before it in this pass, else None.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fid import FeatureModel, build_feature_model, folder_features
from .sampling import shared_source_samples


@dataclass
class EvalContext:
    """The shared inputs of one evaluation's metrics (see the module docstring)."""

    samples_dir: Path                   # {i:05d}.png of the adapted generator, fixed latents
    manifest: dict[str, Any]
    prompt: str
    cfg: "EvalConfig"                   # evaluation.config (not imported: it imports the metrics that read this)
    device: torch.device
    generator_path: Path
    source_generator_path: Path | None  # run param `generator.checkpoint`, or evaluate_run(source_generator=)
    run_params: dict[str, str] = field(default_factory=dict)
    generator_kind: str | None = None   # the run's generator.kind (None: found by the checkpoint's content)
    features: np.ndarray | None = None  # FID features of the samples (when FID / feature diversity ran)
    _source_dir: Path | None = None
    _feats: dict[str, Any] = field(default_factory=dict)

    def fid_features(self) -> tuple[FeatureModel, np.ndarray]:
        """The samples' FID features (fid.* extractor settings), computed once for FID and feature diversity
        (a failure is remembered: the second metric fails for the same reason without a second try)."""
        if "error" in self._feats:
            raise self._feats["error"]
        if "array" not in self._feats:
            try:
                model = build_feature_model(self.cfg.fid, self.device)
                self._feats["array"] = folder_features(self.samples_dir, model, self.cfg.fid.mode, self.device,
                                                       batch_size=self.cfg.batch_size, progress=self.cfg.progress)
                self._feats["model"] = model
            except Exception as exc:
                self._feats["error"] = exc
                raise
            self.features = self._feats["array"]
        return self._feats["model"], self._feats["array"]

    def source_samples_dir(self) -> Path:
        """The frozen source generator sampled with the same latents: rendered once per source checkpoint and
        settings into `cfg.cache_dir/source_samples/` and shared by every later evaluation (sampling.py)."""
        if self.source_generator_path is None:
            raise ValueError("no source generator known for this run (param generator.checkpoint)")
        if self._source_dir is None:
            self._source_dir = Path(shared_source_samples(self.source_generator_path, self.cfg,
                                                               kind=self.generator_kind)["images_dir"])
        return self._source_dir
