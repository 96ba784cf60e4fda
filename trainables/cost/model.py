"""The cost of an adaptation run, measured without a GPU and without weights: one step traced under fake tensors.

    report = estimate(cfg)                 # an AdaptConfig; the architectures come from its references
    report.step_flops, report.peak_bytes, report.step_seconds("H100"), report.by_component

The step is `trainables.adaptation.step.Trainer.step` itself (the loop's code path), on modules built from their
configurations inside `FakeTensorMode`: exact shapes, FLOPs and tensor bytes, no data. What is assumed:
- architectures: a local diffusers directory or a cached hub snapshot gives the UNet/VAE configs; else the
  published configs bundled in trainables/cost/architectures/ for the hub ids there (SDXL base); otherwise
  SD 1.x's (noted in `assumptions`). The folder's layout (trainables/frozen/layouts.py) builds the critic, so an
  SDXL is traced with its pooled embedding, time ids and (fp16) upcast VAE. A generator checkpoint on disk gives its configuration (its weights are
  read once on the CPU and dropped); otherwise `generator.size` (StyleGAN2 config-f) or EG3D ffhq512-128.
- t = 250 (cost does not depend on t); both noise modes cost the same, so the trace uses the fixed buffers;
  layer selection trains the first k W+ entries (the choice itself needs data, its cost does not).
- NADA's CLIP models are real modules in uninitialised memory (open_clip moves models with .to(), which fake
  parameters refuse; built on the meta device, so no random initialisation); their activations are fake like
  everything else. Their text embeddings (setup, not counted) trace one text per model: N texts give N rows.
- the LPIPS regularizer is charged as its VGG16 feature stack on both images (LPIPS' own linear heads are
  negligible); the text encoder runs once per run and is not counted.
- the step counted is the SECOND one (Adam's state exists, as in every step after the first); it is traced
  once, with the first step's optimiser state made uncounted at its optimiser step (Adam's own lazy state
  initialisation), and a layer-selection pass traced once per process for every configuration that differs only
  in layers.k or its regularizers, or, for a one-configuration sweep on a machine with a second core, traced
  there meanwhile (`trace_selection`) and counted where it runs (`CostCounter.defer` / `fill`); the frozen
  networks are built once per process and their graph-free calls traced once per process and replayed
  (trainables/cost/memo.py) (`estimate(compose=False)` traces both steps whole, without replays: the same
  numbers, tests/test_cost_compose.py).
"""
from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import open_clip
import torch
import torchvision
from diffusers import AutoencoderKL, UNet2DConditionModel
from huggingface_hub import snapshot_download
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.utils._python_dispatch import _pop_mode_temporarily

from trainables.components import settings_key
from trainables.config import AdaptConfig
from trainables.generators.kinds import kind_for
from trainables.frozen.clip_models import LoadedClip, build_open_clip_architecture
from trainables.devices import DTYPES
from trainables.frozen.diffusion_model import FrozenDiffusion, sd_alphas_cumprod
from trainables.frozen.layouts import layout_for
from trainables.guidance.fusion import FusionGuidance
from trainables.guidance.nada import NadaGuidance, clip_dtype
from trainables.adaptation.step import Trainer
from trainables.protocols import Guidance
from trainables.registry import GUIDANCE
from trainables.cost.cache import cost_config
from trainables.cost.counter import CostCounter, Segment
from trainables.cost.memo import built_once, fake_mode, memoise, traced_once
from trainables.cost.report import CostReport
from trainables.cost.gpus import GPUS, gpu

COST_T = 250
# published architecture configs (no weights) of hub models the cost model knows without a download:
# <hub id with "/" -> "--">/{model_index.json, unet/, vae/, scheduler/}
ARCHITECTURES = Path(__file__).resolve().parent / "architectures"

# SD 1.x (CompVis/stable-diffusion-v1-4, runwayml/stable-diffusion-v1-5 and their DreamBooth fine-tunes)
SD1_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
SD1_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
               scaling_factor=0.18215)


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip warns on the root logger that no weights were loaded: that is the point here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build modules directly in `dtype` (Module.to() cannot convert fake parameters)."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(prev)


def _built_in(dtype: torch.dtype, build: Callable, *args):
    with _default_dtype(dtype):
        return build(*args)


def _cached_diffusers_root(ref: str, notes: list[str] | None = None) -> Path | None:
    """A local directory, the cached hub snapshot holding the unet/vae configs, or the bundled published configs
    of a known hub id (trainables/cost/architectures/); never downloads."""
    if Path(ref).is_dir():
        return Path(ref)
    try:
        snap = Path(snapshot_download(ref.split("@")[0], local_files_only=True,
                                      allow_patterns=["model_index.json", "unet/config.json", "vae/config.json",
                                                      "scheduler/*"]))
        if (snap / "unet" / "config.json").is_file():
            return snap
    except Exception:                          # not cached (or not a hub id): the bundled configs, or SD 1.x
        pass
    bundled = ARCHITECTURES / ref.split("@")[0].replace("/", "--")
    if (bundled / "unet" / "config.json").is_file():
        if notes is not None:
            notes.append(f"guidance.model {ref!r} is not on this machine: its published UNet/VAE configs "
                         f"(trainables/cost/architectures/{bundled.name}) used")
        return bundled
    return None


class _VggLpips(torch.nn.Module):
    """LPIPS' cost: the VGG16 feature stack (up to relu5_3) on both images, a distance per sample."""

    def __init__(self):
        super().__init__()
        self.features = torchvision.models.vgg16(weights=None).features[:30]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.features(a) - self.features(b)).square().flatten(1).mean(1)


def _fusion_guidance(cfg: AdaptConfig, counter: CostCounter, notes: list[str]) -> FusionGuidance:
    g = cfg.guidance
    dtype = torch.float32 if g.engine == "reference" else DTYPES[g.precision]
    root = _cached_diffusers_root(g.model, notes)
    layout = FrozenDiffusion
    if root is not None and (root / "unet" / "config.json").is_file():
        unet_cfg = dict(UNet2DConditionModel.load_config(root, subfolder="unet"))
        vae_cfg = dict(AutoencoderKL.load_config(root, subfolder="vae"))
        alphas, prediction = FrozenDiffusion._read_schedule(root)
        layout = layout_for(root)
    else:
        unet_cfg, vae_cfg, alphas, prediction = SD1_UNET, SD1_VAE, sd_alphas_cumprod(), "epsilon"
        notes.append(f"guidance.model {g.model!r} is not on this machine: SD 1.x's UNet/VAE assumed")
    vae_dtype = layout.vae_dtype_for(SimpleNamespace(**vae_cfg), dtype)               # SDXL fp16: an fp32 VAE
    # what builds each network (the layout sets its attention processors): built once per process (memo.py)
    built = (layout.__module__, layout.__qualname__, g.engine == "fast")
    unet_recipe = ("unet", *built, _json(unet_cfg), str(dtype))
    vae_recipe = ("vae", *built, _json(vae_cfg), str(vae_dtype))
    unet = built_once(unet_recipe, lambda: _built_in(dtype, UNet2DConditionModel.from_config, unet_cfg))
    vae = built_once(vae_recipe, lambda: _built_in(vae_dtype, AutoencoderKL.from_config, vae_cfg))
    model = layout(vae, unet, None, None, alphas, prediction, dtype=dtype, image_size=g.image_size,
                   fast=g.engine == "fast")
    for text in FusionGuidance.texts(g, cfg.prompt, cfg.source_prompt):
        model.set_embedding(text, torch.zeros(model.embedding_shape(), dtype=dtype))
    lpips = None
    if cfg.reg.lpips.weight > 0:
        recipe = ("lpips-vgg16", str(torch.get_default_dtype()))
        lpips = built_once(recipe, lambda: _VggLpips().eval().requires_grad_(False))
        counter.label(lpips, "lpips", recipe=recipe)
        notes.append("LPIPS charged as its VGG16 feature stack")
    counter.label(vae, "vae", recipe=vae_recipe)
    counter.label(unet, "unet", recipe=unet_recipe)
    guide = FusionGuidance(g, cfg.reg, "cpu", model=model, lpips=lpips)
    guide.prepare(cfg.prompt, cfg.source_prompt)
    return guide


def _nada_guidance(cfg: AdaptConfig, counter: CostCounter, notes: list[str]) -> NadaGuidance:
    models = []
    dtype = clip_dtype(cfg.nada.precision, "cuda")   # costed for the GPU a run targets
    for ref in cfg.nada.clip_models:
        with unset_fake_temporarily(), _quiet_open_clip():   # open_clip moves models with .to(), which fake
            # parameters refuse: a real one, built on the meta device and given uninitialised memory (its values
            # never reach the trace; random initialisation took ~1 s per ViT-B)
            model, _ = build_open_clip_architecture(ref.name, ref.pretrained, device="meta")
            model = model.to(dtype).to_empty(device="cpu").eval().requires_grad_(False)
        pcfg = open_clip.get_model_preprocess_cfg(model)
        size = pcfg.get("size", 224)
        size = size[0] if isinstance(size, (tuple, list)) else size
        counter.label(model, "clip", recipe=("open_clip", ref.name, ref.pretrained, str(dtype)))
        name = Path(ref.name).stem
        models.append((LoadedClip(model=model, tokenizer=open_clip.get_tokenizer(name if name in open_clip.list_models() else "ViT-B-32"),
                                  image_mean=tuple(pcfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                                  image_std=tuple(pcfg.get("std", open_clip.OPENAI_DATASET_STD)),
                                  image_size=int(size), name=name, pretrained=ref.pretrained), ref.weight))
    guide = NadaGuidance(cfg.nada, "cpu", dtype, models=models)
    guide.nudge_identical = False      # a data-dependent branch taken at most once per run (step 0)
    with _one_text_row_traced([clip for clip, _ in models]):
        guide.prepare(cfg.prompt, cfg.source_prompt)
    return guide


@contextmanager
def _one_text_row_traced(clips: list[LoadedClip]):
    """While the critic prepares its text embeddings (setup: not counted; only their shapes and bytes reach the
    count, as held state), each CLIP model encodes one text, traced, and a batch of N texts gives N such rows
    (`LoadedClip.encode_text`: N strings -> [N, D]): one text-tower trace per model instead of one per call
    (NADA's prepare makes three, two of them over every template)."""
    for clip in clips:
        row: list[torch.Tensor] = []
        encode = clip.encode_text

        def batched(texts, encode=encode, row=row):
            if not row:
                row.append(encode(texts[:1]))
            return row[0].new_empty((len(texts), *row[0].shape[1:]))
        clip.encode_text = batched
    try:
        yield
    finally:
        for clip in clips:
            del clip.encode_text                    # the instance attribute: the class's method again


# Built-in critics whose frozen networks are rebuilt from their architecture (no weights needed); any other
# registered or 'package.module:Class' method is built by its own `from_config` under fake tensors (its
# networks' weights, if it loads any from disk, must be there, or the method gives itself a classmethod
# `cost_build(cfg, counter, notes)` that builds it from architecture alone).
_ARCHITECTURE_BUILDERS = {"fusion": _fusion_guidance, "nada": _nada_guidance}


def _build_guidance(cfg: AdaptConfig, counter: CostCounter, notes: list[str]) -> Guidance:
    if cfg.method in _ARCHITECTURE_BUILDERS:
        return _ARCHITECTURE_BUILDERS[cfg.method](cfg, counter, notes)
    cls = GUIDANCE.load(cfg.method)
    build = getattr(cls, "cost_build", None)          # optional capability of a method of one's own
    guide = build(cfg, counter, notes) if build is not None else cls.from_config(cfg, "cpu")
    for name, module in vars(guide).items():          # its networks, charged under their attribute names
        if isinstance(module, torch.nn.Module):
            counter.label(module, name)
    guide.prepare(cfg.prompt, cfg.source_prompt)
    notes.append(f"method {cfg.method!r} built by its own {'cost_build' if build else 'from_config'}")
    return guide


def _precision(cfg: AdaptConfig) -> str:
    """The critic's precision: its settings' `precision` field (fp32 when it has none; the reference engine's)."""
    if cfg.method == "fusion" and cfg.guidance.engine == "reference":
        return "fp32"
    key = settings_key(GUIDANCE.declaration(cfg.method))
    return str(getattr(getattr(cfg, key), "precision", "fp32")) if key else "fp32"


def _json(data) -> str:
    return json.dumps(data, sort_keys=True, default=str)


class _RealDraws:
    """A generator kind whose per-step random draws (z, camera, EG3D's render seed) are made on real tensors:
    a host read such as `int(torch.randint(...))` cannot run on fake ones. The mapping still sees fake weights.
    Renders by a generator given a recipe (`recipes`: id -> what built it) are memoised (trainables/cost/memo.py)."""

    def __init__(self, kind, counter: CostCounter):
        self._kind = kind
        self._counter = counter
        self.recipes: dict[int, tuple] = {}

    def __getattr__(self, name: str):
        return getattr(self._kind, name)

    def step_inputs(self, *args, **kwargs):
        with unset_fake_temporarily():
            return self._kind.step_inputs(*args, **kwargs)

    def render(self, g, *args, **kwargs):
        recipe = self.recipes.get(id(g))
        if recipe is None:
            return self._kind.render(g, *args, **kwargs)
        return traced_once(self._counter, recipe, "render", lambda *a, **k: self._kind.render(g, *a, **k),
                           *args, **kwargs)


def _module_tensors(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [t for m in modules for t in list(m.parameters()) + list(m.buffers())]


def _state_tensors(obj, depth: int = 3, seen: set[int] | None = None) -> list[torch.Tensor]:
    """Tensors an object keeps outside its modules (a critic's prompt embeddings, its noise schedule): live for
    the whole run, so counted from the start rather than when a step first reads them."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth < 0 or isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, torch.nn.Module):
        return []                                   # parameters and buffers: _module_tensors
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    else:
        items = list(getattr(obj, "__dict__", {}).values())
    return [t for item in items for t in _state_tensors(item, depth - 1, seen)]


# the layer-selection passes traced in this process, by selection_key: configurations that differ only in
# layers.k or in their regularizers run the same selection work (Trainer.rank_layers), traced once;
# with the pass's number of W+ entries (a replay picks the first k, as the traced `choose` does)
_SELECTIONS: dict[str, tuple[Segment, int]] = {}


def selection_key(cfg: AdaptConfig) -> str:
    """What the layer-selection pass's work depends on: the cost configuration without layers.k and reg."""
    data = cost_config(cfg)
    data["layers"].pop("k", None)
    data.pop("reg", None)
    return _json(data)


def _wplus_count(trainer: Trainer) -> dict:
    """A dict that gets "n", the number of W+ entries the selection pass ranks, when the pass chooses."""
    sizes: dict = {}
    choose = trainer.choose
    trainer.choose = lambda movement, k: (sizes.setdefault("n", movement.numel()), choose(movement, k))[1]
    return sizes


def _compose_selection(trainer: Trainer, counter: CostCounter, key: str) -> None:
    """Trainer.rank_layers traced once per selection_key and replayed after (CostCounter.segment)."""
    rank, sizes = trainer.rank_layers, _wplus_count(trainer)

    def composed(t: int) -> list[int]:
        if key in _SELECTIONS:
            seg, n_wplus = _SELECTIONS[key]
            counter.replay(seg)
            return list(range(min(trainer.cfg.layers.k, n_wplus)))
        with counter.segment() as seg:
            chosen = rank(t)
        if seg.reusable:
            _SELECTIONS[key] = (seg, sizes["n"])
        return chosen

    trainer.rank_layers = composed


def _first_step_state(optimizer: torch.optim.Optimizer) -> None:
    """The state a first optimiser step leaves (its values do not matter here, only its tensors): Adam's own lazy
    state initialisation (`_init_group`, the first thing its step does, a tenth of its ops); any other optimiser,
    or an Adam without it, takes the whole step."""
    init = getattr(optimizer, "_init_group", None) if type(optimizer) is torch.optim.Adam else None
    if init is not None:
        try:
            for group in optimizer.param_groups:
                init(group, [], [], [], [], [], [])
            return
        except TypeError:                        # another signature (another torch): the whole step below
            pass
    optimizer.step()


def _prime_optimizer(trainer: Trainer, counter: CostCounter) -> None:
    """The counted step's optimiser step first takes, uncounted, the step a previous iteration would have taken
    (it creates the optimiser's state for the parameters that have gradients), and that state is counted as
    live since the start of the step: what the second of two traced steps counts, traced once."""
    optimizer = trainer.optimizer
    step = optimizer.step

    def primed(*args, **kwargs):
        with _pop_mode_temporarily():            # the counter (the innermost dispatch mode) off
            _first_step_state(optimizer)
        counter.hold_since_start(t for state in optimizer.state.values() for t in state.values()
                                 if isinstance(t, torch.Tensor))
        optimizer.step = step
        if args or kwargs:                       # a closure: not memoised
            return step(*args, **kwargs)
        # its work is a function of its settings and of the tensors it updates (the parameters with gradients,
        # their gradients and state): traced once per process for each such set (trainables/cost/memo.py)
        settings = _json([{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups])
        updated = [[p, p.grad, *(t for t in optimizer.state[p].values() if isinstance(t, torch.Tensor))]
                   for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        return traced_once(counter, ("optimizer", type(optimizer).__qualname__, settings), "step",
                           lambda _updated: step(), updated)

    optimizer.step = primed


@contextmanager
def _traced_trainer(cfg: AdaptConfig, t: int, notes: list[str], memo: bool = True):
    """The step's Trainer built under fake tensors with its counter: every labelled model's parameters, buffers and
    the critic's state held from the start. Yields (traced config, counter, trainer, the held weights). `memo`:
    the frozen networks' graph-free calls traced once per process (trainables/cost/memo.py)."""
    traced = cfg.model_copy(update={
        "train": cfg.train.model_copy(update={"noise_mode": "const"}),
        "layers": cfg.layers.model_copy(update={"noise_mode": "const"}),
    })
    kind = kind_for(cfg.generator)
    arch = kind.architecture(cfg.generator, notes)           # real config, read before faking
    counter = CostCounter()
    draws = _RealDraws(kind, counter)
    with warnings.catch_warnings(), fake_mode():
        warnings.simplefilter("ignore")                     # fake tensors' data_ptr deprecation chatter
        generator = ("generator", type(kind).__module__, type(kind).__qualname__, repr(arch),
                     cfg.generator.model_dump_json())
        g_frozen = built_once(generator, lambda: kind.build(arch).eval().requires_grad_(False))
        guide = _build_guidance(traced, counter, notes)
        trainer = Trainer.build(traced, draws, g_frozen, guide, torch.device("cpu"), timestep=lambda: t,
                                choose=lambda movement, k: list(range(min(k, movement.numel()))))
        counter.label(g_frozen, "generator_frozen")
        counter.label(trainer.g_train, "generator")
        if memo:
            # the trained copy is built as the frozen one; a render without a graph does the same work for any
            # trainable set (its role is in the key: its work is charged to another label)
            draws.recipes = {id(g_frozen): (*generator, "frozen"), id(trainer.g_train): (*generator, "trained")}
            for module in counter.modules:
                if id(module) in counter.recipes:
                    memoise(module, counter.recipes[id(module)], counter)
        trainer.optimizer.register_step_pre_hook(lambda *_: counter.labels.stack.append("optimizer") and None)
        trainer.optimizer.register_step_post_hook(lambda *_: counter.labels.stack.pop() and None)
        weights = _module_tensors(*counter.modules)         # every labelled model's parameters and buffers
        counter.hold(weights)
        counter.hold(_state_tensors(guide))
        try:
            yield traced, counter, trainer, weights
        finally:
            counter.close()


class _SelectionTraced(Exception):
    """Ends `trace_selection`'s step once the layer-selection pass is recorded."""


def trace_selection(cfg: AdaptConfig, t: int = COST_T) -> tuple[Segment, int]:
    """The layer-selection pass of `cfg`'s counted step, recorded as `estimate` records it (the same build, the
    step run up to the pass): its Segment and the number of W+ entries it ranks. `sweeps.cost` runs this in a
    second process while the first traces the rest of the step (`estimate(selection=...)`)."""
    with _traced_trainer(cfg, t, []) as (_, counter, trainer, _weights):
        rank, recorded = trainer.rank_layers, _wplus_count(trainer)

        def record(t_: int) -> list[int]:
            with counter.segment() as seg:
                rank(t_)
            recorded["segment"] = seg
            raise _SelectionTraced

        trainer.rank_layers = record
        counter.reset()
        with counter.counting():
            try:
                trainer.step()
            except _SelectionTraced:
                pass
    return recorded["segment"], recorded["n"]


def _defer_selection(trainer: Trainer, counter: CostCounter, places: list) -> None:
    """The counted step's layer-selection pass left to `fill` (its segment comes from `trace_selection`): the
    step goes on with the first k W+ entries, which `estimate` checks against the pass's count afterwards."""
    def deferred(t: int) -> list[int]:
        places.append(counter.defer())
        return list(range(trainer.cfg.layers.k))

    trainer.rank_layers = deferred


def estimate(cfg: AdaptConfig, gpus: tuple[str, ...] = tuple(GPUS), t: int = COST_T,
             compose: bool = True, selection: Callable[[], tuple[Segment, int]] | None = None) -> CostReport:
    """The cost of `cfg`'s second step under fake tensors (see the module docstring). compose=True traces ONE
    step with the optimiser state primed and the layer-selection pass shared (`_prime_optimizer`,
    `_compose_selection`); compose=False traces two whole steps and counts the second: the same numbers
    (tests/test_cost_compose.py), about twice the time. `selection` (composed only): a callable giving the
    pass's (Segment, W+ count) from `trace_selection`, traced elsewhere meanwhile; called after the step."""
    notes: list[str] = []
    places: list = []
    with _traced_trainer(cfg, t, notes, memo=compose) as (traced, counter, trainer, weights):
        key = selection_key(traced) if traced.layers.k > 0 else None
        if compose:
            _prime_optimizer(trainer, counter)
            if key is not None and selection is not None and key not in _SELECTIONS:
                _defer_selection(trainer, counter, places)
            elif key is not None:
                _compose_selection(trainer, counter, key)
        else:
            with counter.counting():
                trainer.step()                               # creates Adam's state
        counter.reset()
        with counter.counting():
            trainer.step()
        weight_bytes = sum(w.numel() * w.element_size() for w in weights)
    if places:                                           # the pass traced apart: counted where it ran
        seg, n_wplus = selection()
        if seg.reusable:
            _SELECTIONS[key] = (seg, n_wplus)
        if not seg.reusable or traced.layers.k > n_wplus:
            # not replayable, or fewer W+ entries than k were trained: traced again, the pass in sequence
            return estimate(cfg, gpus, t, compose)
        counter.fill(places[0], seg)
    precision = _precision(cfg)
    return CostReport(
        config_name=cfg.name, step_flops=counter.total_flops,
        by_component={k: v for k, v in counter.flops.items() if v},
        peak_bytes=counter.peak_bytes, peak_at=counter.peak_at, weight_bytes=weight_bytes, precision=precision,
        iterations=cfg.train.iterations,
        step_seconds_by_gpu={gpu(n).name: counter.roofline_s(gpu(n), precision) for n in gpus},
        assumptions=notes,
    )
