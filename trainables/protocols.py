"""The seams between the adaptation loop and its components, as typing Protocols. Torch-free at import.

    GeneratorKind   a generator family (LayerSelectableKind: one that offers W+ for layers.k > 0) (trainables/registry.py GENERATOR_KINDS; stylegan2_kind.py, eg3d/kind.py)
    Guidance        a critic that injects gradients into a generator's output (GUIDANCE: fusion, nada)
    ScoreVariant    a score-distillation direction of the Fusion critic (SCORE_VARIANTS; guidance/variants/)

A component of your own follows the Protocol (no base class needed) and is named in a config as
'package.module:Class'. Each may declare `Settings` (a trainables.settings.StrictModel) and `settings_key`
(trainables/components.py): the config then carries its settings, validated like the built-ins'.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

Metrics = dict[str, "torch.Tensor"]   # detached device tensors; the loop reads them once per step


@runtime_checkable
class GeneratorKind(Protocol):
    """How a generator family loads, renders, trains and saves (`inputs` are the kind's own latent bundle)."""

    name: ClassVar[str]
    config_defaults: ClassVar[dict]     # config fields its runs default to (AdaptConfig._family_defaults)
    layer_selection: ClassVar[bool]     # whether it offers W+ (`wplus`/`with_wplus`) for layers.k > 0

    @staticmethod
    def recognises(path: Path) -> bool: ...            # a checkpoint of this family, decided by content
    @staticmethod
    def owns(g: Any) -> bool: ...                      # g is a generator of this family
    def load(self, path: str | Path) -> "torch.nn.Module": ...
    def save(self, g: "torch.nn.Module", path: str | Path) -> Path: ...
    def architecture(self, gen_cfg: Any, notes: list[str]) -> Any: ...   # from the checkpoint, else a stated guess
    def build(self, arch: Any) -> "torch.nn.Module": ...                  # random weights (the cost model's trace)
    def trainable_names(self, g: "torch.nn.Module", trainable_set: str, freeze_bias: bool) -> set[str]: ...
    def step_inputs(self, g_frozen: "torch.nn.Module", batch: int, rng: "torch.Generator", truncation: float,
                    device: Any) -> Any: ...
    def render(self, g: "torch.nn.Module", inputs: Any, noise_mode: str,
               noise_rng: "torch.Generator | None") -> "torch.Tensor": ...   # [B, 3, H, W] in about [-1, 1]
    def grid_inputs(self, g_frozen: "torch.nn.Module", z: "torch.Tensor", truncation: float) -> Any: ...
    def render_grid(self, g: "torch.nn.Module", inputs: Any) -> "torch.Tensor": ...
    def z_dim(self, g: "torch.nn.Module") -> int: ...
    def eval_inputs(self, g: "torch.nn.Module", z: "torch.Tensor", truncation: float, first_index: int = 0) -> Any: ...
    def extra_artifacts(self, g: "torch.nn.Module", out_dir: Path, seed: int) -> list[Path]: ...


@runtime_checkable
class RecenterableKind(GeneratorKind, Protocol):
    """A kind whose truncation centre evaluation can set to a fresh mean latent (evaluation.truncation_center:
    mean_latent, the Fusion authors' protocol); a kind without these evaluates around its own centre only."""

    def mean_latent(self, g: "torch.nn.Module", n: int, generator: "torch.Generator") -> "torch.Tensor": ...
    def set_truncation_center(self, g: "torch.nn.Module", center: "torch.Tensor") -> None: ...


class LayerSelectableKind(GeneratorKind, Protocol):
    """A kind with `layer_selection = True` also offers W+ for the paper's adaptive layer selection (layers.k)."""

    # W+ of the inputs, the inputs with another W+, the
    # parameters of chosen W+ entries, and every synthesis parameter (unfrozen while ranking)
    def wplus(self, inputs: Any) -> "torch.Tensor": ...
    def with_wplus(self, inputs: Any, wp: "torch.Tensor") -> Any: ...
    def layer_names(self, g: "torch.nn.Module", layer_indices: list[int], freeze_bias: bool) -> set[str]: ...
    def synthesis_names(self, g: "torch.nn.Module") -> set[str]: ...


@runtime_checkable
class Guidance(Protocol):
    """A frozen critic (trainables/guidance): it injects gradients, never steps an optimiser."""

    default_lr: ClassVar[float]          # optim.lr when unset
    trainable_set: ClassVar[str]         # which generator parameters the method trains (a set the kinds know)
    needs_frozen: bool                   # whether `backward` reads the frozen render (the loop skips it otherwise)
    selection_needs_frozen: bool         # whether `selection_backward` reads it (layer selection renders it then)

    @classmethod
    def from_config(cls, cfg: Any, device: Any = "cpu") -> "Guidance": ...
    def prepare(self, prompt: str, source_prompt: str | None = None) -> None: ...
    def sample_timestep(self, rng: "torch.Generator | None" = None) -> int: ...
    def backward(self, x_train: "torch.Tensor", x_frozen: "torch.Tensor | None", t: int,
                 rng: "torch.Generator | None" = None) -> Metrics: ...
    def selection_backward(self, x_train: "torch.Tensor", x_frozen: "torch.Tensor | None", t: int,
                           rng: "torch.Generator | None" = None) -> Metrics: ...


@runtime_checkable
class ScoreVariant(Protocol):
    """A score-distillation direction (trainables/guidance/variants/base.py documents rows / texts / direction)."""

    name: ClassVar[str]
    needs_frozen: ClassVar[bool]

    def rows(self, t: int) -> tuple[tuple[str, str], ...]: ...
    def texts(self, prompt: str, source_prompt: str | None) -> dict[str, str]: ...
    def direction(self, e: dict, eps: "torch.Tensor", t: int) -> "torch.Tensor": ...


def missing_members(obj: Any, protocol: type) -> list[str]:
    """The attributes and methods of `protocol` that `obj` lacks (for an error that names them)."""
    names = set()
    for klass in protocol.__mro__:
        if klass in (Protocol, object) or not getattr(klass, "_is_protocol", False):
            continue
        names |= set(getattr(klass, "__annotations__", {}))
        names |= {n for n, v in vars(klass).items() if not n.startswith("_") and callable(v) or isinstance(v, (staticmethod, classmethod))}
    return sorted(n for n in names if not n.startswith("_") and not hasattr(obj, n))


def require(obj: Any, protocol: type, what: str) -> None:
    """TypeError naming every member of `protocol` that `obj` (a component of one's own, say) lacks."""
    missing = missing_members(obj, protocol)
    if missing:
        raise TypeError(f"{what} ({type(obj).__module__}.{type(obj).__qualname__}) does not follow "
                        f"trainables.protocols.{protocol.__name__}: it lacks {', '.join(missing)}")
