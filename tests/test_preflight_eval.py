"""Preflight of the evaluation and resource sanity, before any trial trains:

- a pocket metric plugin refuses a prompt it cannot score, and a sweep with such a prompt is refused at
  validation (python -m sweeps validate), naming the prompt and what the plugin accepts;
- missing Inception / CLIP / LPIPS weights (and a missing FID reference) are listed together before any
  trial starts (`run` creates nothing);
- `train.batch_size: 100000000` is refused when the sweep file is loaded, naming the field and the fix.
clean-fid's Inception path is hard-coded (/tmp/inception-2015-12-05.pt); the tests point the module constant
at a tmp path so they do not depend on whether this machine has the file.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from sweeps.spec import MissingModelError, SweepError, check_models, load_sweep

REPO = Path(__file__).resolve().parents[1]
POCKET_CLIP = {"name": str(REPO / "pocket/models/clip/pocket-clip.json"),
               "pretrained": str(REPO / "pocket/models/clip/open_clip_model.safetensors")}


def _pocket_base(prompt: str = "a red circle") -> dict:
    return {"method": "nada", "prompt": prompt, "source_prompt": "a circle",
            "generator": {"checkpoint": str(REPO / "pocket/models/stylegan2/pocket-circles-32.pt")},
            "guidance": {"model": str(REPO / "pocket/models/sd"), "text_encoder": None, "image_size": 32},
            "nada": {"clip_models": [POCKET_CLIP], "templates": "none"},
            "train": {"iterations": 2, "device": "cpu"}}


def _pocket_eval() -> dict:
    return {"num_samples": 16, "image_size": None, "device": "cpu",
            "fid": {"enabled": False, "feature_extractor": "pocket.metrics:judge_features"},
            "clip": {"models": [POCKET_CLIP]},
            "diversity": {"lpips": {"enabled": False}, "feature": {"enabled": True}},
            "extra_metrics": ["pocket.metrics:prompt_accuracy", "pocket.metrics:attribute_preservation",
                              "pocket.metrics:ground_truth_fid"]}


def _write(tmp: Path, spec: dict, name: str = "sweep.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_pocket_plugins_accept_only_prompts_the_world_can_render():
    from pocket import metrics, world

    for fn in (metrics.prompt_accuracy, metrics.attribute_preservation, metrics.ground_truth_fid):
        fn.check_prompts(["a red circle", "A  Red Circle"])    # catalogue lookup ignores case and spacing
    with pytest.raises(ValueError) as err:
        metrics.prompt_accuracy.check_prompts(["a red circle", "a purple giraffe", "a dog"])
    msg = str(err.value)
    assert "'a purple giraffe': unknown word 'giraffe'" in msg and "'a dog': unknown word 'dog'" in msg
    assert all(f"{attr}: " in msg.split("accepted:")[1] for attr in world.ATTRS)   # the vocabulary it accepts
    assert "'a red circle'," not in msg.split("accepted:")[0]           # the known prompt is not blamed


def test_sweep_with_a_prompt_the_pocket_plugins_cannot_score_is_refused(tmp_path):
    spec = {"name": "off-catalogue", "base": _pocket_base(),
            "grid": {"prompt": ["a red circle", "a purple giraffe"]}, "evaluation": _pocket_eval(),
            "storage_path": str(tmp_path / "st")}
    path = _write(tmp_path, spec)
    sweep = load_sweep(path)                 # the file itself is valid
    with pytest.raises(MissingModelError) as err:
        check_models(sweep)
    msg = str(err.value)
    assert "no trial was started" in msg
    for i, plugin in enumerate(spec["evaluation"]["extra_metrics"]):
        line = next(x for x in msg.splitlines() if f"evaluation.extra_metrics.{i}:" in x)
        assert plugin in line and "'a purple giraffe'" in line and "accepted:" in line
    assert "clip.models" not in msg and "feature_extractor" not in msg      # only the real problems

    # the CLI: validate refuses it (exit 3) with the same lines; a catalogue-only sweep passes
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "sweeps", "validate", str(path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "'a purple giraffe'" in out.stderr and "pocket.metrics:prompt_accuracy" in out.stderr
    check_models(load_sweep(_write(tmp_path, dict(spec, grid={"prompt": ["a red circle", "a square"]}), "ok.yaml")))


def test_missing_evaluation_weights_are_listed_before_any_trial(tmp_path, monkeypatch):
    import evaluation.fid as fid
    from sweeps.launcher import run_sweep

    monkeypatch.setattr(fid, "CLEANFID_INCEPTION", str(tmp_path / "tmp-inception.pt"))   # see module docstring
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch"))
    monkeypatch.setenv("DATA", str(tmp_path / "data"))
    spec = {"name": "paper-like", "base": _pocket_base(), "storage_path": str(tmp_path / "st"),
            "evaluation": {"fid": {"reference": "${DATA}/afhq/dog",
                                   "inception_path": str(tmp_path / "models" / "inception-2015-12-05.pt")}}}
    path = _write(tmp_path, spec)
    sweep = load_sweep(path)
    assert sweep.spec.evaluation.fid.reference == str(tmp_path / "data" / "afhq" / "dog")   # ${VAR} expanded
    with pytest.raises(MissingModelError) as err:
        check_models(sweep)
    lines = str(err.value).splitlines()
    assert lines[0].endswith("4 problem(s) with model references or the evaluation, so no trial was started:")

    def line(field: str) -> str:
        return next(x for x in lines if x.startswith(f"  - evaluation.{field}:"))

    assert str(tmp_path / "data" / "afhq" / "dog") in line("fid.reference")
    assert "inception-2015-12-05.pt" in line("fid.inception_path")
    assert str(tmp_path / "models" / "inception-2015-12-05.pt") in line("fid.inception_path")
    assert "'ViT-B-32'" in line("clip.models.0") and "openai" in line("clip.models.0")
    assert str(tmp_path / "empty_torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in line("diversity.lpips")

    # `run` stops at the same check: no storage, no tracking store, no Ray
    with pytest.raises(MissingModelError):
        run_sweep(path, storage=str(tmp_path / "st"))
    assert not (tmp_path / "st").exists() and not (tmp_path / "mlruns").exists()

    # with the files in place the evaluation passes its preflight
    from evaluation.config import EvalConfig
    from evaluation.preflight import evaluation_problems
    from evaluation.testing import save_random_lpips_backbone

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "inception-2015-12-05.pt").write_bytes(b"stand-in")   # only existence is checked
    (tmp_path / "data" / "afhq" / "dog").mkdir(parents=True)
    ok = EvalConfig.model_validate(sweep.spec.evaluation.model_dump() | {
        "clip": {"models": [POCKET_CLIP]},
        "diversity": {"lpips": {"backbone_path": str(save_random_lpips_backbone(tmp_path / "alex.pth"))}}})
    assert evaluation_problems(ok) == []


def test_batch_sizes_no_device_holds_are_refused(tmp_path):
    from evaluation.config import EvalConfig
    from evaluation.preflight import evaluation_problems
    from trainables.preflight import MEMORY_CEILING_BYTES, batch_floor_bytes

    # the bound, computed independently: 1e8 items x 2 renders x 3 x 32 x 32 fp32 bytes > 1 TiB
    assert batch_floor_bytes(100_000_000, 32, 2) == 100_000_000 * 2 * 3 * 32 * 32 * 4 > 2 ** 40 == MEMORY_CEILING_BYTES
    body = textwrap.dedent(f"""
        name: huge
        base:
          method: fusion
          prompt: a red circle
          generator: {{checkpoint: {REPO / 'pocket/models/stylegan2/pocket-circles-32.pt'}}}
          guidance: {{model: {REPO / 'pocket/models/sd'}, text_encoder: null, image_size: 32}}
          train:
            iterations: 2
            batch_size: 100000000
        """).lstrip()
    (tmp_path / "huge.yaml").write_text(body)
    with pytest.raises(SweepError) as err:
        load_sweep(tmp_path / "huge.yaml")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'huge.yaml'}:9: trial_000: train.batch_size: 100000000 is more than any device")
    assert f"use a batch of at most {2 ** 40 // (2 * 3 * 32 * 32 * 4)}" in msg
    # as a grid axis, the error points at the axis
    (tmp_path / "axis.yaml").write_text(body.replace("    batch_size: 100000000\n", "")
                                        + "grid:\n  train.batch_size: [4, 100000000]\n")
    with pytest.raises(SweepError, match=r"axis.yaml:10: trial_001: train.batch_size: 100000000"):
        load_sweep(tmp_path / "axis.yaml")
    # a real batch passes (the paper's 512 px critic, batch 16)
    assert load_sweep(_write(tmp_path, {"name": "ok", "base": dict(_pocket_base(), method="fusion",
                          guidance={"model": str(REPO / "pocket/models/sd"), "text_encoder": None, "image_size": 512},
                          train={"iterations": 2, "batch_size": 16})}, "ok.yaml")).trials
    # the evaluation's batch: min(batch_size, num_samples) images at image_size
    assert any(p.startswith("batch_size: 100000000 is more than any device") for p in
               evaluation_problems(EvalConfig(batch_size=10 ** 8, num_samples=10 ** 8, image_size=512, fid={"enabled": False},
                                              clip={"enabled": False}, diversity={"lpips": {"enabled": False},
                                                                                  "feature": {"enabled": False}})))
    assert evaluation_problems(EvalConfig(batch_size=10 ** 8, num_samples=2000, fid={"enabled": False},
                                          clip={"enabled": False},
                                          diversity={"lpips": {"enabled": False}, "feature": {"enabled": False}})) == []
