"""What a tracing process does once and reuses: its fake mode, its frozen networks and their calls.

    fake_mode()                            # the process's one FakeTensorMode (a deep copy keeps it)
    built_once(recipe, make)               # a frozen network, built once per recipe
    memoise(module, recipe, counter)       # its forward (and its children's) traced once, then replayed
    traced_once(counter, recipe, name, fn, *args)   # any such call (a render, the optimiser step)

A call of a frozen network that builds no autograd graph (the critic's UNet under no_grad, the VAE encoding a
frozen render, the frozen generator's render; the optimiser step, keyed by the tensors it updates) does work that is a function of what built the network and of its
inputs' metadata alone: the same aten ops, the same FLOPs and bytes, the same rise of live memory above where it
starts. So the first such call is traced and recorded (CostCounter.segment) with its outputs' shapes, and every
later call with the same key, in this step or in the next configuration traced by this process, replays the
record (CostCounter.replay) and returns fresh fake outputs of those shapes instead of dispatching the ops again.

The key: the network's recipe (what built it, given by the caller: its class and configuration, never its
identity), the method, every tensor argument's shape, strides, offset, dtype, device, requires_grad and
aliasing, every other argument's value, the label stack, grad mode, autocast and the default dtype. A call is
replayed only when its record is exact for any caller: it freed nothing it did not make, every output is a
fresh, dense, non-view tensor made inside it and requiring no grad, and its outputs are all it left alive.
Any other call runs as traced (and is never recorded again). `estimate(compose=False)`, the reference of the
composed trace's tests, uses no memo.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import wraps
from typing import Any, Callable, Hashable

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import _get_current_dispatch_mode, _pop_mode_temporarily
from torch.utils._pytree import TreeSpec, tree_flatten, tree_unflatten

from trainables.cost.counter import CostCounter, Segment

_VALUES = (type(None), bool, int, float, str, torch.dtype, torch.device, torch.layout, torch.memory_format)


@dataclass(frozen=True)
class _Record:
    segment: Segment
    spec: TreeSpec
    leaves: tuple          # per output leaf: ("tensor", shape, stride, dtype, device) or ("value", v)


# this process's records, by key; None: a call seen not to be replayable
_CALLS: dict[Hashable, _Record | None] = {}


def _signature(args: tuple, kwargs: dict) -> Hashable | None:
    leaves, spec = tree_flatten((args, kwargs))
    storages: dict[int, int] = {}
    sig: list = [str(spec)]
    for x in leaves:
        if isinstance(x, torch.Tensor):
            if not isinstance(x, FakeTensor):
                return None                        # a real tensor's values could steer the work
            alias = storages.setdefault(x.untyped_storage()._cdata, len(storages))
            sig.append((tuple(x.shape), x.stride(), x.storage_offset(), x.dtype, str(x.device), x.requires_grad,
                        x.layout, alias, x._base is not None))
        elif isinstance(x, _VALUES):
            sig.append((type(x).__name__, x))
        elif isinstance(x, torch.Generator):
            sig.append("generator")                # its state draws values, never shapes
        else:
            return None
    return tuple(sig)


def _key(counter: CostCounter, recipe: Hashable, name: str, args: tuple, kwargs: dict) -> Hashable | None:
    if _get_current_dispatch_mode() is not counter:
        return None                                # not counting (setup, or the primed optimiser step)
    sig = _signature(args, kwargs)
    if sig is None:
        return None
    return (recipe, name, sig, tuple(counter.labels.stack), torch.is_grad_enabled(),
            torch.is_autocast_enabled("cuda"), torch.is_autocast_enabled("cpu"), torch.get_default_dtype())


def _dense_bytes(t: torch.Tensor) -> int:
    if t.numel() == 0:
        return 0
    return (1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))) * t.element_size()


def _record(counter: CostCounter, seg: Segment, out: Any) -> _Record | None:
    """The record of a traced call, or None when a replay would not count exactly what it counted."""
    if seg.freed_older:
        return None
    leaves, spec = tree_flatten(out)
    described, storages, made = [], set(), 0
    for x in leaves:
        if isinstance(x, torch.Tensor):
            storage = x.untyped_storage()
            if (not isinstance(x, FakeTensor) or x.requires_grad or x._base is not None or x.storage_offset()
                    or storage._cdata in storages or storage.nbytes() != _dense_bytes(x)
                    or counter.serial(storage) <= seg.start_serial):
                return None
            storages.add(storage._cdata)
            made += storage.nbytes()
            described.append(("tensor", tuple(x.shape), x.stride(), x.dtype, x.device))
        elif isinstance(x, _VALUES):
            described.append(("value", x))
        else:
            return None
    if seg.live_rise != made:
        return None                                # it left something else alive (a cache, a buffer)
    return _Record(segment=seg, spec=spec, leaves=tuple(described))


def _replay(counter: CostCounter, record: _Record) -> Any:
    counter.replay(record.segment)
    leaves = []
    with _pop_mode_temporarily():                  # the counter off: making the outputs is no op of the step
        for kind, *described in record.leaves:
            if kind == "tensor":
                shape, stride, dtype, device = described
                leaves.append(torch.empty_strided(shape, stride, dtype=dtype, device=device))
            else:
                leaves.append(described[0])
    counter.hold(x for x in leaves if isinstance(x, torch.Tensor))
    return tree_unflatten(leaves, record.spec)


def traced_once(counter: CostCounter, recipe: Hashable, name: str, fn: Callable, *args, **kwargs) -> Any:
    """`fn(*args, **kwargs)`, traced the first time its key is seen in this process and replayed after."""
    key = _key(counter, recipe, name, args, kwargs)
    if key is None:
        return fn(*args, **kwargs)
    if key in _CALLS:
        record = _CALLS[key]
        return fn(*args, **kwargs) if record is None else _replay(counter, record)
    with counter.segment() as seg:
        out = fn(*args, **kwargs)
    _CALLS[key] = _record(counter, seg, out)
    return out


def memoise(module: torch.nn.Module, recipe: Hashable, counter: CostCounter) -> None:
    """Memoise the forward of `module` and of each of its direct children (a network's methods, such as a VAE's
    `encode`, call its children) for this counter's trace. `recipe`: what built `module` (its class and
    configuration, precision, layout), equal for two networks exactly when they were built alike."""
    for name, sub in [("", module), *module.named_children()]:
        if type(sub).forward is torch.nn.Module.forward:
            continue                               # containers (ModuleList, ModuleDict) are not called
        forward = sub.forward

        @wraps(forward)
        def call(*args, _forward=forward, _name=name or "forward", **kwargs):
            return traced_once(counter, recipe, _name, _forward, *args, **kwargs)

        # undone at the counter's close: a module built once is wrapped afresh by the next trace
        counter.until_close(_Unwrap(sub))
        sub.forward = call


class _Unwrap:
    """Restores a module's own forward (an instance attribute it had, else its class's)."""

    def __init__(self, module: torch.nn.Module):
        self.module, self.had = module, module.__dict__.get("forward")

    def remove(self) -> None:
        if self.had is None:
            self.module.__dict__.pop("forward", None)
        else:
            self.module.forward = self.had


# frozen networks built in this process, by recipe (`built_once`), and the fake mode they belong to
_BUILT: dict[Hashable, torch.nn.Module] = {}
_FAKE_MODE: list[FakeTensorMode] = []


def fake_mode() -> FakeTensorMode:
    """This process's fake tensor mode, one for every trace: a network built once (`built_once`) belongs to it.
    A deep copy of a fake tensor (Trainer.build's trained copy) keeps it too: by default `copy.deepcopy` would
    copy the mode with the tensor, and every op on a fake tensor of another mode converts it first, as if it
    were real (a metadata description and a new fake tensor per op: a third of a step's trace time on the
    trained generator's forward, backward and Adam; the same counts)."""
    if not _FAKE_MODE:
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        mode.__deepcopy__ = lambda memo: mode      # shared, never copied
        _FAKE_MODE.append(mode)
    return _FAKE_MODE[0]


def built_once(recipe: Hashable, make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The frozen network `make()` builds (under `fake_mode()`), built once per process for each recipe (a UNet
    takes ~0.3 s): later traces get the same module. Only for networks that nothing mutates (frozen, eval)."""
    if recipe not in _BUILT:
        _BUILT[recipe] = make()
    return _BUILT[recipe]
