"""The resume guard: a checkpoint records its config; resuming under a config that changes the result is
refused naming the changed fields (dotted path, checkpoint -> now), unless forced; fields that only place or
pace a run (trainables.adaptation.checkpointing.RESULT_NEUTRAL_FIELDS) may change freely."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO, tiny_adapt_dict
from trainables.adaptation.callbacks import Callback
from trainables.adaptation.checkpointing import (RESULT_NEUTRAL_FIELDS, ConfigChangedError, ForcedResume, load_train_state,
                                      save_train_state)
from trainables.config import flatten
from trainables.config_io import validate_config
from trainables.adaptation.loop import adapt

MODELS = {"generator": "/models/g.pt", "sd": "/models/sd", "clip_config": "c.json", "clip_weights": "c.pt"}


def _cfg(out, **over):
    return validate_config(tiny_adapt_dict(MODELS, out, **over))


def _save(tmp_path, cfg):
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(lin.parameters())
    return save_train_state(tmp_path / "ckpt", step=3, generator=lin, optimizer=opt,
                            rng=torch.Generator().manual_seed(0), config=cfg)


def _listed_fields(message: str) -> set[str]:
    return {line.strip()[2:].split(":")[0] for line in message.splitlines() if line.startswith("  - ")}


def test_changed_fields_are_refused_and_listed(tmp_path):
    ckpt = _save(tmp_path, _cfg(tmp_path / "a"))
    changed = _cfg(tmp_path / "a", guidance__cfg_scale=3.0, seed=7)
    with pytest.raises(ConfigChangedError) as err:
        load_train_state(ckpt, config=changed)
    msg = str(err.value)
    assert _listed_fields(msg) == {"guidance.cfg_scale", "seed"}, msg
    assert "guidance.cfg_scale: 7.5 -> 3.0" in msg and "seed: 42 -> 7" in msg and "--resume force" in msg
    assert str(ckpt) in msg


def test_result_neutral_fields_may_change(tmp_path):
    original = _cfg(tmp_path / "a")
    ckpt = _save(tmp_path, original)
    moved = _cfg(tmp_path / "elsewhere", name="renamed", train__device="cuda", train__threads=3,
                 train__sample_every=7, train__checkpoint_every=9)
    a, b = flatten(original), flatten(moved)
    assert {k for k in a if a[k] != b[k]} == set(RESULT_NEUTRAL_FIELDS), "the test must change every neutral field"
    assert load_train_state(ckpt, config=moved)["step"] == 3


def test_forced_resume_accepts_a_changed_config(tmp_path, caplog):
    ckpt = _save(tmp_path, _cfg(tmp_path / "a"))
    with caplog.at_level(logging.WARNING, logger="trainables.adaptation.checkpointing"):
        state = load_train_state(ForcedResume(ckpt), config=_cfg(tmp_path / "a", guidance__cfg_scale=3.0))
    assert state["step"] == 3
    assert "guidance.cfg_scale: 7.5 -> 3.0" in caplog.text   # the forced change is still said out loud


def test_checkpoint_without_a_config_record_resumes_with_a_warning(tmp_path, caplog):
    lin = torch.nn.Linear(2, 2)
    ckpt = save_train_state(tmp_path / "old", step=5, generator=lin, optimizer=torch.optim.Adam(lin.parameters()),
                            rng=torch.Generator())
    with caplog.at_level(logging.WARNING, logger="trainables.adaptation.checkpointing"):
        assert load_train_state(ckpt, config=_cfg(tmp_path / "a"))["step"] == 5
    assert "predates config records" in caplog.text


class _StopAt(Callback):
    """A crash right after the checkpoint of `step` is written."""

    def __init__(self, step):
        self.step = step

    def on_checkpoint(self, step, ckpt_dir):
        if step == self.step:
            raise KeyboardInterrupt


def test_loop_refuses_forces_and_resumes(tiny_models, one_torch_thread, tmp_path):
    def cfg(**over):
        return validate_config(tiny_adapt_dict(tiny_models, tmp_path / "run", train__iterations=4,
                                               train__checkpoint_every=2, **over))

    with pytest.raises(KeyboardInterrupt):
        adapt(cfg(), callbacks=[_StopAt(2)], progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / "step_000002"
    with pytest.raises(ConfigChangedError, match=r"guidance\.cfg_scale: 7\.5 -> 3\.0"):
        adapt(cfg(guidance__cfg_scale=3.0), resume_from=ckpt, progress=False)
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert [json.loads(l)["step"] for l in metrics.read_text().splitlines()] == [1, 2], "the refused run trained"

    forced = adapt(cfg(guidance__cfg_scale=3.0), resume_from=ForcedResume(ckpt), progress=False)
    assert forced.steps == 4
    assert [json.loads(l)["step"] for l in metrics.read_text().splitlines()] == [1, 2, 3, 4]
    forced_weights = torch.load(forced.generator_path)["g_ema"]   # same output_dir: read before it is rewritten

    same = adapt(cfg(), resume_from=ckpt, progress=False)   # unchanged config: the guard passes
    assert [json.loads(l)["step"] for l in metrics.read_text().splitlines()] == [1, 2, 3, 4, 3, 4]
    # the forced run (CFG 3) and the unchanged one (CFG 7.5) really trained under different configs
    same_weights = torch.load(same.generator_path)["g_ema"]
    assert any(not torch.equal(forced_weights[k], same_weights[k]) for k in same_weights)


def test_cli_resume_auto_refuses_a_changed_config_and_force_continues(tiny_models, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_adapt_dict(tiny_models, tmp_path / "cli", train__iterations=3,
                                                   train__checkpoint_every=2, train__threads=1)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "trainables", "adapt", "--config", str(path), "--quiet", *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    first = cli()
    assert first.returncode == 0, first.stderr[-2000:]
    assert (tmp_path / "cli" / "checkpoints" / "step_000002").is_dir()

    refused = cli("--resume", "auto", "--set", "guidance.cfg_scale=3.0")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "guidance.cfg_scale: 7.5 -> 3.0" in refused.stderr and "--resume force" in refused.stderr
    assert _listed_fields(refused.stderr) == {"guidance.cfg_scale"}, refused.stderr

    forced = cli("--resume", "force", "--set", "guidance.cfg_scale=3.0")
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert "resuming from" in forced.stderr and "step_000002" in forced.stderr

    same = cli("--resume", "auto", "--set", "train.device=cpu", "--set", "train.sample_every=1")
    assert same.returncode == 0, same.stderr[-2000:]
    steps = [json.loads(l)["step"] for l in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 3, 3], steps   # a full run, then two resumes from step 2
