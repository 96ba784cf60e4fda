"""pocket-StyleGAN2: the project's StyleGAN2 (32x32) trained to generate the source domain (plain circles).

Objective: supervised regression, not a GAN (a GAN on shared CPUs is slow and fragile). The latent -> attribute
map is explicit: attributes = world.attrs_from_z(z) (uniforms from the direction of z[:, :7] -> colour,
background, size, radius, shade; centred), so every z has a known target image render(attrs_from_z(z)); the
mapping network's weights are written so that w is an explicit attribute code (one-hot colour, background,
size; radius and shade), then frozen (set_mapping), and the synthesis network is trained with L1 + MSE to reproduce the target. (A
judge-feature loss was tried and dropped: G learned to fool the judge with blobs - measured.)
The other z coordinates carry no information. Saved in the rosinality format (`save_rosinality`), loaded by
`trainables.generators.load_generator`.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.special import betaincinv

from trainables.generators import StyleGAN2, StyleGAN2Config, load_generator, save_rosinality

from . import world as W
from .common import JUDGE_DIR, STYLEGAN_PATH, log, optimizer_step, record, seed_everything, timer
from .judge import load_judge

STYLE_DIM = 32
N_MLP = 4
CHANNELS = {4: 64, 8: 64, 16: 32, 32: 16}
TORGB_INIT_SCALE = 0.1       # smaller initial ToRGB weights: start near a flat image, not random texture


def config():
    return StyleGAN2Config(size=W.RES, style_dim=STYLE_DIM, n_mlp=N_MLP, channels=dict(CHANNELS))


def targets(z: torch.Tensor) -> torch.Tensor:
    return W.to_model(W.render(W.attrs_from_z(z)))


# Steepness of the mapping's class steps (transition width 1/RAMP_SLOPE in normalised-z units). 500: the
# code is exact on 99.6% of z (50: 95.8%; the other z drew blended colours, which cost FID).
RAMP_SLOPE = 500.0


def _thresholds(n: int, d: int) -> list[float]:
    """Values of the normalised coordinate zn = z sqrt(D)/||z|| at which u crosses k/n (k = 1..n-1)."""
    a = (d - 1) / 2
    return [math.sqrt(d) * (2 * float(betaincinv(a, a, k / n)) - 1) for k in range(1, n)]


def set_mapping(g) -> None:
    """Write the mapping MLP's weights so that w is an explicit attribute code of z (nothing is learned).

    After PixelNorm, every source attribute is a step or monotone function of one normalised coordinate
    zn_i (world.z_to_uniform). Layer 1 computes A = s(zn - t) and B = A - 1 for every class threshold t and
    +-zn for radius and shade; layer 2 turns lrelu outputs into ramps, ramp = (lrelu(A) - lrelu(B) - 0.2) / 0.8
    = clamp(A, 0, 1), and ramps into one-hot class indicators, and +-zn into relu(+-zn); layers 3-4 pass on
    (all values >= 0). w = [colour one-hot (5), background one-hot (3), size one-hot (2), relu(+-zn_radius),
    relu(+-zn_shade), 0 ...]. A mapping learned from random init (jointly, or regressed onto this code)
    was too slow / inexact on the CPU budget (measured), so the synthesis gets this code.
    """
    d = g.cfg.style_dim
    layers = [m for m in g.style if hasattr(m, "weight")]
    assert len(layers) >= 2
    steps = [(0, len(W.COLOURS)), (1, len(W.BACKGROUNDS)), (2, len(W.SIZES))]    # (u index, classes)
    w1, b1 = torch.zeros(d, d), torch.zeros(d)
    w2, b2 = torch.zeros(d, d), torch.zeros(d)
    unit, out = 0, 0
    for coord, n in steps:
        ramps = []
        for t in _thresholds(n, d):
            w1[unit, coord], b1[unit] = RAMP_SLOPE, -RAMP_SLOPE * t            # A
            w1[unit + 1, coord], b1[unit + 1] = RAMP_SLOPE, -RAMP_SLOPE * t - 1  # B = A - 1
            ramps.append((unit, unit + 1))
            unit += 2
        for k in range(n):       # indicator_k = ramp_{k-1} - ramp_k (ramp_{-1} = 1, ramp_{n-1} = 0)
            for sign, j in ((1.0, k - 1), (-1.0, k)):
                if j < 0:
                    b2[out] += sign * 1.0
                elif j < len(ramps):
                    ua, ub = ramps[j]
                    w2[out, ua] += sign / 0.8
                    w2[out, ub] -= sign / 0.8
                    b2[out] -= sign * 0.2 / 0.8
            out += 1
    for coord in (3, 6):        # radius, shade: relu(+zn), relu(-zn) via x = (lrelu(x) - lrelu(-x)) / 1.2
        p, m = unit, unit + 1
        w1[p, coord], w1[m, coord] = 1.0, -1.0
        unit += 2
        for sign in (1.0, -1.0):
            # relu(sign x) = (lrelu(sign x) - 0.2 sign x) / 0.8
            own, other = (p, m) if sign > 0 else (m, p)
            w2[out, own] += 1 / 0.8 - 0.2 / (0.8 * 1.2)
            w2[out, other] += 0.2 / (0.8 * 1.2)
            out += 1
    with torch.no_grad():
        mats = [(w1, b1), (w2, b2)] + [(torch.eye(d), torch.zeros(d))] * (len(layers) - 2)
        for layer, (wm, bm) in zip(layers, mats):
            layer.weight.copy_(wm / math.sqrt(2) / layer.scale)      # /sqrt2: the fused lrelu's gain
            layer.bias.copy_(bm / math.sqrt(2) / layer.lr_mul)
    g.style.requires_grad_(False)


def attribute_code(z: torch.Tensor) -> torch.Tensor:
    """What set_mapping's w should be for z (checked by the build and the tests)."""
    a = W.attrs_from_z(z)
    zn = z / z.pow(2).mean(1, keepdim=True).sqrt()
    code = torch.zeros(z.shape[0], z.shape[1])
    r = torch.arange(z.shape[0])
    code[r, a.colour] = 1
    code[r, len(W.COLOURS) + a.background] = 1
    code[r, len(W.COLOURS) + len(W.BACKGROUNDS) + a.size] = 1
    code[:, 10], code[:, 11] = zn[:, 3].clamp(min=0), (-zn[:, 3]).clamp(min=0)
    code[:, 12], code[:, 13] = zn[:, 6].clamp(min=0), (-zn[:, 6]).clamp(min=0)
    return code


def mapping_code_accuracy(g, n: int = 4096, seed: int = 7) -> float:
    with torch.no_grad():
        z = torch.randn(n, g.cfg.style_dim, generator=torch.Generator().manual_seed(seed))
        w, c = g.mapping(z), attribute_code(z)
    return ((w - c).abs().amax(1) < 0.05).float().mean().item()


def train(steps: int = 5000, batch_size: int = 16, seed: int = 6, lr: float = 2e-3, feat_weight: float = 0.0,
          out: Path = STYLEGAN_PATH, init_from: Path | None = None, record_as: str = "stylegan2"):
    seed_everything(seed)
    g = StyleGAN2(config()) if init_from is None else load_generator(init_from)   # continue a previous stage
    set_mapping(g)
    code_acc = mapping_code_accuracy(g)
    log("stylegan2", f"mapping: w equals the attribute code (max error < 0.05) on {code_acc:.4f} of z")
    with torch.no_grad():
        for name, p in g.named_parameters():
            if init_from is None and "to_rgb" in name and name.endswith("conv.weight"):
                p.mul_(TORGB_INIT_SCALE)
    judge = load_judge() if feat_weight > 0 and (JUDGE_DIR / "model.safetensors").exists() else None
    params = [p for p in g.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    with timer() as t:
        for step in range(steps):
            z = torch.randn(batch_size, STYLE_DIM, generator=gen)
            y = targets(z)
            x = g(z, noise_mode="none")
            rec = F.l1_loss(x, y) + F.mse_loss(x, y)
            loss = rec
            if judge is not None:
                loss = loss + feat_weight * F.mse_loss(judge.features(x), judge.features(y))
            optimizer_step(loss, opt, sched)
            if step % 100 == 0 or step == steps - 1:
                log("stylegan2", f"step {step} loss {loss.item():.4f} rec {rec.item():.4f}")
    g.eval()
    with torch.no_grad():
        g.set_latent_avg(g.mean_latent(4096, generator=torch.Generator().manual_seed(0)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_rosinality(g, out)
    log("stylegan2", f"saved {out} ({t['seconds']} s)")
    record(record_as, params=sum(p.numel() for p in g.parameters()), steps=steps, batch=batch_size,
           seconds=t["seconds"], final_loss=loss.item(), final_rec=rec.item(),
           objective="mapping set to an explicit attribute code, synthesis L1+MSE regression",
           mapping_code_accuracy=code_acc, judge_feature_loss=judge is not None)
    return g
