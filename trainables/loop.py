"""The adaptation loop: one StyleGAN-Fusion or StyleGAN-NADA run as a plain function (no Ray needed).

    G_frozen(w) --.                         .-- guidance.backward injects d(critic)/dx into x_train
    z -> w -> W+ -+-> G_train(w) = x_train -'    Adam(betas (0, 0.99**0.8)) steps the trainable set
Per iteration: one z batch, one timestep t (shared by SDS, regularizers and layer selection), optional
layer selection (on its own fresh z batch, as the authors' `determine_opt_layers`), one guidance backward,
one optimiser step. Both generators render with the same per-layer noise (their fixed buffers by default,
the authors' `randomize_noise=False`; or one shared fresh draw per step). Every random draw comes from
seeded generators whose states are checkpointed, so a resumed run reproduces an uninterrupted one bit for
bit on CPU. Guidance metrics stay tensors inside the step; they are read (one host sync) when delivered.
"""
from __future__ import annotations

import copy
import math
import shutil
import time
from pathlib import Path
from typing import Iterable

import torch
from tqdm.auto import tqdm

from .callbacks import AdaptResult, Callback, CallbackList, JsonlMetrics
from .checkpointing import load_train_state, restore_rng, save_train_state
from .config import AdaptConfig
from .config_io import dump_config
from .generator_kinds import generator_kind
from .grids import save_rows
from .guidance import build_guidance
from .registry import GUIDANCE
from .trainable_set import names_for_layers, rank_wplus_layers, set_trainable, synthesis_names

KEEP_CHECKPOINTS = 2


class NonFiniteGradientError(RuntimeError):
    """A NaN/Inf reached the generator's gradients; the run stops before the optimiser step."""


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={spec!r} but CUDA is not available here; use train.device=cpu or auto")
    return device


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


def _grad_norm(g: torch.nn.Module) -> torch.Tensor:
    norms = [p.grad.detach().float().norm() for p in g.parameters() if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.zeros(())


def _to_floats(metrics: dict) -> dict[str, float]:
    """The step's metrics as Python floats: the one place a step's values are read back to the host."""
    return {k: float(v) for k, v in metrics.items()}


class _StepNoise:
    """Per-layer generator noise for one step's renders.

    'const': the generators' fixed noise buffers (no generator needed). 'random': one seed drawn per step
    from the loop's noise stream; every `generator()` call returns a fresh torch.Generator on that seed, so
    the frozen and the trained render of a step see the SAME noise maps.
    """

    def __init__(self, mode: str, noise_rng: torch.Generator, device: torch.device):
        self.mode, self.device = mode, device
        self.seed = int(torch.randint(0, 2**62, (1,), generator=noise_rng)) if mode == "random" else None

    def generator(self) -> torch.Generator | None:
        return None if self.seed is None else torch.Generator(device=self.device).manual_seed(self.seed)


def _zero_unselected_grads(g: torch.nn.Module, names: set[str]) -> None:
    """The authors' Adam semantics under layer selection: every synthesis parameter without a gradient gets
    a zero one, so Adam steps it (step count +1, second moment decays, value unchanged)."""
    for name, p in g.named_parameters():
        if p.grad is None and name in names:
            p.grad = torch.zeros_like(p)


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
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    out = Path(cfg.output_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    cbs = CallbackList([JsonlMetrics(out / "metrics.jsonl"), *callbacks])

    torch.manual_seed(cfg.seed)
    rng = torch.Generator().manual_seed(cfg.seed)                     # z, t, SDS noise, selection latents
    noise_rng = torch.Generator().manual_seed(cfg.seed + 1)           # per-step seeds of per-layer noise

    kind = generator_kind(cfg.generator.kind)
    g_frozen = kind.load(cfg.generator.checkpoint).to(device).eval().requires_grad_(False)
    g_train = copy.deepcopy(g_frozen)
    set_trainable(g_train, kind.trainable_names(g_train, GUIDANCE.load(cfg.method).trainable_set, cfg.optim.freeze_bias))
    # Adam over every generator parameter; requires_grad decides which ones get gradients (and steps).
    optimizer = torch.optim.Adam(g_train.parameters(), lr=cfg.learning_rate, betas=(cfg.optim.beta1, cfg.optim.beta2))

    start = 0
    if resume_from is not None:
        state = load_train_state(resume_from, config=cfg)   # refuses a changed config unless forced
        g_train.load_state_dict(state["generator"])
        set_trainable(g_train, set(state["requires_grad"]))
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(rng, state["rng"])
        noise_rng.set_state(state["extra"]["noise_rng"].cpu())
        start = int(state["step"])

    guide = guidance if guidance is not None else prepared_guidance(cfg, device)
    sampler = _Sampler(cfg, kind, g_frozen, device)
    selection_names = synthesis_names(g_train) if cfg.layers.k > 0 and cfg.layers.unselected == "zero_grad" else set()
    cbs.on_start(start, cfg)

    metrics: dict[str, float] = {}
    bar = tqdm(range(start, cfg.train.iterations), initial=start, total=cfg.train.iterations,
               desc=f"{cfg.method}: {cfg.prompt[:40]}", disable=not progress, mininterval=1.0)
    for step in bar:
        tic = time.perf_counter()
        inputs = kind.step_inputs(g_frozen, cfg.train.batch_size, rng, cfg.train.truncation, device)
        noise = _StepNoise(cfg.train.noise_mode, noise_rng, device)
        x_frozen = None
        if getattr(guide, "needs_frozen", True):   # no frozen forward when nothing reads it (SDS alone)
            with torch.no_grad():
                x_frozen = kind.render(g_frozen, inputs, noise.mode, noise.generator())
        t = int(guide.sample_timestep(rng))

        if cfg.layers.k > 0:
            # the authors' determine_opt_layers: a fresh z batch, its own noise, SDS alone (Fusion) or the
            # global CLIP loss (NADA) at this step's t; only W+ moves, so no generator gradients are needed
            set_trainable(g_train, set())
            sel_inputs = kind.step_inputs(g_frozen, cfg.layers.batch_size, rng, cfg.layers.truncation, device)
            sel_noise = _StepNoise(cfg.layers.noise_mode, noise_rng, device).generator()  # advances per render
            chosen, movement = rank_wplus_layers(
                kind.wplus(sel_inputs),
                render=lambda codes: kind.render(g_train, kind.with_wplus(sel_inputs, codes), cfg.layers.noise_mode,
                                                 sel_noise),
                selection_backward=lambda x: guide.selection_backward(x, None, t=t, rng=rng),
                k=cfg.layers.k, iterations=cfg.layers.iterations, lr=cfg.layers.lr,
            )
            set_trainable(g_train, names_for_layers(g_train, chosen, cfg.optim.freeze_bias))

        x_train = kind.render(g_train, inputs, noise.mode, noise.generator())
        metrics = dict(guide.backward(x_train, x_frozen, t=t, rng=rng))
        _check_finite(g_train, step, t, metrics, out)
        metrics["train/grad_norm"] = _grad_norm(g_train)
        _zero_unselected_grads(g_train, selection_names)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        metrics = _to_floats(metrics)
        step_s = time.perf_counter() - tic
        metrics.update({"train/t": float(t), "perf/step_s": step_s, "perf/it_per_s": 1.0 / max(step_s, 1e-9)})
        if cfg.layers.k > 0:
            metrics["layers/chosen_mean_index"] = float(sum(chosen) / len(chosen))
        if device.type == "cuda":
            metrics["perf/gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        done = step + 1
        cbs.on_step(done, metrics)
        bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in list(metrics.items())[:3]}, refresh=False)

        if cfg.train.sample_every and done % cfg.train.sample_every == 0 and done < cfg.train.iterations:
            cbs.on_samples(done, sampler.grid(g_train, out / "samples" / f"step_{done:06d}.png"))
        if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done < cfg.train.iterations:
            ckpt = save_train_state(out / "checkpoints" / f"step_{done:06d}", step=done, generator=g_train,
                                    optimizer=optimizer, rng=rng, extra={"noise_rng": noise_rng.get_state()},
                                    config=cfg)
            _prune_checkpoints(out / "checkpoints")
            cbs.on_checkpoint(done, ckpt)
    bar.close()

    generator_path = kind.save(g_train, out / "generator.pt")
    final_grid = sampler.grid(g_train, out / "samples" / "final.png")
    cbs.on_samples(cfg.train.iterations, final_grid)
    for extra in kind.extra_artifacts(g_train, out, cfg.train.sample_seed):  # e.g. EG3D's multi-view GIF
        cbs.on_samples(cfg.train.iterations, extra)
    result = AdaptResult(generator_path=generator_path, final_grid_path=final_grid,
                         output_dir=out, steps=cfg.train.iterations,
                         metrics={k: v for k, v in metrics.items() if math.isfinite(v)})
    cbs.on_end(result)
    return result


def _prune_checkpoints(root: Path) -> None:
    for old in sorted(root.glob("step_*"))[:-KEEP_CHECKPOINTS]:
        if not old.name.endswith(".tmp"):
            shutil.rmtree(old, ignore_errors=True)
