"""platform/: shell scripts parse, YAML templates load, and no __init__.py shadows the stdlib `platform`."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_scripts_are_bash_and_platform_is_not_a_package():
    assert not (REPO / "platform" / "__init__.py").exists()   # it would shadow the stdlib `platform`
    for script in ("up", "down"):
        path = REPO / "platform" / "local" / script
        assert os.access(path, os.X_OK)
        subprocess.run(["bash", "-n", str(path)], check=True)
    for name in ("ray/cluster.yaml", "ray/runtime_env.yaml", "k8s/rayjob.yaml"):
        assert yaml.safe_load((REPO / "platform" / name).read_text())
    env = yaml.safe_load((REPO / "platform/ray/runtime_env.yaml").read_text())
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert {".venv/", "mlruns/", "runs/"} <= set(env["excludes"])
