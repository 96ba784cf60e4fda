"""`python -m trainables.generators render|info|convert` as a user runs it (subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainables.generators.__main__ import main

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "stylegan2"
pytestmark = pytest.mark.usefixtures("stylegan2_fixtures")    # fails (not skips) without fixtures


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "trainables.generators", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.numeric
def test_render_pt_matches_reference_and_png(tmp_path: Path):
    e = torch.load(FIXTURES / "nvlabs_tiny32_expected.pt", weights_only=True)
    torch.save(e["z"], tmp_path / "z.pt")
    out = tmp_path / "imgs.pt"
    r = _run("render", "--checkpoint", str(FIXTURES / "nvlabs_tiny32.pkl"), "--z", str(tmp_path / "z.pt"),
             "--truncation", "0.7", "--out", str(out))
    assert r.returncode == 0, r.stderr
    imgs = torch.load(out, weights_only=True)
    assert imgs.dtype == torch.float32 and imgs.shape == (4, 3, 32, 32)
    assert (imgs - e["img_trunc"]).abs().max().item() < 1e-5  # truncation used the checkpoint's w_avg

    png = tmp_path / "grid.png"  # in-process from here on: each subprocess pays the torch import
    assert main(["render", "--checkpoint", str(FIXTURES / "rosinality_tiny32.pt"), "--z", str(tmp_path / "z.pt"),
                 "--out", str(png)]) == 0
    from PIL import Image

    im = Image.open(png)
    assert im.size == (64, 64) and im.mode == "RGB"  # 4 images -> 2x2 grid of 32x32


def test_info_and_convert(tmp_path: Path, capsys):
    r = _run("info", "--checkpoint", str(FIXTURES / "rosinality_mixed64.pt"), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["format"] == "rosinality" and info["resolution"] == 64 and info["style_dim"] == 48
    assert info["n_latent"] == 10 and info["n_mlp"] == 3
    assert info["channels"] == {"4": 32, "8": 32, "16": 24, "32": 16, "64": 16}
    sd = torch.load(FIXTURES / "rosinality_mixed64.pt", weights_only=True)["g_ema"]
    assert info["parameters"] == sum(v.numel() for k, v in sd.items() if not k.startswith("noises.") and not k.endswith(".kernel"))

    out = tmp_path / "converted.pt"
    assert main(["convert", "--checkpoint", str(FIXTURES / "nvlabs_mixed64.pkl"), "--out", str(out)]) == 0
    assert main(["info", "--checkpoint", str(out)]) == 0
    text = capsys.readouterr().out
    assert "format: rosinality" in text and "resolution: 64" in text


def test_missing_files_give_actionable_errors(tmp_path: Path):
    r = _run("info", "--checkpoint", str(tmp_path / "nowhere.pkl"))
    assert r.returncode == 2
    assert "nowhere.pkl" in r.stderr and "not found" in r.stderr and "Traceback" not in r.stderr

def test_missing_latents_in_process(tmp_path: Path, capsys):
    rc = main(["render", "--checkpoint", str(FIXTURES / "rosinality_tiny32.pt"), "--z", str(tmp_path / "z.pt"),
               "--out", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "z.pt" in err and "torch.save(torch.randn(N, 64)" in err
    torch.save(torch.zeros(3, 7), tmp_path / "z.pt")
    assert main(["render", "--checkpoint", str(FIXTURES / "rosinality_tiny32.pt"), "--z", str(tmp_path / "z.pt"),
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "[3, 7]" in capsys.readouterr().err
