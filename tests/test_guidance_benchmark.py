"""benchmarks/sds_step.py stays runnable: one tiny CPU row per engine."""
import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch


def test_sds_step_benchmark_smoke(capsys, tmp_path):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sds_step.py"
    spec = importlib.util.spec_from_file_location("sds_step_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    n = torch.get_num_threads()
    try:
        rc = mod.main(["--config", "tiny", "--device", "cpu", "--threads", "1", "--batches", "2",
                       "--regs", "directional", "--warmup", "0", "--iters", "1", "--json", str(tmp_path / "r.json")])
    finally:
        torch.set_num_threads(n)
    assert rc == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny |")]
    assert len(rows) == 2 and "| reference |" in rows[0] and "| fast |" in rows[1]
    assert (tmp_path / "r.json").is_file()
