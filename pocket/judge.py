"""The attribute judge: a small CNN that reads every world attribute off a 32x32 image.

Used for prompt accuracy, attribute preservation, in-domain checks and as the pocket FID feature extractor
(its 128-d penultimate features). Trained on the whole world plus hard negatives (distorted shapes:
ellipses, rectangles, wobbly circles, squircles, squashed triangles -> shape class "other"), so "circle"
means a circle, not any round blob.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from . import world as W
from .common import JUDGE_DIR, log, optimizer_step, record, seed_everything, timer

HEADS = {"shape": len(W.SHAPES) + 1, "colour": len(W.COLOURS), "background": len(W.BACKGROUNDS),
         "pattern": len(W.PATTERNS), "size": len(W.SIZES)}
FEATURE_DIM = 128


class Judge(nn.Module):
    """x [B,3,32,32] in [-1,1] -> logits per attribute, centre (x, y) / RES, and penultimate features."""

    def __init__(self, width: int = 32):
        super().__init__()
        c = width

        def block(i, o, s):
            return nn.Sequential(nn.Conv2d(i, o, 3, s, 1), nn.GroupNorm(8, o), nn.SiLU())

        self.body = nn.Sequential(block(3, c, 1), block(c, c, 2),            # 16x16
                                  block(c, 2 * c, 1), block(2 * c, 2 * c, 2),  # 8x8
                                  block(2 * c, 4 * c, 2))                      # 4x4
        self.fc = nn.Linear(4 * c * 16, FEATURE_DIM)
        self.heads = nn.ModuleDict({k: nn.Linear(FEATURE_DIM, n) for k, n in HEADS.items()})
        self.pos = nn.Linear(FEATURE_DIM, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != W.RES:
            x = F.interpolate(x, size=(W.RES, W.RES), mode="bilinear", antialias=True, align_corners=False)
        return F.silu(self.fc(self.body(x).flatten(1)))            # [B, 128]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        out = {k: head(h) for k, head in self.heads.items()}
        out["pos"] = self.pos(h)
        return out

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
        """Class ids per attribute (and centre in pixels) for images in [-1,1]."""
        outs = [self(x[i:i + batch]) for i in range(0, len(x), batch)]
        pred = {k: torch.cat([o[k] for o in outs]).argmax(1) for k in HEADS}
        pred["pos"] = torch.cat([o["pos"] for o in outs]) * W.RES
        return pred


def load_judge(path: str | Path = JUDGE_DIR) -> Judge:
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    j = Judge(width=cfg["width"])
    j.load_state_dict(load_file(str(path / "model.safetensors")))
    return j.eval().requires_grad_(False)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mild corruptions generated images show: pixel noise and a slight blur (x in [-1,1])."""
    b = x.shape[0]
    sigma = torch.rand(b, 1, 1, 1, generator=g) * 0.08
    x = x + sigma * torch.randn(x.shape, generator=g)
    blur = torch.rand(b, generator=g) < 0.3
    if blur.any():
        k = torch.tensor([0.25, 0.5, 0.25])
        k2 = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k2, groups=3)
    return x


def batch(n: int, seed: int, hard_negatives: float = 0.25):
    a = W.sample_world(n, seed, hard_negatives=hard_negatives)
    x = W.to_model(W.render(a))
    cx, cy = a.centre()
    return x, a, torch.stack([cx, cy], 1) / W.RES


def loss_fn(out, a, pos):
    loss = sum(F.cross_entropy(out[k], getattr(a, k)) for k in HEADS)
    return loss + 10 * F.mse_loss(out["pos"], pos)


@torch.no_grad()
def accuracy(judge: Judge, n: int = 2048, seed: int = 10_000_000, hard_negatives: float = 0.25) -> dict:
    """Held-out per-attribute accuracy on fresh world samples (seeds never used in training)."""
    x, a, pos = batch(n, seed, hard_negatives)
    pred = judge.predict(x)
    acc = {k: (pred[k] == getattr(a, k)).float().mean().item() for k in HEADS}
    acc["pos_mae_px"] = (pred["pos"] - pos * W.RES).abs().mean().item()
    return acc


def train(out_dir: Path = JUDGE_DIR, steps: int = 1200, batch_size: int = 96, seed: int = 1, lr: float = 2e-3,
          eval_n: int = 2048):
    seed_everything(seed)
    judge = Judge()
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    with timer() as t:
        for step in range(steps):
            x, a, pos = batch(batch_size, seed * 1_000_003 + step)
            loss = loss_fn(judge(augment(x, g)), a, pos)
            optimizer_step(loss, opt, sched)
            if step % 200 == 0 or step == steps - 1:
                log("judge", f"step {step} loss {loss.item():.4f}")
    judge.eval()
    acc = accuracy(judge, n=eval_n)
    log("judge", f"held-out accuracy {acc} ({t['seconds']} s)")
    save(judge, out_dir)
    record("judge", params=sum(p.numel() for p in judge.parameters()), steps=steps, batch=batch_size,
           seconds=t["seconds"], heldout_accuracy=acc)
    return judge


def save(judge: Judge, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps({"width": 32, "heads": HEADS, "feature_dim": FEATURE_DIM,
                                                     "res": W.RES}, indent=2) + "\n")
