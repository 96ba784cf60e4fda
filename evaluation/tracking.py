"""Evaluate adapted generators and report to MLflow: `evaluate_run`, `evaluate_experiment`.

Every write goes through `MlflowClient(tracking_uri)` with an explicit run id (never the fluent API), so
`evaluate_run` can be called inside a Ray Tune trial while the trial's own run is still active, and
standalone afterwards (`python -m evaluation run --experiment NAME`).

What a run must carry (written by the trainable; see docs/evaluation.md):
    adapted generator   param or tag `artifact.generator_path` (a path readable here), or the artifact
                        `generator/generator.pt`
    prompt              param `prompt` (flattened AdaptConfig) or tag `prompt`
    source generator    param `generator.checkpoint` (only for plugins that compare with the source)
What evaluation writes:
    metrics   eval/fid, eval/kid, eval/clip_score (+ eval/clip_score/<model>-<tag>), eval/lpips_diversity
              (+ eval/lpips_diversity_std over groups), eval/feature_diversity, plugin metrics eval/...
    params    EvalConfig.as_params() (eval.*) + eval.latents.sha256
    tags      eval.fingerprint, eval.samples_dir, eval.extra_metrics_done
    artifacts eval/manifest.json (the sample manifest), eval/strip.png (first figure_columns samples)
Both files are also left in the evaluation folder (`<out>/samples/manifest.json`, `<out>/strip.png`), so a
caller that logs through its own tracker (offline trial spool) can log them with `evaluation_params(cfg,
manifest)` and `evaluation_tags(cfg, samples_dir)`.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .config import EvalConfig
from .sampling import list_images, resolve_device, sample_for_eval, sample_source_generator

GENERATOR_KEY = "artifact.generator_path"       # param or tag holding the adapted generator's path
GENERATOR_ARTIFACT = "generator/generator.pt"   # or the generator logged as this artifact
STRIP_ARTIFACT = "eval/strip.png"
MANIFEST_ARTIFACT = "eval/manifest.json"
STRIP_TILE = 128


class RunInputError(FileNotFoundError):
    """A run does not record a readable adapted generator."""


class EvalSettingsConflict(RuntimeError):
    """The run was already evaluated with other settings (MLflow params are immutable)."""


def quiet_mlflow_env() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def get_client(tracking_uri: str | None):
    quiet_mlflow_env()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def retry(fn: Callable[[], Any], attempts: int = 8, first: float = 0.2) -> Any:
    """Retry transient store errors (SQLite 'database is locked' while trials write, server restarts)."""
    delay = first
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            text = str(exc).lower()
            transient = any(w in text for w in ("locked", "connection", "timed out", "timeout", "503", "502"))
            if i == attempts - 1 or not transient:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 5.0)


# ---- metric bookkeeping ------------------------------------------------------------------------------
def expected_metrics(cfg: EvalConfig) -> list[str]:
    """The core metric keys a complete evaluation with `cfg` logs (plugins are tracked by a tag)."""
    keys = []
    if cfg.fid.enabled:
        keys.append("eval/fid")
        if cfg.fid.kid:
            keys.append("eval/kid")
    if cfg.clip.enabled:
        keys.append("eval/clip_score")
    if cfg.diversity.lpips.enabled:
        keys.append("eval/lpips_diversity")
    if cfg.diversity.feature.enabled:
        keys.append("eval/feature_diversity")
    return keys


def is_complete(run, cfg: EvalConfig) -> bool:
    if any(k not in run.data.metrics for k in expected_metrics(cfg)):
        return False
    done = set(filter(None, run.data.tags.get("eval.extra_metrics_done", "").split(",")))
    return all(p in done for p in cfg.extra_metrics)


# ---- plugins -----------------------------------------------------------------------------------------
@dataclass
class EvalContext:
    """What an `extra_metrics` plugin (`fn(ctx) -> dict[str, float]`) gets.

    Keys it returns are logged under `eval/` (a key already starting with `eval/` is kept as is).
    """

    samples_dir: Path                   # {i:05d}.png of the adapted generator, fixed latents
    manifest: dict[str, Any]
    prompt: str
    cfg: EvalConfig
    device: torch.device
    generator_path: Path
    source_generator_path: Path | None  # run param `generator.checkpoint`, or evaluate_run(source_generator=)
    run_params: dict[str, str] = field(default_factory=dict)
    features: np.ndarray | None = None  # FID features of the samples (when FID / feature diversity ran)
    _source_dir: Path | None = None

    def source_samples_dir(self) -> Path:
        """The frozen source generator sampled with the same latents (cached next to the samples)."""
        if self.source_generator_path is None:
            raise ValueError("no source generator known for this run (param generator.checkpoint)")
        if self._source_dir is None:
            out = self.samples_dir.parent / "source_samples"
            sample_source_generator(self.source_generator_path, out, self.cfg)
            self._source_dir = out
        return self._source_dir


def run_plugins(ctx: EvalContext) -> dict[str, float]:
    from .fid import import_object

    out: dict[str, float] = {}
    for path in ctx.cfg.extra_metrics:
        result = import_object(path)(ctx)
        for key, value in (result or {}).items():
            out[key if key.startswith("eval/") else f"eval/{key}"] = float(value)
    return out


# ---- evaluation --------------------------------------------------------------------------------------
def write_strip(samples_dir: Path, out: Path, columns: int, tile: int = STRIP_TILE) -> Path | None:
    from PIL import Image

    paths = list_images(samples_dir)[:columns]
    if not paths:
        return None
    tiles = [Image.open(p).convert("RGB").resize((tile, tile), Image.BICUBIC) for p in paths]
    strip = Image.new("RGB", (tile * len(tiles), tile))
    for i, t in enumerate(tiles):
        strip.paste(t, (i * tile, 0))
    strip.save(out)
    return out


def evaluate_generator(generator_path: str | Path, prompt: str | None, cfg: EvalConfig, out_dir: str | Path,
                       *, source_generator: str | Path | None = None,
                       run_params: dict[str, str] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Sample, then every enabled metric; no tracking. Returns (metrics, sample manifest)."""
    if cfg.fid.enabled and not cfg.fid.reference:
        raise ValueError("fid.enabled but fid.reference is not set: a folder of real target images or an .npz "
                         "of reference statistics (or set fid.enabled: false)")
    out_dir = Path(out_dir)
    samples = out_dir / "samples"
    manifest = sample_for_eval(generator_path, samples, cfg)
    device = resolve_device(cfg.device)
    metrics: dict[str, float] = {}
    feats = None
    if cfg.fid.enabled or cfg.diversity.feature.enabled:
        from .fid import compute_fid, feature_diversity

        res = compute_fid(samples, cfg)
        feats = res.feats
        if res.fid is not None:
            metrics["eval/fid"] = res.fid
        if res.kid is not None:
            metrics["eval/kid"] = res.kid
        if cfg.diversity.feature.enabled:
            metrics["eval/feature_diversity"] = feature_diversity(feats, cfg.diversity.feature.num_images)
    if cfg.clip.enabled:
        if not prompt:
            raise ValueError("CLIP score needs the run's prompt")
        from .clip_score import clip_scores

        metrics.update(clip_scores(samples, prompt, cfg))
    if cfg.diversity.lpips.enabled:
        from .diversity import lpips_diversity_folder

        mean, std = lpips_diversity_folder(samples, cfg)
        metrics["eval/lpips_diversity"] = mean
        metrics["eval/lpips_diversity_std"] = std
    if cfg.extra_metrics:
        ctx = EvalContext(samples_dir=samples, manifest=manifest, prompt=prompt or "", cfg=cfg, device=device,
                          generator_path=Path(generator_path),
                          source_generator_path=Path(source_generator) if source_generator else None,
                          run_params=dict(run_params or {}), features=feats)
        metrics.update(run_plugins(ctx))
    if device.type == "cuda":
        torch.cuda.empty_cache()   # inside a trial the training process keeps running
    return metrics, manifest


@dataclass
class RunInputs:
    generator_path: Path
    prompt: str | None
    source_generator: str | None
    downloaded: bool


def resolve_run_inputs(client, run, cache_dir: Path) -> RunInputs:
    """Where a run's adapted generator, prompt and source generator are (see the module docstring)."""
    params, tags = run.data.params, run.data.tags
    prompt = params.get("prompt") or tags.get("prompt")
    source = params.get("generator.checkpoint") or tags.get("generator.checkpoint")
    recorded = params.get(GENERATOR_KEY) or tags.get(GENERATOR_KEY)
    if recorded and Path(recorded).expanduser().is_file():
        return RunInputs(Path(recorded).expanduser(), prompt, source, False)
    rid = run.info.run_id
    names = [a.path for a in retry(lambda: client.list_artifacts(rid, "generator"))]
    if GENERATOR_ARTIFACT in names:
        import mlflow.artifacts

        dst = cache_dir / "generators" / rid
        dst.mkdir(parents=True, exist_ok=True)
        local = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path=GENERATOR_ARTIFACT,
                                                    dst_path=str(dst), tracking_uri=client.tracking_uri)
        return RunInputs(Path(local), prompt, source, True)
    where = f"{GENERATOR_KEY}={recorded!r} (not a file here)" if recorded else f"no {GENERATOR_KEY} param/tag"
    raise RunInputError(f"run {rid} records no readable adapted generator: {where} and no "
                            f"{GENERATOR_ARTIFACT} artifact")


def _check_params(run, params: dict[str, str]) -> dict[str, str]:
    """Params still to log; raises when the run already holds a different value for one of them."""
    have = run.data.params
    clash = {k: (have[k], v) for k, v in params.items() if k in have and have[k] != v}
    if clash:
        lines = ", ".join(f"{k}: logged {a!r}, now {b!r}" for k, (a, b) in sorted(clash.items()))
        raise EvalSettingsConflict(f"run {run.info.run_id} was evaluated with other settings ({lines}); "
                                   "MLflow params are immutable: evaluate into a new run or restore the settings")
    return {k: v for k, v in params.items() if k not in have}


def evaluation_params(cfg: EvalConfig, manifest: dict[str, Any]) -> dict[str, str]:
    """The `eval.*` params logged with the numbers (settings + the latents file's sha256)."""
    params = dict(cfg.as_params())
    params["eval.latents.sha256"] = str(manifest.get("latents_sha256"))
    return {k: v[:500] for k, v in params.items()}


def evaluation_tags(cfg: EvalConfig, samples_dir: Path, done_plugins: set[str] = frozenset()) -> dict[str, str]:
    """Tags written with an evaluation (`eval.extra_metrics_done` lets --only-missing see plugin metrics)."""
    tags = {"eval.fingerprint": cfg.fingerprint(), "eval.samples_dir": str(Path(samples_dir).resolve())}
    if cfg.extra_metrics:
        tags["eval.extra_metrics_done"] = ",".join(sorted(set(done_plugins) | set(cfg.extra_metrics)))
    return tags


def log_evaluation(client, run_id: str, metrics: dict[str, float], cfg: EvalConfig, manifest: dict[str, Any],
                   samples_dir: Path) -> None:
    from mlflow.entities import Metric, Param, RunTag

    run = retry(lambda: client.get_run(run_id))
    todo = _check_params(run, evaluation_params(cfg, manifest))
    now = int(time.time() * 1000)
    done = set(filter(None, run.data.tags.get("eval.extra_metrics_done", "").split(",")))
    tags = evaluation_tags(cfg, samples_dir, done)
    retry(lambda: client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())],
        params=[Param(k, v) for k, v in sorted(todo.items())],
        tags=[RunTag(k, v[:5000]) for k, v in tags.items()],
    ))
    with tempfile.TemporaryDirectory() as tmp:
        mpath = Path(tmp) / "manifest.json"
        mpath.write_text(json.dumps(manifest, indent=2, sort_keys=True))
        retry(lambda: client.log_artifact(run_id, str(mpath), "eval"))
        strip = samples_dir.parent / "strip.png"
        if not strip.is_file():
            strip = write_strip(samples_dir, Path(tmp) / "strip.png", cfg.figure_columns)
        if strip is not None:
            retry(lambda: client.log_artifact(run_id, str(strip), "eval"))


def _out_dir(cfg: EvalConfig, generator_path: Path, run_id: str | None, downloaded: bool) -> Path:
    key = run_id or generator_path.stem
    if cfg.output_dir:
        return Path(cfg.output_dir).expanduser() / key
    if downloaded:
        return cfg.resolved_cache_dir() / "samples" / key
    return generator_path.parent / "eval"


def evaluate_run(target: str | Path, prompt: str | None = None, cfg: EvalConfig | None = None,
                 tracking_uri: str | None = None, *, run_id: str | None = None,
                 source_generator: str | Path | None = None, out_dir: str | Path | None = None) -> dict[str, float]:
    """Evaluate one adapted generator; returns the metrics ({"eval/fid": ..., ...}).

    target   an MLflow run id (generator, prompt and source generator are read from the run) or a generator
             checkpoint path (then `prompt` is needed for the CLIP score and metrics go to `run_id` if given,
             e.g. the trial's own run from inside a Tune trial; without run_id nothing is logged).
    prompt   overrides the run's prompt.
    """
    cfg = cfg or EvalConfig()
    client = None
    path = Path(str(target)).expanduser()
    params: dict[str, str] = {}
    if path.is_file():
        generator_path, downloaded = path, False
        if run_id is not None:
            client = get_client(tracking_uri)
            params = retry(lambda: client.get_run(run_id)).data.params
    else:
        if path.suffix in (".pt", ".pkl", ".pth") or os.sep in str(target):
            raise FileNotFoundError(f"generator checkpoint not found: {path} (and it is no MLflow run id)")
        run_id = str(target)
        client = get_client(tracking_uri)
        run = retry(lambda: client.get_run(run_id))
        inputs = resolve_run_inputs(client, run, cfg.resolved_cache_dir())
        generator_path, downloaded = inputs.generator_path, inputs.downloaded
        prompt = prompt or inputs.prompt
        source_generator = source_generator or inputs.source_generator
        params = run.data.params
    if client is not None and run_id is not None:   # fail before the expensive part, not after it
        _check_params(retry(lambda: client.get_run(run_id)), {k: v[:500] for k, v in cfg.as_params().items()})
    if source_generator is None and params.get("generator.checkpoint"):
        source_generator = params["generator.checkpoint"]
    work = Path(out_dir) if out_dir else _out_dir(cfg, generator_path, run_id, downloaded)
    metrics, manifest = evaluate_generator(generator_path, prompt, cfg, work, source_generator=source_generator,
                                           run_params=params)
    manifest = dict(manifest, prompt=prompt, run_id=run_id, eval_fingerprint=cfg.fingerprint())
    (work / "samples" / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    write_strip(work / "samples", work / "strip.png", cfg.figure_columns)   # eval/strip.png (comparison figure)
    if client is not None and run_id is not None:
        log_evaluation(client, run_id, metrics, cfg, manifest, work / "samples")
    return metrics


# ---- experiments -------------------------------------------------------------------------------------
def experiment_runs(client, experiment: str) -> tuple[list, list]:
    """(parent runs, trial runs) of an experiment; parents: tag sweep.role=parent or referenced as parent."""
    exp = retry(lambda: client.get_experiment_by_name(experiment))
    if exp is None:
        raise ValueError(f"no MLflow experiment named {experiment!r} at {client.tracking_uri}")
    runs, token = [], None
    while True:
        page = retry(lambda: client.search_runs([exp.experiment_id], max_results=1000, page_token=token))
        runs.extend(page)
        token = page.token
        if not token:
            break
    parent_ids = {r.data.tags.get("mlflow.parentRunId") for r in runs} - {None}
    parents = [r for r in runs if r.info.run_id in parent_ids or r.data.tags.get("sweep.role") == "parent"]
    pset = {r.info.run_id for r in parents}
    trials = [r for r in runs if r.info.run_id not in pset]
    return parents, trials


def evaluate_experiment(experiment: str, cfg: EvalConfig, tracking_uri: str | None = None,
                        only_missing: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate every FINISHED trial run of an experiment; returns {run_id: metrics | 'skipped' | error}."""
    client = get_client(tracking_uri)
    _, trials = experiment_runs(client, experiment)
    results: dict[str, Any] = {}
    for run in sorted(trials, key=lambda r: r.info.start_time or 0):
        rid = run.info.run_id
        name = run.info.run_name or rid
        if run.info.status != "FINISHED":
            echo(f"skip {name}: status {run.info.status}")
            results[rid] = "skipped: not finished"
            continue
        if only_missing and is_complete(run, cfg):
            echo(f"skip {name}: already evaluated")
            results[rid] = "skipped: complete"
            continue
        try:
            metrics = evaluate_run(rid, None, cfg, tracking_uri)
        except (RunInputError, EvalSettingsConflict) as exc:   # this run only; missing weights stop the loop
            echo(f"FAILED {name}: {exc}")
            results[rid] = f"error: {exc}"
            continue
        echo(f"evaluated {name}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        results[rid] = metrics
    return results
