"""The pocket world's personalised critic: the LoRA trainer (`python -m pocket lora`) and the look metric.

The trainer runs a few steps here (the committed LoRA took 400; docs/pocket.md): its file must pass the
critic's header check against pocket-SD, load through `guidance.lora` and move the critic's prediction for the
phrase, and `look.json` must name the file's sha256. The look metric is checked on rendered images, where the
answer is known: renders of the look score (nearly) 1 (the judge's measured per-attribute accuracy is >= 0.99,
docs/pocket.md "Quality bars"), renders of the source domain (plain circles) score 0 on the look's shape.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from pocket import world as W
from pocket.lora import LoraTrainConfig, look_images, train_lora
from pocket.metrics import LookAccuracy, LookSettings
from pocket.refs import save_folder
from trainables.config import AdaptConfig
from trainables.frozen.lora_check import lora_problems
from trainables.guidance.fusion import FusionGuidance

REPO = Path(__file__).resolve().parents[1]
SD = REPO / "pocket" / "models" / "sd"
LOOK = "a purple striped star on a gray background"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_look_images_show_the_look():
    x = look_images(LOOK, 4, seed=0)
    assert x.shape == (4, 3, W.RES, W.RES) and x.min() >= -1 and x.max() <= 1
    twin = W.render(W.sample_source(4, 0).with_(shape="star", colour="purple", pattern="striped", background="gray"))
    assert torch.equal(x, W.to_model(twin))


def test_trainer_writes_a_lora_the_critic_loads(tmp_path):
    cfg = LoraTrainConfig(steps=3, images=2, batch_size=2, lr=1e-2, check_samples=0, out=tmp_path / "look")
    path = train_lora(cfg)
    assert lora_problems(path, SD / "unet", SD / "text_encoder") == []
    record = json.loads((tmp_path / "look" / "look.json").read_text())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["spec"] == {"shape": "star", "colour": "purple", "background": "gray", "pattern": "striped"}

    def critic(lora):
        adapt = AdaptConfig.model_validate(dict(
            method="fusion", prompt="sks shape", generator=dict(checkpoint="unused.pt"),
            guidance=dict(model=str(SD), text_encoder=None, image_size=32, lora=lora)))
        guide = FusionGuidance(adapt.guidance, adapt.reg, "cpu")
        emb = guide.model.text_embeddings("sks shape")
        z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        return guide.model.predict_eps(z, 100, emb.cond, emb.uncond, 7.5)

    moved = (critic([{"path": str(path)}]) - critic([])).abs().max().item()
    assert moved > 1e-4                     # 3 Adam steps at lr 1e-2 move B off zero: the adapter is not a no-op


def test_look_metric_on_renders(tmp_path):
    with pytest.raises(ValueError, match="unknown word 'sks'"):
        LookSettings(look="a sks shape")
    look = save_folder((look_images(LOOK, 64, seed=1) + 1) / 2, tmp_path / "look")
    source = save_folder(W.render(W.sample_source(64, 1)), tmp_path / "source")

    class Ctx:                             # what LookAccuracy reads of an evaluation context
        def __init__(self, samples: Path):
            self.samples_dir = samples

        def source_samples_dir(self) -> Path:
            return source

    settings = LookSettings(look=LOOK)
    on_look = LookAccuracy().compute(Ctx(look), settings)
    on_source = LookAccuracy().compute(Ctx(source), settings)
    assert on_look["pocket/look_accuracy"] >= 0.95
    assert all(on_look[f"pocket/look_acc_{a}"] >= 0.95 for a in ("shape", "colour", "background", "pattern"))
    assert on_source["pocket/look_acc_shape"] == 0.0 and on_source["pocket/look_accuracy"] == 0.0
    assert on_look["pocket/look_fid_gt"] < on_source["pocket/look_fid_gt"]
    assert on_look["pocket/look_preservation"] >= 0.95      # size kept: the look's renders are the source's twins
    declared = {k.key.removeprefix("eval/"): k for k in LookAccuracy.keys}
    assert set(on_look) <= set(declared)                      # per-attribute keys: the look's attributes only
    assert {name for name, k in declared.items() if k.required} <= set(on_look)
