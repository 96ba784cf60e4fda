"""The evaluation runner: evaluate adapted generators and report to MLflow (`evaluate_run`, `evaluate_experiment`).

Every write goes through `tracking.mlflow_client(tracking_uri)` (tracking's one retry policy) with an explicit run id (never the fluent API), so
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
    tags      eval.fingerprint, eval.samples_dir, eval.extra_metrics_done (plugins that succeeded; read for
              plain-function plugins, which declare no keys),
              eval.error.<metric> (one-line reason of a metric that failed; removed once it succeeds)
    artifacts eval/manifest.json (the sample manifest), eval/strip.png (first figure_columns samples),
              eval/errors/<metric>.txt (the full traceback of a failed metric)
Both files are also left in the evaluation folder (`<out>/samples/manifest.json`, `<out>/strip.png`), so a
caller that logs through its own tracker (offline trial spool) can log them with `evaluation_params(cfg,
manifest)` and `evaluation_tags(cfg, samples_dir, errors=metrics.errors)`.

The runner only orchestrates: the metrics are objects (`evaluation.metrics`) that declare their keys and
compute their numbers. Metric isolation: each metric (a "unit": a built-in by name, fid (+ kid),
feature_diversity, clip_score, lpips_diversity, and every plugin by its `package.module:Name` path) is
computed on its own; one that raises is recorded (`EvalMetrics.errors`, the tag and the artifact above) and
the others are still computed and logged. `--only-missing` computes exactly the units a run lacks
(`missing_metrics`: a unit is done when its declared keys are on the run; a plain-function plugin, which
declares none, when the run's `eval.extra_metrics_done` tag names it).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from tracking import TrackingTarget, clip_param, clip_tag, experiment_runs, mlflow_client, retry

from .config import EvalConfig
from .context import EvalContext
from .metrics.base import Metric, error_reason
from .preflight import check_evaluation
from .sampling import list_images, resolve_device, sample_for_eval

GENERATOR_KEY = "artifact.generator_path"       # param or tag holding the adapted generator's path
GENERATOR_ARTIFACT = "generator/generator.pt"   # or the generator logged as this artifact
STRIP_ARTIFACT = "eval/strip.png"
MANIFEST_ARTIFACT = "eval/manifest.json"
STRIP_TILE = 128
ERROR_TAG_PREFIX = "eval.error."                # + metric slug: one-line reason of a failed metric
ERROR_ARTIFACT_DIR = "eval/errors"              # <slug>.txt: its full traceback


class RunInputError(FileNotFoundError):
    """A run does not record a readable adapted generator."""


class EvalSettingsConflict(RuntimeError):
    """The run was already evaluated with other settings (MLflow params are immutable)."""


# ---- metric bookkeeping ------------------------------------------------------------------------------
def metric_units(cfg: EvalConfig) -> list[str]:
    """The metrics `cfg` computes, each on its own: built-in names, then plugin paths, in computing order."""
    return cfg.metric_units()


def unit_keys(cfg: EvalConfig, unit: str) -> list[str]:
    """Metric keys whose presence on a run means the unit is done: the metric's declared keys for its settings
    ([] for a plain-function plugin, or one that does not import: see the done tag)."""
    try:
        metric, settings = cfg.metric(unit)
    except Exception:  # noqa: BLE001 - an unimportable plugin is never done (its failure is recorded when run)
        return []
    return metric.required_keys(settings)


def unit_slug(unit: str) -> str:
    """A unit's name in tags and artifact file names ('pocket.metrics:prompt_accuracy' -> '...prompt_accuracy')."""
    return unit.replace(":", ".")


def error_tag(unit: str) -> str:
    return ERROR_TAG_PREFIX + unit_slug(unit)


def run_errors(tags: dict[str, str]) -> dict[str, str]:
    """{metric slug: one-line reason} of a run's recorded metric failures (tags eval.error.<slug>)."""
    return {k[len(ERROR_TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(ERROR_TAG_PREFIX)}


def expected_metrics(cfg: EvalConfig) -> list[str]:
    """The declared metric keys a complete evaluation with `cfg` logs (plain-function plugins: a tag)."""
    return [k for u in metric_units(cfg) for k in unit_keys(cfg, u)]


def _done_plugins(tags: dict[str, str]) -> set[str]:
    return set(filter(None, tags.get("eval.extra_metrics_done", "").split(",")))


def missing_metrics(run, cfg: EvalConfig) -> list[str]:
    """The units of `cfg` a run does not hold yet (never computed, or failed)."""
    done = _done_plugins(run.data.tags)
    missing = []
    for unit in metric_units(cfg):
        keys = unit_keys(cfg, unit)
        ok = all(k in run.data.metrics for k in keys) if keys else unit in done
        if not ok:
            missing.append(unit)
    return missing


def is_complete(run, cfg: EvalConfig) -> bool:
    return not missing_metrics(run, cfg)


@dataclass
class MetricError:
    """A metric that failed: recorded on the run, never raised to the trial."""

    unit: str          # "fid", "clip_score", ... or the plugin's "module:function"
    reason: str        # one line: "KeyError: prompt 'x' is not in the pocket catalogue ..."
    traceback: str     # the full traceback (artifact eval/errors/<slug>.txt)

    @classmethod
    def from_exception(cls, unit: str, exc: BaseException, prefix: str = "") -> "MetricError":
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(unit, (prefix + error_reason(exc))[:500], tb)

    def report(self) -> str:
        return f"metric: {self.unit}\nreason: {self.reason}\n\n{self.traceback}"


class EvalMetrics(dict):
    """{metric key: value} of an evaluation, plus `errors` {unit: MetricError} of the metrics that failed and
    `done` (the units computed in this pass). A plain dict to every caller that only wants the numbers."""

    def __init__(self, *args, errors: dict[str, MetricError] | None = None, done: list[str] | None = None, **kw):
        super().__init__(*args, **kw)
        self.errors: dict[str, MetricError] = dict(errors or {})
        self.done: list[str] = list(done or [])


def failed_evaluation(cfg: EvalConfig, exc: BaseException, units: list[str] | None = None,
                      prefix: str = "evaluation failed: ") -> EvalMetrics:
    """Every unit recorded as failed for one reason (the samples could not be made, the run could not be read)."""
    units = metric_units(cfg) if units is None else units
    return EvalMetrics(errors={u: MetricError.from_exception(u, exc, prefix) for u in units})


# ---- one metric ------------------------------------------------------------------------------------------
def run_metric(metric: Metric, settings, ctx: EvalContext) -> dict[str, float]:
    """One metric: its `check_prompts([prompt])` first (a clear refusal), then its compute. Keys it returns are
    logged under `eval/` (a key already starting with `eval/` is kept as is)."""
    metric.check_prompts([ctx.prompt])
    result = metric.compute(ctx, settings)
    return {key if key.startswith("eval/") else f"eval/{key}": float(value) for key, value in (result or {}).items()}


def run_plugin(path: str, ctx: EvalContext) -> dict[str, float]:
    """A plugin by its path (a Metric class or instance, or a plain function), with its settings in ctx.cfg."""
    return run_metric(*ctx.cfg.metric(path), ctx)


# ---- evaluation --------------------------------------------------------------------------------------
def write_strip(samples_dir: Path, out: Path, columns: int, tile: int = STRIP_TILE) -> Path | None:
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
                       *, source_generator: str | Path | None = None, run_params: dict[str, str] | None = None,
                       only: list[str] | None = None, generator_kind: str | None = None
                       ) -> tuple[EvalMetrics, dict[str, Any]]:
    """Sample, then every enabled metric (or the units in `only`), each isolated; no tracking.

    Returns (metrics, sample manifest); `metrics.errors` holds the metrics that failed (the others are there).
    Raises only when there is nothing to measure: a config error or samples that cannot be made.
    `generator_kind`: the run's `generator.kind` (None: the registered kind that recognises the files; a kind of
    one's own must be named).
    """
    units = [u for u in metric_units(cfg) if only is None or u in only]
    if "fid" in units and not cfg.fid.reference:
        raise ValueError("fid.enabled but fid.reference is not set: a folder of real target images or an .npz "
                         "of reference statistics (or set fid.enabled: false)")
    out_dir = Path(out_dir)
    samples = out_dir / "samples"
    manifest = sample_for_eval(generator_path, samples, cfg, kind=generator_kind)
    device = resolve_device(cfg.device)
    metrics = EvalMetrics()
    ctx = EvalContext(samples_dir=samples, manifest=manifest, prompt=prompt or "", cfg=cfg, device=device,
                      generator_path=Path(generator_path),
                      source_generator_path=Path(source_generator) if source_generator else None,
                      run_params=dict(run_params or {}), generator_kind=generator_kind)
    for unit in units:
        try:   # each metric on its own: one that raises (or does not import) is recorded, the others still run
            values = run_metric(*cfg.metric(unit), ctx)
        except Exception as exc:  # noqa: BLE001
            metrics.errors[unit] = MetricError.from_exception(unit, exc)
        else:
            metrics.update({k: float(v) for k, v in values.items()})
            metrics.done.append(unit)
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
        import mlflow.artifacts  # late: mlflow (~1.6 s) loads on first use

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
    return {k: clip_param(v) for k, v in params.items()}


def evaluation_tags(cfg: EvalConfig, samples_dir: Path | None, done_plugins: set[str] = frozenset(),
                    errors: dict[str, MetricError] | None = None) -> dict[str, str]:
    """Tags written with an evaluation: `eval.extra_metrics_done` (the plugins that hold their numbers, so
    --only-missing sees them) and `eval.error.<metric>` (the one-line reason of each metric in `errors`)."""
    errors = errors or {}
    tags = {"eval.fingerprint": cfg.fingerprint()}
    if samples_dir is not None:
        tags["eval.samples_dir"] = str(Path(samples_dir).resolve())
    if cfg.extra_metrics:
        done = (set(done_plugins) | set(cfg.extra_metrics)) - set(errors)
        tags["eval.extra_metrics_done"] = ",".join(sorted(done))
    tags.update({error_tag(u): e.reason for u, e in errors.items()})
    return tags


def log_evaluation(client, run_id: str, metrics: dict[str, float], cfg: EvalConfig, manifest: dict[str, Any],
                   samples_dir: Path) -> None:
    """Metrics, params, tags and artifacts of an evaluation; failed metrics get their error tag + traceback
    artifact, metrics that succeeded lose a stale error tag. An empty manifest (no samples) logs errors only."""
    from mlflow.entities import Metric, Param, RunTag  # late: mlflow (~1.6 s) loads on first use

    run = retry(lambda: client.get_run(run_id))
    todo = _check_params(run, evaluation_params(cfg, manifest)) if manifest else {}
    now = int(time.time() * 1000)
    errors: dict[str, MetricError] = getattr(metrics, "errors", {})
    tags = evaluation_tags(cfg, samples_dir if manifest else None, _done_plugins(run.data.tags), errors)
    if not manifest:
        tags.pop("eval.fingerprint", None)
    retry(lambda: client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())],
        params=[Param(k, v) for k, v in sorted(todo.items())],
        tags=[RunTag(k, clip_tag(v)) for k, v in tags.items()],
    ))
    for unit in getattr(metrics, "done", []):   # fixed since the last evaluation: the reason no longer holds
        if error_tag(unit) in run.data.tags:
            retry(lambda: client.delete_tag(run_id, error_tag(unit)))
    with tempfile.TemporaryDirectory() as tmp:
        for unit, err in errors.items():
            epath = Path(tmp) / f"{unit_slug(unit)}.txt"
            epath.write_text(err.report())
            retry(lambda: client.log_artifact(run_id, str(epath), ERROR_ARTIFACT_DIR))
        if not manifest:
            return
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
                 tracking_uri: "str | TrackingTarget | None" = None, *, run_id: str | None = None,
                 source_generator: str | Path | None = None, out_dir: str | Path | None = None,
                 only: list[str] | None = None, generator_kind: str | None = None) -> EvalMetrics:
    """Evaluate one adapted generator; returns the metrics ({"eval/fid": ..., ...}) as an `EvalMetrics`.

    target   an MLflow run id (generator, prompt and source generator are read from the run) or a generator
             checkpoint path (then `prompt` is needed for the CLIP score and metrics go to `run_id` if given,
             e.g. the trial's own run from inside a Tune trial; without run_id nothing is logged).
    prompt   overrides the run's prompt.
    generator_kind  the generator's kind (default: the run's param generator.kind, else found by file content).
    only     compute just these units (`metric_units`; --only-missing passes `missing_metrics(run, cfg)`).
    A metric that fails is in `.errors` (and recorded on the run), never raised; when the samples cannot be
    made every requested metric is recorded as failed with that reason. Raises only for unreadable inputs
    (RunInputError, a missing checkpoint) and settings that conflict with the run's (EvalSettingsConflict).
    """
    cfg = cfg or EvalConfig()
    client = None
    path = Path(str(target)).expanduser()
    params: dict[str, str] = {}
    if path.is_file():
        generator_path, downloaded = path, False
        if run_id is not None:
            client = mlflow_client(tracking_uri)
            params = retry(lambda: client.get_run(run_id)).data.params
    else:
        if path.suffix in (".pt", ".pkl", ".pth") or os.sep in str(target):
            raise FileNotFoundError(f"generator checkpoint not found: {path} (and it is no MLflow run id)")
        run_id = str(target)
        client = mlflow_client(tracking_uri)
        run = retry(lambda: client.get_run(run_id))
        inputs = resolve_run_inputs(client, run, cfg.resolved_cache_dir())
        generator_path, downloaded = inputs.generator_path, inputs.downloaded
        prompt = prompt or inputs.prompt
        source_generator = source_generator or inputs.source_generator
        params = run.data.params
    if client is not None and run_id is not None:   # fail before the expensive part, not after it
        _check_params(retry(lambda: client.get_run(run_id)), {k: clip_param(v) for k, v in cfg.as_params().items()})
    if source_generator is None and params.get("generator.checkpoint"):
        source_generator = params["generator.checkpoint"]
    generator_kind = generator_kind or params.get("generator.kind")
    work = Path(out_dir) if out_dir else _out_dir(cfg, generator_path, run_id, downloaded)
    units = [u for u in metric_units(cfg) if only is None or u in only]
    try:
        metrics, manifest = evaluate_generator(generator_path, prompt, cfg, work, source_generator=source_generator,
                                               run_params=params, only=units, generator_kind=generator_kind)
    except Exception as exc:  # noqa: BLE001 - no samples: every metric is missing for this one reason
        metrics, manifest = failed_evaluation(cfg, exc, units), {}
    if manifest:
        manifest = dict(manifest, prompt=prompt, run_id=run_id, eval_fingerprint=cfg.fingerprint())
        (work / "samples" / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        write_strip(work / "samples", work / "strip.png", cfg.figure_columns)   # eval/strip.png (comparison figure)
    if client is not None and run_id is not None:
        log_evaluation(client, run_id, metrics, cfg, manifest, work / "samples")
    return metrics


# ---- experiments -------------------------------------------------------------------------------------
def evaluate_experiment(experiment: str, cfg: EvalConfig, tracking_uri: "str | TrackingTarget | None" = None,
                        only_missing: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate every FINISHED trial run of an experiment; returns {run_id: metrics | 'skipped' | error}.

    With `only_missing`, each run gets exactly the metrics it lacks (never computed, or failed before);
    a run holding all of them is skipped. The evaluation's models are checked first (`check_evaluation`):
    missing weights stop the command before any work. A metric that fails is reported and recorded on its
    run (the result's `.errors`); the other runs and metrics go on.
    """
    client = mlflow_client(tracking_uri)
    _, trials = experiment_runs(client, experiment)
    results: dict[str, Any] = {}
    todo = []
    for run in sorted(trials, key=lambda r: r.info.start_time or 0):
        rid = run.info.run_id
        name = run.info.run_name or rid
        if run.info.status != "FINISHED":
            echo(f"skip {name}: status {run.info.status}")
            results[rid] = "skipped: not finished"
            continue
        missing = missing_metrics(run, cfg) if only_missing else None
        if missing == []:
            echo(f"skip {name}: already evaluated")
            results[rid] = "skipped: complete"
            continue
        todo.append((run, missing))
    if todo:
        check_evaluation(cfg, source=f"evaluation of experiment {experiment!r}")
    for run, missing in todo:
        rid = run.info.run_id
        name = run.info.run_name or rid
        try:
            metrics = evaluate_run(rid, None, cfg, tracking_uri, only=missing)
        except (RunInputError, EvalSettingsConflict) as exc:   # this run only
            echo(f"FAILED {name}: {exc}")
            results[rid] = f"error: {exc}"
            continue
        what = f" (missing: {', '.join(missing)})" if missing is not None else ""
        echo(f"evaluated {name}{what}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        for unit, err in metrics.errors.items():
            echo(f"  metric {unit} FAILED on {name}: {err.reason} (recorded as tag {error_tag(unit)}, "
                 f"traceback in artifact {ERROR_ARTIFACT_DIR}/{unit_slug(unit)}.txt)")
        results[rid] = metrics
    return results
