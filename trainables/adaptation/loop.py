"""The adaptation loop: one StyleGAN-Fusion or StyleGAN-NADA run as a plain function (no Ray needed).

    adapt(cfg, callbacks) -> AdaptResult

Around `trainables.adaptation.step.Trainer.step` (the step itself, shared with the cost model) the loop adds what a run
needs: models loaded, resume, the non-finite-gradient guard, metrics delivered to callbacks (the one host
read of a step's values), sample grids, atomic checkpoints. Every random draw comes from seeded generators
whose states are checkpointed, so a resumed run reproduces an uninterrupted one bit for bit on CPU.
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Iterable

import torch
from tqdm.auto import tqdm

from trainables.adaptation.callbacks import AdaptResult, Callback, CallbackList, JsonlMetrics
from trainables.adaptation.checkpointing import load_train_state, restore_rng, save_train_state
from trainables.config import AdaptConfig
from trainables.config_io import dump_config
from trainables.devices import resolve_device, set_cpu_threads
from trainables.generators.kinds import kind_for
from trainables.adaptation.grids import save_rows
from trainables.guidance import build_guidance
from trainables.adaptation.step import Trainer
from trainables.adaptation.trainable_set import set_trainable

KEEP_CHECKPOINTS = 2


class NonFiniteGradientError(RuntimeError):
    """A NaN/Inf reached the generator's gradients; the run stops before the optimiser step."""


def prepared_guidance(cfg: AdaptConfig, device: torch.device):
    """The critic of the configured method (frozen networks loaded, text embeddings prepared once)."""
    guide = build_guidance(cfg, device)
    guide.prepare(prompt=cfg.prompt, source_prompt=cfg.source_prompt)
    return guide


def _check_finite(g: torch.nn.Module, step: int, t: int, metrics: dict[str, float], output_dir: Path) -> None:
    grads = [(n, p.grad) for n, p in g.named_parameters() if p.grad is not None]
    if not grads or bool(torch.stack([torch.isfinite(gr).all() for _, gr in grads]).all()):   # one host sync
        return
    bad = [n for n, gr in grads if not torch.isfinite(gr).all()]
    if bad:
        metrics = _to_floats(metrics)
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise NonFiniteGradientError(
            f"step {step}: non-finite gradient in {shown} (t={t}; step metrics {metrics}). Nothing was saved "
            f"for this step; the last checkpoint under {output_dir / 'checkpoints'} is intact. Lower optim.lr "
            f"or guidance.cfg_scale, or keep guidance.latent_grad_clamp on."
        )


def _to_floats(metrics: dict) -> dict[str, float]:
    """The step's metrics as Python floats: the one place a step's values are read back to the host."""
    return {k: float(v) for k, v in metrics.items()}


class _Sampler:
    """Fixed grid latents (train.sample_seed), the frozen row rendered once."""

    def __init__(self, cfg: AdaptConfig, kind, g_frozen: torch.nn.Module, device: torch.device):
        self.kind = kind
        z = torch.randn(cfg.train.sample_count, kind.z_dim(g_frozen),
                        generator=torch.Generator().manual_seed(cfg.train.sample_seed)).to(device)
        with torch.no_grad():
            self.inputs = kind.grid_inputs(g_frozen, z, cfg.train.sample_truncation)
            self.frozen_row = kind.render_grid(g_frozen, self.inputs)

    @torch.no_grad()
    def grid(self, g_train: torch.nn.Module, path: Path) -> Path:
        return save_rows([self.frozen_row, self.kind.render_grid(g_train, self.inputs)], path)


def adapt(cfg: AdaptConfig, callbacks: Iterable[Callback] = (), resume_from: str | Path | None = None,
          guidance=None, progress: bool = True) -> AdaptResult:
    """Adapt `cfg.generator` toward `cfg.prompt`; returns where the adapted generator and grids are."""
    if cfg.train.threads:
        set_cpu_threads(cfg.train.threads)      # torch and the BLAS pools (evaluation runs in this process too)
    device = resolve_device(cfg.train.device, field="train.device")
    out = Path(cfg.output_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    cbs = CallbackList([JsonlMetrics(out / "metrics.jsonl"), *callbacks])

    torch.manual_seed(cfg.seed)
    tic_load = time.perf_counter()
    kind = kind_for(cfg.generator)
    g_frozen = kind.load(cfg.generator.checkpoint).to(device).eval().requires_grad_(False)
    guide = guidance if guidance is not None else prepared_guidance(cfg, device)
    trainer = Trainer.build(cfg, kind, g_frozen, guide, device)

    start = 0
    if resume_from is not None:
        state = load_train_state(resume_from, config=cfg)   # refuses a changed config unless forced
        trainer.g_train.load_state_dict(state["generator"])
        set_trainable(trainer.g_train, set(state["requires_grad"]))
        trainer.optimizer.load_state_dict(state["optimizer"])
        restore_rng(trainer.rng, state["rng"])
        trainer.noise_rng.set_state(state["extra"]["noise_rng"].cpu())
        start = int(state["step"])

    sampler = _Sampler(cfg, kind, g_frozen, device)
    g_train = trainer.g_train
    phases = {"load": time.perf_counter() - tic_load}      # models, guidance, resume state, grid latents
    tic_adapt = time.perf_counter()
    cbs.on_start(start, cfg)

    metrics: dict[str, float] = {}
    bar = tqdm(range(start, cfg.train.iterations), initial=start, total=cfg.train.iterations,
               desc=f"{cfg.method}: {cfg.prompt[:40]}", disable=not progress, mininterval=1.0)
    for step in bar:
        tic = time.perf_counter()
        result = trainer.step(check=lambda m, t: _check_finite(g_train, step, t, m, out))
        metrics = _to_floats(result.metrics)
        step_s = time.perf_counter() - tic
        metrics.update({"train/t": float(result.t), "perf/step_s": step_s, "perf/it_per_s": 1.0 / max(step_s, 1e-9)})
        if result.chosen is not None:
            metrics["layers/chosen_mean_index"] = float(sum(result.chosen) / len(result.chosen))
        if device.type == "cuda":
            metrics["perf/gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        done = step + 1
        cbs.on_step(done, metrics)
        bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in list(metrics.items())[:3]}, refresh=False)

        if cfg.train.sample_every and done % cfg.train.sample_every == 0 and done < cfg.train.iterations:
            cbs.on_samples(done, sampler.grid(g_train, out / "samples" / f"step_{done:06d}.png"))
        if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done < cfg.train.iterations:
            ckpt = save_train_state(out / "checkpoints" / f"step_{done:06d}", step=done, generator=g_train,
                                    optimizer=trainer.optimizer, rng=trainer.rng,
                                    extra={"noise_rng": trainer.noise_rng.get_state()}, config=cfg)
            _prune_checkpoints(out / "checkpoints")
            cbs.on_checkpoint(done, ckpt)
    bar.close()

    generator_path = kind.save(g_train, out / "generator.pt")
    final_grid = sampler.grid(g_train, out / "samples" / "final.png")
    cbs.on_samples(cfg.train.iterations, final_grid)
    for extra in kind.extra_artifacts(g_train, out, cfg.train.sample_seed):  # e.g. EG3D's multi-view GIF
        cbs.on_samples(cfg.train.iterations, extra)
    phases["adapt"] = time.perf_counter() - tic_adapt       # the steps, grids, checkpoints, the final save
    result = AdaptResult(generator_path=generator_path, final_grid_path=final_grid,
                         output_dir=out, steps=cfg.train.iterations,
                         metrics={k: v for k, v in metrics.items() if math.isfinite(v)}, phases=phases)
    cbs.on_end(result)
    return result


def _prune_checkpoints(root: Path) -> None:
    for old in sorted(root.glob("step_*"))[:-KEEP_CHECKPOINTS]:
        if not old.name.endswith(".tmp"):
            shutil.rmtree(old, ignore_errors=True)
