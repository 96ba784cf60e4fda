"""One adaptation step, as the loop runs it and as the cost model traces it (one code path for both).

    G_frozen(w) --.                         .-- guidance.backward injects d(critic)/dx into x_train
    z -> w -> W+ -+-> G_train(w) = x_train -'    Adam(betas (0, 0.99**0.8)) steps the trainable set

Per step: one z batch, one timestep t (shared by SDS, regularizers and layer selection), optional layer
selection (on its own fresh z batch, as the authors' `determine_opt_layers`), one guidance backward, one
optimiser step. Both generators render with the same per-layer noise (their fixed buffers by default, the
authors' `randomize_noise=False`; or one shared fresh draw per step). Nothing here reads a value back to
the host except the timestep and the chosen layers (the `timestep` and `choose` callables, which the cost
model replaces); metrics are returned as device tensors.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch

from trainables.config import AdaptConfig
from trainables.protocols import GeneratorKind, Guidance, LayerSelectableKind, require
from trainables.registry import GUIDANCE
from trainables.adaptation.trainable_set import rank_wplus_layers, set_trainable, topk_indices


class StepNoise:
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


def zero_unselected_grads(g: torch.nn.Module, names: set[str]) -> None:
    """The authors' Adam semantics under layer selection: every synthesis parameter without a gradient gets
    a zero one, so Adam steps it (step count +1, second moment decays, value unchanged)."""
    for name, p in g.named_parameters():
        if p.grad is None and name in names:
            p.grad = torch.zeros_like(p)


def grad_norm(g: torch.nn.Module) -> torch.Tensor:
    norms = [p.grad.detach().float().norm() for p in g.parameters() if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.zeros(())


@dataclass
class StepResult:
    metrics: dict[str, torch.Tensor]      # device tensors (guidance metrics + train/grad_norm)
    t: int
    chosen: list[int] | None = None       # W+ indices trained this step (layer selection), else None


@dataclass
class Trainer:
    """The state one step needs. `build` makes the trained copy, its trainable set and its optimiser."""

    cfg: AdaptConfig
    kind: GeneratorKind                   # trainables/generators/kinds.py (the registry's generator family)
    g_frozen: torch.nn.Module
    g_train: torch.nn.Module
    guide: Guidance                       # a guidance object (trainables.guidance)
    optimizer: torch.optim.Optimizer
    rng: torch.Generator                  # z, t, SDS noise, selection latents
    noise_rng: torch.Generator            # per-step seeds of per-layer noise
    device: torch.device
    selection_names: set[str] = field(default_factory=set)
    timestep: Callable[[], int] | None = None                           # default: guide.sample_timestep(rng)
    choose: Callable[[torch.Tensor, int], list[int]] = topk_indices     # layer selection's ranking -> indices

    @classmethod
    def build(cls, cfg: AdaptConfig, kind: GeneratorKind, g_frozen: torch.nn.Module, guide: Guidance,
              device: torch.device,
              **overrides) -> "Trainer":
        require(guide, Guidance, f"method {cfg.method!r}")
        require(kind, LayerSelectableKind if cfg.layers.k > 0 else GeneratorKind, f"generator.kind {cfg.generator.kind!r}")
        g_train = copy.deepcopy(g_frozen)
        set_trainable(g_train, kind.trainable_names(g_train, GUIDANCE.load(cfg.method).trainable_set,
                                                    cfg.optim.freeze_bias))
        # Adam over every generator parameter; requires_grad decides which ones get gradients (and steps).
        optimizer = torch.optim.Adam(g_train.parameters(), lr=cfg.learning_rate,
                                     betas=(cfg.optim.beta1, cfg.optim.beta2))
        selection = kind.synthesis_names(g_train) if cfg.layers.k > 0 and cfg.layers.unselected == "zero_grad" else set()
        return cls(cfg=cfg, kind=kind, g_frozen=g_frozen, g_train=g_train, guide=guide, optimizer=optimizer,
                   rng=torch.Generator().manual_seed(cfg.seed), noise_rng=torch.Generator().manual_seed(cfg.seed + 1),
                   device=device, selection_names=selection, **overrides)

    def step(self, check: Callable[[dict[str, torch.Tensor], int], None] | None = None) -> StepResult:
        """One iteration. `check(metrics, t)` runs after the backward and before the optimiser step (the loop's
        non-finite gradient guard)."""
        cfg, kind, guide = self.cfg, self.kind, self.guide
        inputs = kind.step_inputs(self.g_frozen, cfg.train.batch_size, self.rng, cfg.train.truncation, self.device)
        noise = StepNoise(cfg.train.noise_mode, self.noise_rng, self.device)
        x_frozen = None
        if guide.needs_frozen:   # no frozen forward when nothing reads it (SDS alone)
            with torch.no_grad():
                x_frozen = kind.render(self.g_frozen, inputs, noise.mode, noise.generator())
        t = self.timestep() if self.timestep is not None else int(guide.sample_timestep(self.rng))

        chosen = self._select_layers(t) if cfg.layers.k > 0 else None
        if cfg.train.recompute_generator:
            # the critic's gradient at the image first (no generator activations alive meanwhile), then the
            # trained generator rendered again, identically, and that gradient pushed through it
            with torch.no_grad():
                x_image = kind.render(self.g_train, inputs, noise.mode, noise.generator())
            x_image.requires_grad_(True)
            metrics = dict(guide.backward(x_image, x_frozen, t=t, rng=self.rng))
            kind.render(self.g_train, inputs, noise.mode, noise.generator()).backward(x_image.grad)
        else:
            x_train = kind.render(self.g_train, inputs, noise.mode, noise.generator())
            metrics = dict(guide.backward(x_train, x_frozen, t=t, rng=self.rng))
        if check is not None:
            check(metrics, t)
        metrics["train/grad_norm"] = grad_norm(self.g_train)
        zero_unselected_grads(self.g_train, self.selection_names)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(metrics=metrics, t=t, chosen=chosen)

    def _select_layers(self, t: int) -> list[int]:
        """Rank the W+ entries (`rank_layers`), then train the chosen entries' layers."""
        chosen = self.rank_layers(t)
        set_trainable(self.g_train, self.kind.layer_names(self.g_train, chosen, self.cfg.optim.freeze_bias))
        return chosen

    def rank_layers(self, t: int) -> list[int]:
        """The authors' determine_opt_layers: a fresh z batch, its own noise, SDS alone (Fusion) or the global
        CLIP loss (NADA) at this step's t; only W+ moves, so no generator gradients are needed. Its work
        depends neither on layers.k nor on the regularizers (the cost model traces it once for such configs)."""
        cfg = self.cfg
        kind: LayerSelectableKind = self.kind      # layers.k > 0 is refused for kinds without layer_selection
        set_trainable(self.g_train, set())
        sel_inputs = kind.step_inputs(self.g_frozen, cfg.layers.batch_size, self.rng, cfg.layers.truncation, self.device)
        sel_noise = StepNoise(cfg.layers.noise_mode, self.noise_rng, self.device).generator()  # advances per render
        x_sel_frozen = None
        if self.guide.selection_needs_frozen:   # DDS: the source branch reads the frozen render
            with torch.no_grad():
                x_sel_frozen = kind.render(self.g_frozen, sel_inputs, cfg.layers.noise_mode, sel_noise)
        chosen, _ = rank_wplus_layers(
            kind.wplus(sel_inputs),
            render=lambda codes: kind.render(self.g_train, kind.with_wplus(sel_inputs, codes), cfg.layers.noise_mode,
                                             sel_noise),
            selection_backward=lambda x: self.guide.selection_backward(x, x_sel_frozen, t=t, rng=self.rng),
            k=cfg.layers.k, iterations=cfg.layers.iterations, lr=cfg.layers.lr, choose=self.choose,
        )
        return chosen
