"""`python -m pocket build`: train every stand-in model from fixed seeds and fixed step counts.

Stages and their dependencies (independent chains run as parallel processes, one torch thread each):
    judge -> stylegan2            (StyleGAN2 regression uses the judge's features when present)
    vae -> pool -> decoder -> unet   (pocket-SD; decoder = decoder-only fine-tune, encoder frozen)
    clip
    eg3d                          (random-weight pocket EG3D: the 3D path's plumbing, no training)
Each stage is also runnable alone: `python -m pocket build --only unet`.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from .common import log

STAGES = ["judge", "vae", "pool", "decoder", "unet", "clip", "stylegan2", "eg3d"]
CHAINS = [["judge", "stylegan2"], ["vae", "pool", "decoder", "unet"], ["clip", "eg3d"]]
POCKET_EG3D = Path(__file__).resolve().parent / "models" / "eg3d" / "pocket-eg3d.pt"


def run_stage(name: str) -> None:
    if name == "judge":
        from .judge import train
        train()
    elif name == "vae":
        from .sd import train_vae
        train_vae()
    elif name == "pool":
        from .sd import encode_pool
        encode_pool()
    elif name == "decoder":
        from .sd import finetune_decoder
        finetune_decoder(seed=8)      # rounds of 1200 steps, added one by one while colours stayed washed
        finetune_decoder(seed=9)      # out; the third adds latent noise so that sampler errors decode sanely
        finetune_decoder(seed=10, latent_noise=0.3)
    elif name == "unet":
        from .common import SD_DIR
        from .sd import train_unet
        train_unet()                  # 1500 steps from scratch, then 1000 more (added after the first
        train_unet(steps=1000, seed=5, lr=1e-3, init_from=SD_DIR, record_as="unet_continued")  # was weak)
    elif name == "clip":
        from .clip import train
        train()
    elif name == "stylegan2":
        from .stylegan import train
        train()
    elif name == "eg3d":
        from trainables.generators.eg3d import build_pocket_eg3d, save_eg3d

        POCKET_EG3D.parent.mkdir(parents=True, exist_ok=True)
        save_eg3d(build_pocket_eg3d(seed=0), POCKET_EG3D)
        log("eg3d", f"saved {POCKET_EG3D}")
    else:
        raise SystemExit(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")


def build(only: list[str] | None = None, parallel: bool = True, log_dir: Path = Path("/tmp/pocket-logs")) -> None:
    t0 = time.time()
    if only:
        for name in only:
            run_stage(name)
        return
    if not parallel:
        for chain in CHAINS:
            for name in chain:
                run_stage(name)
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for chain in CHAINS:
        cmd = " && ".join(f"{sys.executable} -m pocket build --only {n} > {log_dir / n}.log 2>&1" for n in chain)
        log("build", f"chain: {' -> '.join(chain)} (logs in {log_dir})")
        procs.append((chain, subprocess.Popen(cmd, shell=True)))
    failed = [chain for chain, p in procs if p.wait() != 0]
    log("build", f"done in {time.time() - t0:.0f} s" + (f"; FAILED chains: {failed}" if failed else ""))
    if failed:
        raise SystemExit(1)
