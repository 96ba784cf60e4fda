"""Preflight: every missing model of a config is reported at once, fast, with its fix; nothing loads."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import REPO, tiny_adapt_dict
from trainables.config_io import validate_config
from trainables.preflight import MissingModelsError, check_models, model_problems


def test_tiny_models_pass(tiny_models, tmp_path):
    assert model_problems(validate_config(tiny_adapt_dict(tiny_models, tmp_path))) == []
    assert model_problems(validate_config(tiny_adapt_dict(tiny_models, tmp_path, method="nada"))) == []


def test_all_missing_models_are_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    cfg = validate_config({"prompt": "a dog", "generator": {"checkpoint": str(tmp_path / "nope.pt")},
                           "guidance": {"model": "CompVis/stable-diffusion-v1-4"}})
    tic = time.perf_counter()
    with pytest.raises(MissingModelsError) as err:
        check_models(cfg, source="paper.yaml")
    assert time.perf_counter() - tic < 10
    msg = str(err.value)
    assert "paper.yaml: 3 model(s)" in msg
    assert f"generator.checkpoint: file not found: {tmp_path / 'nope.pt'}" in msg
    assert "guidance.model" in msg and "hf download CompVis/stable-diffusion-v1-4" in msg
    assert "guidance.text_encoder" in msg and "openai/clip-vit-large-patch14" in msg


def test_nada_reports_missing_openai_clip_weights(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    cfg = validate_config({"prompt": "a dog", "method": "nada", "generator": {"checkpoint": str(tiny_models["generator"])}})
    problems = model_problems(cfg)
    assert len(problems) == 2 and problems[0].startswith("nada.clip_models.0") and "ViT-B-32" in problems[0]


def test_cli_fails_fast_on_the_paper_config(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trainables", "adapt", "--config",
                           "sweeps/paper/base/ffhq_1024.yaml"], cwd=REPO, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)},
                          timeout=120)
    assert proc.returncode == 2
    assert "stylegan2-ffhq-config-f.pt" in proc.stderr and "CompVis/stable-diffusion-v1-4" in proc.stderr
