"""Where a sweep's files live: the storage rule (`resolve_storage`) and the sweep's state file.

Storage rule (the same for `run`, `run --resume` and `status`): --storage > the sweep file's storage_path (when
it is not the default) > $SWEEPS_STORAGE > runs/sweeps; a relative path is taken from the current directory.
Under `ray job submit` the current directory is Ray's temporary unpacked copy of the code
(.../runtime_resources/working_dir_files/_ray_pkg_<hash of the code>): a path there is refused, since `status`
and `--resume` could not find it again after any code edit; platform/local/up exports an absolute
SWEEPS_STORAGE to its jobs.

The state file (`<storage>/<sweep>/sweep_state.json`) records what `--resume` and `status` need again: the
parent run, the sweep file's hash, the tracking target (`TrackingTarget.record()`), the storage path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import SweepError

STATE_FILE = "sweep_state.json"
DEFAULT_STORAGE = "runs/sweeps"
# Ray unpacks a job's working_dir (and py_modules) under <session>/runtime_resources/: nothing there outlives the job
RAY_RUNTIME_RESOURCES = "runtime_resources"


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


def read_state(exp_dir: Path) -> dict[str, Any]:
    path = exp_dir / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_state(exp_dir: Path, state: dict[str, Any]) -> None:
    exp_dir.mkdir(parents=True, exist_ok=True)
    tmp = exp_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, exp_dir / STATE_FILE)
