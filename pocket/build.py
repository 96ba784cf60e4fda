"""`python -m pocket build`: train every stand-in model from fixed seeds and fixed step counts.

Stages and their dependencies (independent chains run as parallel processes, one torch thread each):
    judge -> stylegan2            (StyleGAN2 regression uses the judge's features when present)
    vae -> pool -> unet           (pocket-SD)
    clip
    eg3d                          (random-weight pocket EG3D: the 3D path's plumbing, no training)
    stylegan3                     (random-weight pocket StyleGAN3 T at 32 px: the SG3 path's plumbing, no training)
Each stage is also runnable alone: `python -m pocket build --only unet`.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from trainables.generators.eg3d import build_pocket_eg3d, save_eg3d
from trainables.generators.stylegan3 import build_pocket_stylegan3, save_stylegan3

from .common import STYLEGAN_PATH, log

STAGES = ["judge", "vae", "pool", "unet", "clip", "stylegan2", "eg3d", "stylegan3"]
CHAINS = [["judge", "stylegan2"], ["vae", "pool", "unet"], ["clip", "eg3d", "stylegan3"]]
POCKET_EG3D = Path(__file__).resolve().parent / "models" / "eg3d" / "pocket-eg3d.pt"
POCKET_SG3 = Path(__file__).resolve().parent / "models" / "stylegan3" / "pocket-stylegan3-t-32.pt"


def run_stage(name: str) -> None:
    if name == "judge":
        from .judge import train  # late: a stage's process loads only its own stack (diffusers ~5 s, open_clip ~4 s)
        train()
    elif name == "vae":
        from .sd import train_vae  # late: a stage's process loads only its own stack (diffusers ~5 s, open_clip ~4 s)
        train_vae()
    elif name == "pool":
        from .sd import encode_pool  # late: a stage's process loads only its own stack (diffusers ~5 s, open_clip ~4 s)
        encode_pool()
    elif name == "unet":
        from .sd import train_unet  # late: a stage's process loads only its own stack (diffusers ~5 s, open_clip ~4 s)
        train_unet()
    elif name == "clip":
        from .clip import train  # late: a stage's process loads only its own stack (diffusers ~5 s, open_clip ~4 s)
        train()
    elif name == "stylegan2":
        from .stylegan import train  # late: a stage's process loads only its own stack (diffusers ~5 s, open_clip ~4 s)
        train()                       # 5000 x 16 from scratch, then two rounds of 6000 x 32 at lower lrs
        train(steps=6000, batch_size=32, seed=16, lr=1e-3, init_from=STYLEGAN_PATH,   # (added for the FID bar)
              record_as="stylegan2_continued")
        train(steps=6000, batch_size=32, seed=26, lr=5e-4, init_from=STYLEGAN_PATH,
              record_as="stylegan2_continued2")
    elif name == "eg3d":
        POCKET_EG3D.parent.mkdir(parents=True, exist_ok=True)
        save_eg3d(build_pocket_eg3d(seed=0), POCKET_EG3D)
        log("eg3d", f"saved {POCKET_EG3D}")
    elif name == "stylegan3":
        POCKET_SG3.parent.mkdir(parents=True, exist_ok=True)
        save_stylegan3(build_pocket_stylegan3(seed=0), POCKET_SG3)
        log("stylegan3", f"saved {POCKET_SG3}")
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
