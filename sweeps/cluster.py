"""Ray for a sweep: its quiet environment, the embedded instance or the cluster (`init_ray`), and what a cluster
whose trials can run on other machines needs (`check_cluster_reach`: shared storage, a tracking target they reach).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tracking import TrackingTarget, is_loopback_host, is_loopback_uri, tracking_uri_of

from .spec import Sweep, SweepError

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


def on_cluster(address: str | None) -> bool:
    """A Ray cluster (--address or RAY_ADDRESS, as `ray job submit` sets) rather than an embedded Ray."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def prepare_embedded_env(cluster: bool) -> None:
    """Before Ray is imported: the embedded Ray listens on 127.0.0.1 only (see platform/local/up)."""
    if not cluster and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _trials_may_leave_this_node(res, nodes: list[dict[str, Any]] | None = None) -> tuple[bool, str]:
    """(True, why) when trials can run on another machine: live nodes on more than one address, or one
    non-loopback address where no node can hold a trial (an autoscaler will add one, e.g. a head with num-cpus 0).
    Nodes all on 127.0.0.1 are one machine (a loopback head cannot be joined from elsewhere)."""
    import ray  # late: Ray reads its env when imported; the launcher sets it first

    nodes = [n for n in (ray.nodes() if nodes is None else nodes) if n.get("Alive")]
    addresses = sorted({n["NodeManagerAddress"] for n in nodes})
    if len(addresses) > 1:
        return True, f"the cluster spans {len(addresses)} machines ({', '.join(addresses)})"
    if not addresses or is_loopback_host(addresses[0]):
        return False, "every node is on this machine"
    fits = [n for n in nodes if n["Resources"].get("CPU", 0) >= res.cpu and n["Resources"].get("GPU", 0) >= res.gpu
            and all(n["Resources"].get(k, 0) >= v for k, v in res.custom.items())]
    if not fits:
        return True, f"no node at {addresses[0]} can hold a trial yet (an autoscaler would add one elsewhere)"
    return False, "one machine"


def check_cluster_reach(storage: Path, tracking: TrackingTarget | str | None, sweep: Sweep,
                        nodes: list[dict[str, Any]] | None = None) -> None:
    """On a cluster whose trials may run elsewhere: storage on a declared shared mount, a tracking target others
    reach. `tracking`: a TrackingTarget (or its URI); `nodes`: ray.nodes() entries (default: the connected
    cluster's)."""
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
    uri = tracking_uri_of(tracking)
    if uri and is_loopback_uri(uri):
        raise SweepError(
            f"{why}, but the MLflow tracking URI {uri} only reaches this machine: trials elsewhere would "
            f"spool and wait. Pass --tracking-uri http://<head address>:5000 (a server bound to an address the "
            f"workers reach: platform/local/up --expose prints it; platform/ray/cluster.yaml starts one)")


def init_ray(address: str | None, sweep: Sweep) -> bool:
    """Connect or start Ray. Returns True when this process started an embedded instance."""
    import ray  # late: Ray reads its env when imported; the launcher sets it first

    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        if is_loopback_uri(address if "://" in address else f"ray://{address}") and \
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


def shutdown_ray() -> None:
    import ray  # late: Ray reads its env when imported; the launcher sets it first

    ray.shutdown()
