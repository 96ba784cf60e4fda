"""`python -m pocket probe`: a quick score-distillation experiment that finds pocket Fusion/NADA settings.

Runs `trainables.adaptation.loop.adapt` on the pocket-StyleGAN2 for a few prompts and settings, then reads the adapted
generator with the judge: prompt accuracy (the prompted attributes are there), preservation (the others are
kept from G_frozen(w)) and in-domain-ness of the source. The numbers go to models/build.json ("probe")
and docs/pocket.md quotes them. The paper's CFG 100 is one of the settings tried.
"""
from __future__ import annotations

import itertools
import json
import tempfile
import time
from pathlib import Path

import torch

from trainables.config import AdaptConfig
from trainables.config_io import set_dotted
from trainables.generators import load_generator
from trainables.adaptation.loop import adapt

from . import world as W
from .common import CLIP_CONFIG, CLIP_WEIGHTS, SD_DIR, STYLEGAN_PATH, log, record
from .metrics import accuracy_of, in_domain, judge_images, preservation_of

PROBE_SAMPLES = 256


def base_config(method: str, prompt: str, out: Path, iterations: int, **over) -> dict:
    cfg = {
        "name": "pocket-probe", "method": method, "prompt": prompt, "source_prompt": W.SOURCE_PROMPT.text,
        "seed": 0, "generator": {"checkpoint": str(STYLEGAN_PATH)},
        "guidance": {"model": str(SD_DIR), "text_encoder": None, "cfg_scale": 7.5, "t_min": 20, "t_max": 500,
                     "image_size": W.RES, "precision": "fp32"},
        "nada": {"clip_models": [{"name": str(CLIP_CONFIG), "pretrained": str(CLIP_WEIGHTS)}], "templates": "none"},
        "train": {"iterations": iterations, "batch_size": 2, "sample_every": 0, "sample_count": 4,
                  "device": "cpu", "threads": 1},
        "output_dir": str(out),
    }
    for key, value in over.items():
        set_dotted(cfg, key.split("."), value)
    return cfg


@torch.no_grad()
def judge_generator(path: str | Path, prompt: str, n: int = PROBE_SAMPLES, seed: int = 99) -> dict[str, float]:
    """Prompt accuracy and preservation of an adapted generator against the frozen pocket-StyleGAN2."""
    g = load_generator(path)
    g0 = load_generator(STYLEGAN_PATH)
    z = torch.randn(n, g.cfg.style_dim, generator=torch.Generator().manual_seed(seed))
    x = (g(z, noise_mode="const").clamp(-1, 1) + 1) / 2
    x0 = (g0(z, noise_mode="const").clamp(-1, 1) + 1) / 2
    p, p0 = judge_images(x), judge_images(x0)
    out = accuracy_of(p, prompt)
    out.update(preservation_of(p0, p, prompt))
    out["pocket/source_in_domain"] = in_domain(p).float().mean().item()
    out["pocket/pixel_change"] = (x - x0).abs().mean().item()
    return {k: round(v, 4) for k, v in out.items()}


def run_one(method: str, prompt: str, iterations: int, **over) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = AdaptConfig.model_validate(base_config(method, prompt, Path(tmp), iterations, **over))
        t0 = time.time()
        result = adapt(cfg, progress=False)
        res = judge_generator(result.generator_path, prompt)
        res["seconds"] = round(time.time() - t0, 1)
    return res


def run(prompts: list[str] | None = None, iterations: int = 150, methods=("fusion", "nada"),
        cfg_scales=(7.5, 20.0, 100.0), lrs=(0.002, 0.008), fresh: bool = False, **over) -> list[dict]:
    """Every (prompt, CFG, lr) combination; `over` = extra dotted config overrides for every run (e.g.
    guidance.t_max). Rows accumulate in build.json unless `fresh` (after a rebuild of pocket-SD)."""
    torch.set_num_threads(1)
    prompts = prompts or ["a square", "a red circle", "a striped circle"]
    rows = []
    for prompt in prompts:
        if "fusion" in methods:
            for cfg_scale, lr in itertools.product(cfg_scales, lrs):
                res = run_one("fusion", prompt, iterations, **{"guidance.cfg_scale": cfg_scale, "optim.lr": lr, **over})
                rows.append({"method": "fusion", "prompt": prompt, "cfg_scale": cfg_scale, "lr": lr,
                             "iterations": iterations, **over, **res})
                log("probe", json.dumps(rows[-1]))
        if "nada" in methods:
            for lr in lrs:
                res = run_one("nada", prompt, iterations, **{"optim.lr": lr, **over})
                rows.append({"method": "nada", "prompt": prompt, "lr": lr, "iterations": iterations, **over, **res})
                log("probe", json.dumps(rows[-1]))
    record("probe", rows=rows, fresh_rows=fresh)     # appended: probes accumulate
    return rows


COLUMNS = [("method", "method"), ("prompt", "prompt"), ("cfg_scale", "CFG"), ("lr", "lr"),
           ("pocket/prompt_accuracy", "prompt acc"), ("pocket/preservation", "preservation"),
           ("pocket/source_in_domain", "source in-domain"), ("pocket/pixel_change", "pixel change")]


def markdown_table(rows: list[dict]) -> str:
    """The recorded probe rows as the markdown table docs/pocket.md quotes (`python -m pocket probe --show`)."""
    extra = sorted({k for r in rows for k in r if "." in k and not k.startswith("pocket/")})   # --set overrides
    cols = COLUMNS[:4] + [(k, k) for k in extra] + [("iterations", "iters")] + COLUMNS[4:]
    lines = ["| " + " | ".join(title for _, title in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(key, r.get(key)) for key, _ in cols) + " |")
    return "\n".join(lines)


def _cell(key: str, v) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if key.startswith("pocket/") else str(v)
