"""Run a sweep with Ray Tune: embedded local Ray by default, a cluster with --address or under `ray job submit`.

    python -m sweeps run FILE [--address ADDR] [--tracking-uri URI] [--resume] [--storage PATH]

Order of events: load + validate the sweep file and resolve every model reference (nothing starts if one
is missing) -> storage (`resolve_storage`) -> Ray (embedded, or the cluster; on a cluster whose trials can run
on other nodes, storage and tracking URI must be reachable from them: `check_cluster_reach`) -> tracking (a
loopback MLflow server over ./mlruns unless a URI is given) -> parent run -> Tuner.fit (or Tuner.restore with
--resume) -> parent run finished with a per-trial summary.

Storage rule (the same for `run`, `run --resume` and `status`): --storage > the sweep file's storage_path (when
it is not the default) > $SWEEPS_STORAGE > runs/sweeps; a relative path is taken from the current directory.
Under `ray job submit` the current directory is Ray's temporary unpacked copy of the code
(.../runtime_resources/working_dir_files/_ray_pkg_<hash of the code>): a path there is refused, since `status`
and `--resume` could not find it again after any code edit; platform/local/up exports an absolute
SWEEPS_STORAGE to its jobs.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import copy
import time
from pathlib import Path
from urllib.parse import urlparse
from typing import Any

from evaluation.table import headline_metrics, log_table, render
from tracking import (LocalMlflowServer, ROLE_PARENT, ROLE_TAG, default_tracking_dir, finish_run, git_commit,
                      start_parent_run, summarize_children)

from .context import TrialContext, name_axes
from .cost import resolve_auto_gpu
from .schema import EVAL_PREFIX
from .spec import REF_FIELDS, OptunaSearch, AshaSearch, Sweep, SweepError, check_models, get_dotted, load_sweep, set_dotted
from .trial import import_entrypoint, run_trial

STATE_FILE = "sweep_state.json"
DEFAULT_STORAGE = "runs/sweeps"
# Ray unpacks a job's working_dir (and py_modules) under <session>/runtime_resources/: nothing there outlives the job
RAY_RUNTIME_RESOURCES = "runtime_resources"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0")
REPO_ROOT = Path(__file__).resolve().parent.parent

QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",          # Tune's CLIReporter table with the latest metrics
}


def quiet_env() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def experiment_dir(storage: str | Path, name: str) -> Path:
    return Path(storage).expanduser().resolve() / name


def resolve_storage(storage: str | None, spec_storage: str | None = None) -> Path:
    """The sweeps' storage folder, absolute (rule in the module docstring); refuses Ray's temporary job dirs."""
    if storage:
        raw, source = storage, "--storage"
    elif spec_storage and spec_storage != DEFAULT_STORAGE:
        raw, source = spec_storage, "the sweep file's storage_path"
    elif os.environ.get("SWEEPS_STORAGE"):
        raw, source = os.environ["SWEEPS_STORAGE"], "SWEEPS_STORAGE"
    else:
        raw, source = DEFAULT_STORAGE, f"the default {DEFAULT_STORAGE}"
    if "://" in raw:
        raise SweepError(f"storage {raw!r} (from {source}) is a URI: trials write their checkpoints, samples and "
                         f"MLflow spools as files under the storage path, so it must be a folder every node mounts "
                         f"(mount the bucket with gcsfuse / mountpoint-s3 and give that folder, listed in "
                         f"SWEEPS_SHARED_MOUNTS)")
    path = Path(raw).expanduser().resolve()
    if RAY_RUNTIME_RESOURCES in path.parts:
        raise SweepError(
            f"storage {raw!r} (from {source}) resolves to {path}, inside Ray's temporary copy of the job's code: "
            f"`sweeps status` and `--resume` would not find it again. Give an absolute path: --storage /abs/path, "
            f"SWEEPS_STORAGE=/abs/path in the head's environment (platform/local/up exports one; "
            f"`source runs/platform/env`), or an absolute storage_path in the sweep file")
    return path


def _is_loopback_uri(uri: str) -> bool:
    """A tracking URI only this machine can use: a local store (sqlite:, file:, a path) or a loopback host."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file", "sqlite"):
        return True
    return _is_loopback_host(parsed.hostname or "")


def _is_loopback_host(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _trials_may_leave_this_node(res, nodes: list[dict[str, Any]] | None = None) -> tuple[bool, str]:
    """(True, why) when trials can run on another machine: live nodes on more than one address, or one
    non-loopback address where no node can hold a trial (an autoscaler will add one, e.g. a head with num-cpus 0).
    Nodes all on 127.0.0.1 are one machine (a loopback head cannot be joined from elsewhere)."""
    import ray  # late: Ray reads its env when imported; run_sweep sets it first

    nodes = [n for n in (ray.nodes() if nodes is None else nodes) if n.get("Alive")]
    addresses = sorted({n["NodeManagerAddress"] for n in nodes})
    if len(addresses) > 1:
        return True, f"the cluster spans {len(addresses)} machines ({', '.join(addresses)})"
    if not addresses or _is_loopback_host(addresses[0]):
        return False, "every node is on this machine"
    fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= res.cpu and n["Resources"].get("GPU", 0) >= res.gpu
            and all(n["Resources"].get(k, 0) >= v for k, v in res.custom.items())]
    if not fits:
        return True, f"no node at {addresses[0]} can hold a trial yet (an autoscaler would add one elsewhere)"
    return False, "one machine"


def check_cluster_reach(storage: Path, tracking_uri: str | None, sweep: Sweep,
                        nodes: list[dict[str, Any]] | None = None) -> None:
    """On a cluster whose trials may run elsewhere: storage on a declared shared mount, a tracking URI others reach.
    `nodes`: ray.nodes() entries (default: the connected cluster's)."""
    leaves, why = _trials_may_leave_this_node(sweep.spec.resources, nodes)
    if not leaves:
        return
    mounts = [Path(m).expanduser().resolve() for m in os.environ.get("SWEEPS_SHARED_MOUNTS", "").split(os.pathsep) if m]
    if not any(storage == m or m in storage.parents for m in mounts):
        raise SweepError(
            f"{why}, but the storage {storage} is not on a shared mount: trials on other nodes would write their "
            f"checkpoints where the driver and retries cannot see them. Put it on a folder every node mounts (NFS, "
            f"a FUSE-mounted bucket) and declare that folder: SWEEPS_SHARED_MOUNTS=/mnt/shared (several: "
            f"separated by ':'; platform/ray/cluster.yaml and platform/k8s/rayjob.yaml set it), then "
            f"--storage /mnt/shared/sweeps or SWEEPS_STORAGE=/mnt/shared/sweeps"
            + (f" (declared now: {os.environ['SWEEPS_SHARED_MOUNTS']})" if mounts else ""))
    if tracking_uri and _is_loopback_uri(tracking_uri):
        raise SweepError(
            f"{why}, but the MLflow tracking URI {tracking_uri} only reaches this machine: trials elsewhere would "
            f"spool and wait. Pass --tracking-uri http://<head address>:5000 (a server bound to an address the "
            f"workers reach: platform/local/up --expose prints it; platform/ray/cluster.yaml starts one)")


def read_state(exp_dir: Path) -> dict[str, Any]:
    path = exp_dir / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_state(exp_dir: Path, state: dict[str, Any]) -> None:
    exp_dir.mkdir(parents=True, exist_ok=True)
    tmp = exp_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, exp_dir / STATE_FILE)


def _absolutize_refs(base: dict[str, Any]) -> dict[str, Any]:
    """Embedded runs: relative local model paths that exist from here become absolute (workers agree)."""
    base = copy.deepcopy(base)
    for ref in REF_FIELDS:
        value = get_dotted(base, ref)
        if isinstance(value, str) and not os.path.isabs(value) and Path(value).exists():
            set_dotted(base, ref, str(Path(value).resolve()))
    return base


def points(sweep: Sweep) -> list[dict[str, Any]]:
    return [{"index": t.index, "overrides": t.overrides} for t in sweep.trials]


def param_space(sweep: Sweep) -> dict[str, Any]:
    from ray import tune  # late: Ray reads its env when imported; run_sweep sets it first

    search = sweep.spec.search
    if isinstance(search, OptunaSearch):
        space = {}
        for path, d in search.params.items():
            if d.dist == "uniform":
                space[path] = tune.uniform(d.low, d.high)
            elif d.dist == "loguniform":
                space[path] = tune.loguniform(d.low, d.high)
            elif d.dist == "int":
                space[path] = tune.randint(int(d.low), int(d.high) + 1)
            else:
                space[path] = tune.choice(d.values)
        return {"point": {"index": None, "overrides": space}}
    return {"point": tune.grid_search(points(sweep))}


def trial_name(trial: Any) -> str:
    index = (trial.config.get("point") or {}).get("index")
    return f"trial_{index:03d}" if isinstance(index, int) else f"trial_{trial.trial_id}"


def _reporter(sweep: Sweep):
    from ray.tune import CLIReporter  # late: Ray reads its env when imported; run_sweep sets it first

    params = {f"point/overrides/{p}": p for p in sweep.varying}
    if isinstance(sweep.spec.search, OptunaSearch):
        params = {f"point/overrides/{p}": p for p in sweep.spec.search.params}
    metrics = {"step": "step", "perf/it_per_s": "it/s", "train/grad_norm": "grad_norm"}
    metric = getattr(sweep.spec.search, "metric", None)
    if metric:
        metrics[metric] = metric
    return CLIReporter(parameter_columns=params, metric_columns=metrics, max_report_frequency=15,
                       sort_by_metric=False, max_progress_rows=50)


def _tune_config(sweep: Sweep):
    from ray import tune  # late: Ray reads its env when imported; run_sweep sets it first

    search = sweep.spec.search
    kwargs: dict[str, Any] = dict(max_concurrent_trials=sweep.spec.max_concurrent_trials,
                                  trial_name_creator=trial_name, trial_dirname_creator=trial_name,
                                  reuse_actors=sweep.spec.reuse_workers)
    if isinstance(search, AshaSearch):
        from ray.tune.schedulers import ASHAScheduler  # late: Ray reads its env on import (run_sweep)

        max_t = search.max_t or max(t.config.train.iterations for t in sweep.trials)
        kwargs["scheduler"] = ASHAScheduler(time_attr="step", metric=search.metric, mode=search.mode,
                                            grace_period=search.grace_period, max_t=max_t,
                                            reduction_factor=search.reduction_factor)
    elif isinstance(search, OptunaSearch):
        # late: Ray reads its env when imported; run_sweep sets it first
        from .search import optuna_search

        kwargs["search_alg"] = optuna_search(search.metric, search.mode, search.seed,
                                             final_only=search.metric.startswith(EVAL_PREFIX))
        kwargs["num_samples"] = search.num_samples
    return tune.TuneConfig(**kwargs)


def _init_ray(address: str | None, sweep: Sweep) -> bool:
    """Connect or start Ray. Returns True when this process started an embedded instance."""
    import ray  # late: Ray reads its env when imported; run_sweep sets it first

    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        if _is_loopback_uri(address if "://" in address else f"ray://{address}") and \
                os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") is None:
            print("note: a loopback Ray address: if the head was started by platform/local/up, this shell needs its "
                  "environment (`source runs/platform/env`: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)", file=sys.stderr)
        ray.init(address=address, log_to_driver=True)
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback only; keeps ~/.ray/auth_token out of it
    # workers inherit this process's environment: make the project importable from any worker cwd
    paths = [str(REPO_ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    res = sweep.spec.resources
    num_gpus = None
    # address="local": always a new instance; with no address ray.init joins the cluster last recorded in
    # /tmp/ray/ray_current_cluster (anyone's `ray start` or test cluster on this machine)
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, int(res.cpu + 0.999)), num_gpus=num_gpus,
             include_dashboard=False, configure_logging=True, log_to_driver=True)
    gpus = ray.cluster_resources().get("GPU", 0)
    if res.gpu > 0 and gpus < res.gpu:
        ray.shutdown()
        raise SweepError(
            f"{sweep.marks.where(('resources', 'gpu'))}: each trial asks for {res.gpu} GPU but this machine has "
            f"{gpus:g}: run it on a GPU cluster (--address or ray job submit, docs/cluster.md) or set resources.gpu: 0"
        )
    return True


def run_sweep(file: str | Path, *, address: str | None = None, tracking_uri: str | None = None,
              resume: bool = False, storage: str | None = None, skip_model_check: bool = False,
              verbose: int = 1, out=sys.stdout) -> int:
    quiet_env()
    sweep = load_sweep(file)
    if not skip_model_check:
        check_models(sweep)          # fail fast: missing weights stop everything here
    fraction = resolve_auto_gpu(sweep)   # resources.gpu: auto -> the share of a GPU the traced peak needs
    if fraction is not None and verbose:
        print(f"resources.gpu: auto -> {fraction:g} GPU per trial", file=out)
    spec = sweep.spec
    try:  # the function every trial calls must import here too (same code, same PYTHONPATH as the workers)
        import_entrypoint(spec.entrypoint)
    except Exception as exc:
        raise SweepError(f"{sweep.marks.where(('entrypoint',))}: entrypoint {spec.entrypoint!r} cannot be imported "
                         f"({type(exc).__name__}: {exc}); give 'module:function' with adapt's signature") from None
    exp_dir = experiment_dir(resolve_storage(storage, spec.storage_path), spec.name)
    cluster = bool(address or os.environ.get("RAY_ADDRESS"))
    if not cluster and "ray" not in sys.modules:
        # the embedded Ray listens on 127.0.0.1 only (Ray reads this when imported; see platform/local/up)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

    from ray import tune  # late: Ray reads its env when imported; run_sweep sets it first

    state = read_state(exp_dir)
    spec_hash = hashlib.sha256(sweep.text.encode()).hexdigest()[:16]
    if resume:
        if not tune.Tuner.can_restore(str(exp_dir)):
            raise SweepError(f"{file}: --resume: no interrupted sweep at {exp_dir} (run it without --resume first, "
                             f"or pass the --storage it ran with)")
        if state.get("spec_sha256") not in (None, spec_hash):
            raise SweepError(f"{file}: --resume: the sweep file changed since this sweep started (its trials would "
                             f"mix two configs): restore the file as it was, or run the new one under another name")
    elif (exp_dir / STATE_FILE).exists() or tune.Tuner.can_restore(str(exp_dir)):
        raise SweepError(f"{file}: sweep '{spec.name}' already has results at {exp_dir}: pass --resume to continue "
                         f"it, or choose another name / --storage, or remove that folder to start over")

    # tracking: CLI > sweep file > environment > (resume: what it used) > a loopback server over ./mlruns
    uri = tracking_uri or spec.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if resume and not uri and state.get("tracking_uri", "").startswith("sqlite:"):
        uri = None  # served again below
    server = None
    embedded = False
    if not uri and cluster:
        raise SweepError(
            f"{file}: running on a Ray cluster but no MLflow tracking URI is known: pass --tracking-uri "
            f"http://<mlflow-host>:5000, set tracking_uri in the sweep file, or start the head with MLFLOW_TRACKING_URI "
            f"in its environment (platform/local/up and platform/ray/cluster.yaml do)")
    try:
        embedded = _init_ray(address, sweep)
        if cluster:
            check_cluster_reach(exp_dir.parent, uri, sweep)
        if not uri:
            store = Path(state.get("local_store") or default_tracking_dir())
            server = LocalMlflowServer(store, log_path=exp_dir / "mlflow_server.log")
            exp_dir.mkdir(parents=True, exist_ok=True)
            server.start()
            uri = server.url
            print(f"MLflow: local store {store} served at {uri}", file=out)
        commit = git_commit(REPO_ROOT)
        parent = start_parent_run(
            uri, spec.name, run_name=f"{spec.name}" + (" (resumed)" if resume else ""),
            tags={ROLE_TAG: ROLE_PARENT, "sweep.name": spec.name, "sweep.file": str(file),
                  "sweep.trials": len(sweep.trials), "git_commit": commit},
            spec_text=sweep.text, extra_artifacts={"trials.csv": trials_csv(sweep)},
            run_id=state.get("parent_run_id") if resume else None,
            # the laptop default: artifacts as plain files beside the SQLite store, readable without a server
            artifact_location=(server.store_dir / "artifacts").as_uri() if server else None,
        )
        write_state(exp_dir, {"name": spec.name, "file": str(Path(file).resolve()), "parent_run_id": parent,
                              "spec_sha256": spec_hash,
                              "tracking_uri": uri if not server else server.backend_uri,
                              "local_store": str(server.store_dir) if server else None,
                              "storage_path": str(exp_dir.parent), "started": time.time()})
        base = _absolutize_refs(sweep.base) if not cluster else sweep.base
        ctx = TrialContext(
            experiment=spec.name, base=base, checkpoint_every=spec.checkpoint_every, entrypoint=spec.entrypoint,
            tracking_uri=uri, parent_run_id=parent, trials_dir=str(exp_dir / "trials"), git_commit=commit,
            evaluation=spec.evaluation or None, log_generator_max_mb=spec.log_generator_max_mb,
            cwd=os.getcwd() if not cluster else None, name_axes=name_axes(sweep.axes, sweep.varying),
        )
        results = _fit(sweep, ctx, exp_dir, resume)
        errors = sum(1 for r in results if r.error is not None)
        _summarize_children(uri, parent, out)
        finish_run(uri, parent, "FAILED" if errors else "FINISHED",
                   tags={"sweep.trials_ok": len(results) - errors, "sweep.trials_failed": errors})
        print(f"\nsweep {spec.name}: {len(results) - errors} trial(s) finished, {errors} failed; "
              f"MLflow experiment '{spec.name}' at {uri}; results in {exp_dir}", file=out)
        print(_phase_summary(results), file=out)
        if spec.evaluation is not None and len(results) > errors:
            _log_comparison_table(spec.name, uri, parent, out)
        return 1 if errors else 0
    finally:
        if embedded:
            import ray  # late: Ray reads its env when imported; run_sweep sets it first

            ray.shutdown()
        if server is not None:
            server.stop()


def _summarize_children(uri: str, parent_run_id: str, out) -> None:
    """The trials' headline eval metrics onto the parent run (`eval/<metric>/<run name>`): the MLflow chart view
    shows every trial's result without expanding the sweep run."""
    try:
        summarize_children(uri, parent_run_id, headline_metrics)
    except Exception as exc:  # the trials' own runs hold every number; only the parent's overview is missing
        print(f"warning: the trials' metrics could not be copied onto the sweep's parent run "
              f"({type(exc).__name__}: {exc})", file=out)


def _log_comparison_table(experiment: str, uri: str, parent_run_id: str, out) -> None:
    """The paper-style table and comparison figure onto the sweep's parent run, and the table printed."""
    try:
        tables = log_table(experiment, uri)
    except Exception as exc:  # the trials and their metrics are safe in MLflow; only the summary failed
        print(f"warning: the comparison table could not be built ({type(exc).__name__}: {exc}); rebuild it with "
              f"`python -m evaluation table --experiment {experiment} --tracking-uri URI`", file=out)
        return
    table = tables.get(parent_run_id)
    if table is not None and not table.empty:
        print(f"\n{render(table, 'md')}\n(logged as table/ and comparison.png on the sweep's parent run)", file=out)


def _phase_summary(results) -> str:
    """Mean wall seconds per trial phase over the finished trials (perf/phase/* of their last report)."""
    rows = [r.metrics for r in results if r.error is None and r.metrics]
    keys = ["startup", "load", "adapt", "evaluation", "upload"]
    means = {k: sum(m.get(f"perf/phase/{k}_s", 0.0) for m in rows) / len(rows) for k in keys} if rows else {}
    if not means or not any(means.values()):
        return "trial phases: not reported"
    total = sum(means.values())
    return ("trial phases (mean s): " + ", ".join(f"{k} {v:.1f}" for k, v in means.items())
            + f"; adaptation is {means['adapt'] / total:.0%} of a trial")


def _fit(sweep: Sweep, ctx: TrialContext, exp_dir: Path, resume: bool):
    from ray import tune  # late: Ray reads its env when imported; run_sweep sets it first

    res = sweep.spec.resources
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx),
                                    {"cpu": res.cpu, "gpu": res.gpu, **res.custom})
    if resume:
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(sweep),
            tune_config=_tune_config(sweep),
            run_config=tune.RunConfig(
                name=sweep.spec.name,
                storage_path=str(exp_dir.parent),
                failure_config=tune.FailureConfig(max_failures=sweep.spec.retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                progress_reporter=_reporter(sweep),
                verbose=1,
            ),
        )
    return tuner.fit()


def trials_csv(sweep: Sweep) -> str:
    buf = io.StringIO()
    cols = sweep.varying
    writer = csv.writer(buf)
    writer.writerow(["trial", *cols, "iterations"])
    for t in sweep.trials:
        writer.writerow([t.index, *[t.overrides.get(c) for c in cols], t.config.train.iterations])
    return buf.getvalue()
