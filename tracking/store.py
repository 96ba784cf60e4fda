"""Where runs are stored by default: a SQLite store in ./mlruns, artifacts beside it in ./mlruns/artifacts."""
from __future__ import annotations

import os
from pathlib import Path


def default_tracking_dir(cwd: str | Path | None = None) -> Path:
    return Path(cwd or os.getcwd()).resolve() / "mlruns"


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """The laptop default: a SQLite store in ./mlruns (artifacts in ./mlruns/artifacts)."""
    return f"sqlite:///{default_tracking_dir(cwd) / 'mlflow.db'}"


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def sqlite_artifact_location(uri: str) -> str | None:
    """For a local SQLite store, artifacts live beside it (mlruns/artifacts), not in a process's cwd."""
    if not is_sqlite(uri):
        return None
    db = Path(uri.split("sqlite:///", 1)[-1])
    return (db.parent / "artifacts").resolve().as_uri()
