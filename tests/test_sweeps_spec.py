"""Sweep files: expansion, and one precise error (file, line, fix) per class of mistake; nothing starts."""
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
PY = sys.executable


@pytest.fixture()
def gen_ckpt(tmp_path: Path) -> Path:
    p = tmp_path / "models" / "g.pt"
    p.parent.mkdir()
    p.write_bytes(b"stand-in")  # only existence is checked at validation time
    for sub in ("unet", "vae", "scheduler"):   # the same folder doubles as a diffusers-layout reference
        (p.parent / sub).mkdir()
    return p


def write(tmp_path: Path, body: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def base_block(ckpt: Path, method: str = "fusion") -> str:
    return f"""
base:
  method: {method}
  prompt: "a dog"
  generator: {{checkpoint: {ckpt}}}
  guidance: {{model: {ckpt.parent}, text_encoder: null}}
  train: {{iterations: 3}}
"""


def error_of(path: Path) -> str:
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    return str(info.value)


def test_grid_times_zip_expansion(tmp_path, gen_ckpt):
    path = write(tmp_path, "name: s\n" + base_block(gen_ckpt) + """
grid:
  guidance.cfg_scale: [7.5, 100]
  seed: [1, 2, 3]
zip:
  - prompt: ["a dog", "a cat"]
    source_prompt: ["photo", "drawing"]
checkpoint_every: 2
""")
    sweep = load_sweep(path)
    assert len(sweep.trials) == 2 * 3 * 2
    pairs = {(t.config.prompt, t.config.source_prompt) for t in sweep.trials}
    assert pairs == {("a dog", "photo"), ("a cat", "drawing")}  # zipped, not crossed
    assert all(t.config.train.checkpoint_every == 2 for t in sweep.trials)
    assert sweep.varying == ["guidance.cfg_scale", "seed", "prompt", "source_prompt"]


def test_base_from_file_relative_to_sweep_and_env_expansion(tmp_path, gen_ckpt, monkeypatch):
    monkeypatch.setenv("MY_MODELS", str(gen_ckpt.parent))  # has unet/vae/scheduler (fixture)
    (tmp_path / "bases").mkdir()
    (tmp_path / "bases" / "b.yaml").write_text(
        "prompt: x\ngenerator: {checkpoint: \"${MY_MODELS}/g.pt\"}\nguidance: {model: \"${MY_MODELS}\", text_encoder: null}\n")
    sub = tmp_path / "sweeps"
    sub.mkdir()
    path = write(sub, "name: s\nbase: ../bases/b.yaml\ngrid: {seed: [1]}\n")
    sweep = load_sweep(path)
    assert sweep.trials[0].config.generator.checkpoint == str(gen_ckpt)
    check_models(sweep)  # all local references exist


@pytest.mark.parametrize("body, expected", [
    # unknown field, with the line and a suggestion
    ("name: s\nmax_concurent_trials: 2\n{base}", ["sweep.yaml:2", "unknown field 'max_concurent_trials'",
                                                  "max_concurrent_trials"]),
    ("name: s\n{base}resources: {{cpu: 1, gpus: 1}}\n", ["sweep.yaml:8", "unknown field 'resources.gpus'", "'gpu'"]),
    # wrong type
    ("name: s\n{base}retries: many\n", ["sweep.yaml:8", "retries", "integer"]),
    ("name: s\n{base}grid:\n  seed: 5\n", ["sweep.yaml:9", "grid.seed", "list"]),
    # empty axis
    ("name: s\n{base}grid:\n  seed: []\n", ["sweep.yaml:9", "axis 'seed' is empty"]),
    # duplicate axis values
    ("name: s\n{base}grid:\n  seed:\n    - 1\n    - 2\n    - 1\n", ["sweep.yaml:12", "repeats the value 1"]),
    ("name: s\n{base}zip:\n  - seed: [1, 1]\n    prompt: [a, a]\n", ["sweep.yaml:9", "repeats the combination"]),
    # an axis given twice: duplicate YAML key, and grid + zip
    ("name: s\n{base}grid:\n  seed: [1]\n  seed: [2]\n", ["sweep.yaml:10", "'grid.seed' is given twice",
                                                        "first at line 9"]),
    ("name: s\n{base}grid:\n  seed: [1]\nzip:\n  - seed: [2]\n", ["sweep.yaml:11", "axis 'seed' is given twice",
                                                               "sweep.yaml:9"]),
    ("name: s\n{base}grid:\n  reg.lpips: [{{weight: 1.0}}]\n  reg.lpips.weight: [1.0]\n",
     ["sweep.yaml:10", "overlaps axis 'reg.lpips'"]),
    # an axis that names no AdaptConfig field, with a suggestion
    ("name: s\n{base}grid:\n  guidance.cfg_scael: [1.0]\n", ["sweep.yaml:9", "names no AdaptConfig field",
                                                            "guidance.cfg_scale"]),
    ("name: s\n{base}grid:\n  regs.lpips.weight: [1.0]\n", ["sweep.yaml:9", "'reg'"]),
    # zip lists of different lengths
    ("name: s\n{base}zip:\n  - method: [fusion, nada]\n    optim.lr: [0.1]\n", ["sweep.yaml:9", "different lengths"]),
    # a grid point whose AdaptConfig is invalid: the line of the culprit axis
    ("name: s\n{base}grid:\n  seed: [1]\n  guidance.t_min: [10, 600]\n  guidance.t_max: [500]\n",
     ["sweep.yaml:10", "trial_001", "guidance.t_min=600", "t_min (600) must be <= t_max (500)"]),
    ("name: s\n{base}grid:\n  guidance.cfg_scale: [-1.0]\n", ["sweep.yaml:9", "greater than or equal to 0"]),
    ("name: s\n{base}grid:\n  method: [fusion, dreambooth]\n", ["sweep.yaml:9", "method", "'fusion' or 'nada'"]),
    # missing required field / missing base file / env var without default
    ("{base}grid: {{seed: [1]}}\n", ["sweep.yaml", "required field 'name' is missing"]),
    ("name: s\nbase: nowhere.yaml\n", ["sweep.yaml:2", "base config 'nowhere.yaml' not found", "relative"]),
    ("name: s\n{base}storage_path: ${{NOT_SET_ANYWHERE_42}}/x\n", ["NOT_SET_ANYWHERE_42 is not set", "export"]),
    # optuna with grid axes
    ("name: s\n{base}grid: {{seed: [1]}}\nsearch:\n  type: optuna\n  num_samples: 2\n  metric: m\n"
     "  params: {{guidance.cfg_scale: {{dist: loguniform, low: 1, high: 100}}}}\n", ["search.params"]),
    ("name: s\n{base}search: {{type: asha}}\n", ["search.metric", "missing"]),
])
def test_bad_sweep_files_name_file_line_and_fix(tmp_path, gen_ckpt, body, expected):
    path = write(tmp_path, body.format(base=base_block(gen_ckpt).lstrip("\n")))
    message = error_of(path)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in: {message}"


def test_missing_local_checkpoint_and_hub_ref_fail_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "empty_models"))
    path = write(tmp_path, """
name: s
base:
  prompt: a dog
  generator: {checkpoint: "${MODELS_DIR}/stylegan2-ffhq-config-f.pt"}
  guidance: {model: some-org/not-a-cached-model, text_encoder: null}
""")
    sweep = load_sweep(path)
    with pytest.raises(MissingModelError) as info:
        check_models(sweep)
    msg = str(info.value)
    assert "no trial was started" in msg
    assert str(tmp_path / "empty_models" / "stylegan2-ffhq-config-f.pt") in msg
    assert "some-org/not-a-cached-model" in msg and "download" in msg


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([PY, "-m", "sweeps", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=180)


def test_cli_validate_prints_trials_and_run_refuses_bad_file_without_starting(tmp_path, gen_ckpt):
    good = write(tmp_path, "name: s\n" + base_block(gen_ckpt) + "grid: {seed: [1, 2]}\nresources: {cpu: 0.5}\n",
                 "good.yaml")
    out = _cli("validate", str(good), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "2 trial(s)" in out.stdout and "trial_001" in out.stdout and "cpu=0.5" in out.stdout
    assert "cost: unknown" in out.stdout and "unrecognised file content" in out.stdout   # a stand-in checkpoint
    bad = write(tmp_path, "name: s\n" + base_block(gen_ckpt) + f"grid: {{seed: []}}\nstorage_path: {tmp_path}/st\n",
                "bad.yaml")
    out = _cli("run", str(bad), cwd=tmp_path)
    assert out.returncode == 2 and "bad.yaml:9: axis 'seed' is empty" in out.stderr
    assert not (tmp_path / "st").exists() and not (tmp_path / "mlruns").exists()  # nothing started


PAPER = sorted((REPO / "sweeps" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_sweeps_are_valid_and_fail_fast_on_missing_weights(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "models"))   # empty: the weights are not on this machine
    sweep = load_sweep(path)
    assert sweep.trials and all(t.config.train.iterations > 1 for t in sweep.trials)
    with pytest.raises(MissingModelError) as info:
        check_models(sweep)
    assert str(tmp_path / "models") in str(info.value)


def test_paper_run_fails_before_any_trial_starts(tmp_path):
    out = _cli("run", str(REPO / "sweeps" / "paper" / "afhq_cat2dog.yaml"), "--storage", str(tmp_path / "st"),
               cwd=tmp_path, env={"MODELS_DIR": str(tmp_path / "models")})
    assert out.returncode == 3, out.stderr
    assert "afhqcat_rosinality.pt" in out.stderr and "--conv-clamp none" in out.stderr and "CompVis/stable-diffusion-v1-4" in out.stderr
    assert "no trial was started" in out.stderr
    assert not (tmp_path / "st").exists() and not (tmp_path / "mlruns").exists()


def test_paper_settings_match_paper_md():
    ffhq = load_sweep(REPO / "sweeps/paper/ffhq_long_prompt.yaml")
    regs = {(t.config.reg.directional.weight, t.config.reg.reconstruction.weight, t.config.reg.lpips.weight)
            for t in ffhq.trials}
    assert regs == {(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)}
    assert {(t.config.guidance.t_min, t.config.guidance.t_max, t.config.train.iterations) for t in ffhq.trials} \
        == {(10, 500, 1001)}
    layers = load_sweep(REPO / "sweeps/paper/ffhq_layer_selection.yaml")
    assert {(t.config.layers.k, t.config.train.iterations) for t in layers.trials} == \
        {(12, 1201), (6, 3001), (3, 5001), (1, 10001)}
    assert len(layers.trials) == 12
    assert any(t.config.reg.directional.rescale and t.config.reg.directional.weight > 0 for t in layers.trials)
    cat = load_sweep(REPO / "sweeps/paper/afhq_cat2dog.yaml")
    assert {(t.config.reg.lpips.weight, t.config.reg.reconstruction.weight) for t in cat.trials} == \
        {(0, 0), (0.3, 0), (0, 0.5)}
    assert {(t.config.guidance.t_min, t.config.guidance.t_max, t.config.train.iterations) for t in cat.trials} \
        == {(10, 300, 2001)}
    nada = load_sweep(REPO / "sweeps/paper/nada_afhq.yaml")
    assert {t.config.method for t in nada.trials} == {"nada"}
    assert "photo of a dog" in {t.config.prompt for t in nada.trials}
    assert yaml.safe_load((REPO / "sweeps/paper/ffhq_long_prompt.yaml").read_text())["resources"]["gpu"] == 1


def test_run_refuses_an_entrypoint_that_does_not_import(tmp_path, gen_ckpt):
    path = write(tmp_path, "name: s\n" + base_block(gen_ckpt) + f"entrypoint: no_such_module:adapt\n"
                 f"storage_path: {tmp_path}/st\n")
    out = _cli("run", str(path), cwd=tmp_path)
    assert out.returncode == 2 and "sweep.yaml:9: entrypoint 'no_such_module:adapt' cannot be imported" in out.stderr
    assert not (tmp_path / "st").exists()


POCKET = sorted((REPO / "sweeps" / "pocket").glob("*.yaml"))


@pytest.mark.parametrize("path", POCKET, ids=[p.stem for p in POCKET])
def test_pocket_sweeps_are_valid_with_the_committed_models(path, monkeypatch):
    """Every shipped pocket sweep (table v2, the searches, ...) expands and finds every model it names: the
    pocket models are committed, so nothing is missing here."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(REPO)
    sweep = load_sweep(path)
    assert sweep.trials
    check_models(sweep)
