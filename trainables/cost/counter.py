"""Counting a traced step: FLOPs per component and direction, bytes moved per op, live bytes and their peak.

Runs inside `FakeTensorMode` (no data, no device, exact shapes). Two modes cooperate:
    _Stamp (TorchFunctionMode, above autograd)   tags every autograd node an op creates with the component
                                                 that ran it (module hooks keep a label stack)
    CostCounter (TorchDispatchMode, below)       counts each aten op: FLOPs (torch's formulas, fixed for
                                                 grouped-conv backward and CPU flash attention), bytes in and
                                                 out, and the storages alive; a backward op is charged to the
                                                 component whose forward created its autograd node.
Live bytes: every storage seen (module tensors given at the start, op outputs after) is held by a weak
reference whose callback subtracts its bytes when it is freed; the peak is sampled after each op (as torch's
own MemTracker does it, without its module bookkeeping, which refuses a module called twice in a step).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
import weakref
from contextlib import contextmanager
from functools import partial
from math import prod
from typing import Any, Iterable, Iterator

import torch
from torch.distributed._tools.common_utils import get_untyped_storages
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry
from torch.utils.weak import WeakIdKeyDictionary

from trainables.cost.gpus import GPU

aten = torch.ops.aten
OTHER = "other"


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(t.shape)


def _conv_forward_flops(x_shape, w_shape, out_shape, transposed: bool) -> int:
    """2 * (output or input points) * kernel * batch * c_out * (c_in per group): exact for grouped convs."""
    points = prod((x_shape if transposed else out_shape)[2:])
    c_out, c_in_per_group, *k = w_shape
    return 2 * points * prod(k) * x_shape[0] * c_out * c_in_per_group


def _conv_backward(grad_out, x, w, _bias, _stride, _padding, _dilation, transposed, _out_pad, _groups,
                   output_mask, *args, **kwargs) -> int:
    # grad_input and grad_weight each cost one forward convolution (torch's own formula ignores `groups`
    # and over-counts StyleGAN2's per-sample modulated convolutions by the batch size)
    fwd = _conv_forward_flops(_shape(x), _shape(w), _shape(grad_out), bool(transposed))
    return fwd * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _sdpa_forward(q, k, v, *args, **kwargs) -> int:
    b, h, s_q, d = _shape(q)
    s_k, d_v = _shape(k)[-2], _shape(v)[-1]
    return 2 * b * h * s_q * s_k * (d + d_v)          # Q K^T and P V


def _sdpa_backward(grad_out, q, k, v, *args, **kwargs) -> int:
    return 5 * _sdpa_forward(q, k, v) // 2            # dV, dP, dQ, dK (+ the recomputed P): 2.5 x forward


_EXTRA_FORMULAS = {
    aten.convolution_backward: _conv_backward,
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_forward,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward,
}


def op_flops(func, args, kwargs, out) -> int:
    packet = func._overloadpacket
    if packet in _EXTRA_FORMULAS:
        return int(_EXTRA_FORMULAS[packet](*args, **kwargs))
    formula = flop_registry.get(packet)
    return int(formula(*args, **kwargs, out_val=out)) if formula is not None else 0


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _op_tensors(args: tuple, kwargs: dict, out: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """An aten op's input and output tensors: its arguments are tensors, lists of tensors (Tensor[], Tensor?[]) or
    other values, never deeper (the general pytree walk, `_tensors`, for anything else)."""
    inputs: list[torch.Tensor] = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            inputs.append(a)
        elif isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, torch.Tensor):
                    inputs.append(b)
                elif isinstance(b, (list, tuple, dict)):
                    return _tensors((args, kwargs)), _tensors(out)
        elif isinstance(a, dict):
            return _tensors((args, kwargs)), _tensors(out)
    if isinstance(out, torch.Tensor):
        return inputs, [out]
    if isinstance(out, (list, tuple)) and all(not isinstance(o, (list, tuple, dict)) for o in out):
        return inputs, [o for o in out if isinstance(o, torch.Tensor)]
    return inputs, _tensors(out)


class _Labels:
    """The component label stack, pushed and popped by forward hooks on the labelled modules."""

    def __init__(self):
        self.stack: list[str] = []

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else OTHER


class _Stamp(TorchFunctionMode):
    """Records on every autograd node which component's forward created it."""

    def __init__(self, labels: _Labels):
        super().__init__()
        self.labels = labels

    def __torch_function__(self, func, types, args=(), kwargs=None):
        grad = torch.is_grad_enabled()
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            outputs = [out]
        elif not grad and not torch.is_grad_enabled():
            return out                          # no autograd node was made (and no tree to walk)
        else:
            outputs = _tensors(out)
        label = self.labels.current
        for t in outputs:
            node = t.grad_fn
            if node is not None and "cost_label" not in node.metadata:
                node.metadata["cost_label"] = label
        return out


@dataclass
class Segment:
    """A recorded stretch of counted work (CostCounter.segment / replay)."""

    flops: dict[str, int] = field(default_factory=dict)
    ops: list[tuple[int, int, bool]] = field(default_factory=list)
    peak_rise: int = 0
    peak_at: str = ""
    reusable: bool = False
    live_rise: int = 0       # live bytes at its end minus at its start (what it left alive)
    start_serial: int = 0    # storages first seen after this serial were made inside it
    freed_older: bool = False  # it freed a storage made before it began


@dataclass
class Deferred:
    """Where a segment not yet known would have been replayed (CostCounter.defer / fill)."""

    live: int                # live bytes there
    peak_before: int         # the peak reached before it
    op_index: int            # its place in the op list (the roofline's sum runs in op order)
    shift: int = 0           # bytes counted as live since the start afterwards (hold_since_start)


class CostCounter(TorchDispatchMode):
    """Use as `with counter.counting(): step()`; read `flops`, `peak_bytes`, `roofline_s(gpu, precision)`."""

    def __init__(self):
        super().__init__()
        self.flops: dict[str, int] = defaultdict(int)      # "unet.forward" -> FLOPs
        self.ops: list[tuple[int, int, bool]] = []          # (FLOPs, bytes in + out, low-precision inputs)
        self.peak_bytes = 0
        self.peak_at = ""                                    # the component running when the peak was reached
        self.labels = _Labels()
        self._live = WeakIdKeyDictionary()                  # storage -> (weak reference, bytes, serial)
        self._live_bytes = 0
        self._serial = 0                                    # storages seen so far (each gets the next number)
        self._floors: list[list] = []                       # open segments: [start serial, freed an older one]
        self._hooks: list[Any] = []
        self.modules: list[torch.nn.Module] = []
        self.recipes: dict[int, Any] = {}                   # id(module) -> what built it (trainables/cost/memo.py)
        self._deferred: list[Deferred] = []

    def reset(self) -> None:
        """Forget what was counted so far (keep the live storages): count the next step alone."""
        self.flops, self.ops = defaultdict(int), []
        self.peak_bytes, self.peak_at = self._live_bytes, "start"

    # ---------------------------------------------------------------- set-up
    def label(self, module: torch.nn.Module, name: str, recipe: Any = None) -> None:
        """Charge what `module`'s children run (forward, and the backward of what they created) to `name`.
        `recipe`: what built a frozen `module` (its class, configuration, precision), equal for two modules
        exactly when they were built alike: its graph-free calls may then be memoised (trainables/cost/memo.py)."""
        self.modules.append(module)
        if recipe is not None:
            self.recipes[id(module)] = recipe

        def push(*_):
            self.labels.stack.append(name)

        def pop(*_):                       # a forward hook must return None (a value would replace the output)
            self.labels.stack.pop()

        for sub in module.modules():       # every submodule: methods such as vae.encode skip the root's forward
            self._hooks.append(sub.register_forward_pre_hook(push))
            self._hooks.append(sub.register_forward_hook(pop))

    def hold(self, tensors: Iterable[torch.Tensor]) -> None:
        """Count these (parameters, buffers, inputs made before counting) as live from the start."""
        for t in tensors:
            self._track(t)

    def hold_since_start(self, tensors: Iterable[torch.Tensor]) -> None:
        """Count these as live since the start of the counted region, though they were made just now (the
        optimiser state a previous step would have left): the peak so far rises by their bytes, as every live
        sample before now would have."""
        before = self._live_bytes
        self.hold(tensors)
        if self.peak_bytes:
            self.peak_bytes += self._live_bytes - before
        for place in self._deferred:        # a segment filled in later would have been raised alike
            place.shift += self._live_bytes - before

    @contextmanager
    def segment(self) -> Iterator["Segment"]:
        """Record what the enclosed work counts, to `replay` it where the same work would run again: its FLOPs
        and ops, and its peak above the live bytes at its start. `Segment.reusable` is False when the work
        left live bytes behind or freed some it did not make (then its peak is not a function of its own work)."""
        flops, n_ops, live = dict(self.flops), len(self.ops), self._live_bytes
        outer_peak, outer_at = self.peak_bytes, self.peak_at
        self.peak_bytes, self.peak_at = live, "start"
        seg = Segment(start_serial=self._serial)
        floor = [self._serial, False]
        self._floors.append(floor)
        try:
            yield seg
        finally:
            self._floors.remove(floor)
        seg.freed_older, seg.live_rise = floor[1], self._live_bytes - live
        seg.flops = {k: v - flops.get(k, 0) for k, v in self.flops.items() if v != flops.get(k, 0)}
        seg.ops = self.ops[n_ops:]
        seg.peak_rise, seg.peak_at = self.peak_bytes - live, self.peak_at
        seg.reusable = self._live_bytes == live
        if outer_peak >= self.peak_bytes:
            self.peak_bytes, self.peak_at = outer_peak, outer_at

    def replay(self, seg: "Segment") -> None:
        """Count a recorded segment's work again, at the live bytes of now."""
        for k, v in seg.flops.items():
            self.flops[k] += v
        self.ops.extend(seg.ops)
        if seg.peak_rise > 0 and self._live_bytes + seg.peak_rise > self.peak_bytes:
            self.peak_bytes, self.peak_at = self._live_bytes + seg.peak_rise, seg.peak_at

    def defer(self) -> Deferred:
        """Mark where a segment traced elsewhere (another process) would be replayed; `fill` counts it there."""
        place = Deferred(live=self._live_bytes, peak_before=self.peak_bytes, op_index=len(self.ops))
        self._deferred.append(place)
        return place

    def fill(self, place: Deferred, seg: "Segment") -> None:
        """Count `seg` at `place` exactly as `replay` there would have: its FLOPs and ops, and its peak if that
        exceeds what was reached before `place` and is not exceeded after; on a tie with the peak reached
        after `place`, the segment came first and the peak is its."""
        self._deferred.remove(place)
        for k, v in seg.flops.items():
            self.flops[k] += v
        self.ops[place.op_index:place.op_index] = seg.ops
        for other in self._deferred:
            if other.op_index >= place.op_index:
                other.op_index += len(seg.ops)
        candidate = place.live + seg.peak_rise + place.shift
        if seg.peak_rise > 0 and candidate > place.peak_before + place.shift and candidate >= self.peak_bytes:
            self.peak_bytes, self.peak_at = candidate, seg.peak_at

    @contextmanager
    def counting(self) -> Iterator["CostCounter"]:
        with _Stamp(self.labels), self:
            yield self

    def until_close(self, handle: Any) -> None:
        """Call `handle.remove()` at `close` (as the label hooks are removed): what this trace set on shared
        modules (trainables/cost/memo.py's wrappers) is undone with it."""
        self._hooks.append(handle)

    def close(self) -> None:
        for h in self._hooks:
            h.remove()

    # ---------------------------------------------------------------- counting
    def _track(self, t: torch.Tensor) -> None:
        for storage in get_untyped_storages(t):
            if storage in self._live:
                continue
            nbytes = storage.nbytes()
            self._serial += 1
            # the callback fires when the storage is freed: live bytes are exact after every op
            self._live[storage] = (weakref.ref(storage, partial(self._freed, nbytes, self._serial)), nbytes,
                                   self._serial)
            self._live_bytes += nbytes

    def serial(self, storage) -> int:
        """The number `storage` got when first seen (0: never seen)."""
        entry = self._live.get(storage)
        return entry[2] if entry is not None else 0

    def _freed(self, nbytes: int, serial: int, _ref) -> None:
        self._live_bytes -= nbytes
        for floor in self._floors:
            if serial <= floor[0]:
                floor[1] = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        node = torch._C._current_autograd_node()
        if node is not None:
            label = f"{node.metadata.get('cost_label', OTHER)}.backward"
        else:
            label = f"{self.labels.current}.forward"
        flops = op_flops(func, args, kwargs, out)
        inputs, outputs = _op_tensors(args, kwargs, out)
        moved = sum(t.numel() * t.element_size() for t in inputs + outputs)
        low = any(t.dtype in (torch.bfloat16, torch.float16) for t in inputs if t.is_floating_point())
        self.flops[label] += flops
        self.ops.append((flops, moved, low))
        for t in outputs:
            self._track(t)
        if self._live_bytes > self.peak_bytes:
            self.peak_bytes, self.peak_at = self._live_bytes, label
        return out

    # ---------------------------------------------------------------- results
    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())

    def by_component(self) -> dict[str, int]:
        """FLOPs per component (forward + backward)."""
        out: dict[str, int] = defaultdict(int)
        for key, value in self.flops.items():
            out[key.rsplit(".", 1)[0]] += value
        return dict(out)

    def roofline_s(self, gpu: GPU, precision: str) -> float:
        """Sum over ops of max(FLOPs / peak, bytes / bandwidth) + the device's fixed cost per op: each op at
        its own bound, 100% of peak.
        `precision` is the critics' precision: ops with bf16/fp16 inputs run at the bf16 peak, the rest at
        the fp32 peak (the generator, the optimiser and fp32 critics)."""
        total = 0.0
        for flops, moved, low in self.ops:
            peak = gpu.bf16_tflops if (low and precision != "fp32") else gpu.fp32_tflops
            total += max(flops / (peak * 1e12), moved / (gpu.bandwidth_tbs * 1e12)) + gpu.op_overhead_us * 1e-6
        return total
