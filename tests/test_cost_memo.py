"""trainables/cost/memo.py: a frozen network's graph-free call traced once and replayed counts exactly what tracing
it again counts (FLOPs per label, the per-op list, the peak and where, the live bytes after), and a call whose
record would not be exact for another caller is never replayed. Compared against the same calls traced plainly
(no memo) on hand-made modules; the whole-step equality on the tiny models is tests/test_cost_compose.py."""
from __future__ import annotations

import copy

import pytest
import torch

from trainables.cost import memo
from trainables.cost.counter import CostCounter
from trainables.cost.model import _first_step_state


class Frozen(torch.nn.Module):
    """Conv + GELU + a [N, 2C] head: several ops, temporaries freed inside, one fresh output."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 16)

    def forward(self, x):
        h = torch.nn.functional.gelu(self.conv(x))
        return self.head(h.mean((2, 3)))


class Pair(Frozen):
    """Returns a dict of two fresh tensors (a pytree output)."""

    def forward(self, x):
        y = super().forward(x)
        return {"y": y, "z": y * 2}


class Caching(Frozen):
    """Keeps a tensor it makes (a cache): its outputs are not all it leaves alive."""

    def forward(self, x):
        self.kept = torch.ones(1000)
        return super().forward(x)


class Viewing(Frozen):
    """Returns a view of its input."""

    def forward(self, x):
        super().forward(x)
        return x[:, :1]


class Freeing(Frozen):
    """Drops a tensor made before it was called (one per call)."""

    def forward(self, x):
        self.olds.pop()
        return super().forward(x)


def _counted(module_cls, calls, use_memo: bool, prepare=None):
    """Run `calls` (input shapes, in order) through a fresh frozen module under a counter (`prepare(module)`
    first, counted); the counter's numbers."""
    memo._CALLS.clear()
    with memo.fake_mode():
        module = module_cls().eval().requires_grad_(False)
        counter = CostCounter()
        counter.label(module, "net", recipe=(module_cls.__name__,) if use_memo else None)
        counter.hold([*module.parameters(), *module.buffers()])      # as the cost model holds its weights
        if use_memo:
            memo.memoise(module, (module_cls.__name__,), counter)
        outs = []
        with counter.counting(), torch.no_grad():
            if prepare is not None:
                prepare(module)
            held = torch.empty(3000)                     # something alive before, freed between the calls
            for i, shape in enumerate(calls):
                outs.append(module(torch.empty(shape)))
                if i == 0:
                    del held
        counter.close()
        live = counter._live_bytes
        shapes = [torch.utils._pytree.tree_map(lambda t: (tuple(t.shape), t.stride(), t.dtype), o) for o in outs]
    return dict(flops=dict(counter.flops), ops=list(counter.ops), peak=counter.peak_bytes, at=counter.peak_at,
                live=live, shapes=shapes)


CALLS = [(2, 4, 8, 8), (2, 4, 8, 8), (1, 4, 8, 8), (2, 4, 8, 8)]


@pytest.mark.parametrize("module_cls", [Frozen, Pair])
def test_a_replayed_call_counts_what_tracing_it_again_counts(module_cls):
    plain = _counted(module_cls, CALLS, use_memo=False)
    replays = []
    replay = CostCounter.replay
    CostCounter.replay = lambda self, seg: (replays.append(seg), replay(self, seg))[1]
    try:
        memoised = _counted(module_cls, CALLS, use_memo=True)
    finally:
        CostCounter.replay = replay
    assert memoised == plain
    assert len(replays) >= 2                              # the 2nd and 4th calls (the 3rd has another shape)
    records = [r for r in memo._CALLS.values() if r is not None]
    assert {r.leaves[0][1] for r in records if r.leaves[0][0] == "tensor"} >= {(2, 16), (1, 16)}


@pytest.mark.parametrize("module_cls,prepare", [
    (Caching, None),
    (Viewing, None),
    (Freeing, lambda m: setattr(m, "olds", [torch.empty(500) for _ in CALLS])),
])
def test_a_call_whose_record_would_not_be_exact_is_never_replayed(module_cls, prepare):
    plain = _counted(module_cls, CALLS, use_memo=False, prepare=prepare)
    memoised = _counted(module_cls, CALLS, use_memo=True, prepare=prepare)
    assert memoised == plain
    roots = [r for key, r in memo._CALLS.items() if key[1] == "forward"]
    assert roots and all(r is None for r in roots)        # seen, refused: traced every time


def test_calls_with_a_graph_or_outside_the_count_are_not_memoised():
    memo._CALLS.clear()
    with memo.fake_mode():
        module = Frozen().eval().requires_grad_(False)
        counter = CostCounter()
        counter.label(module, "net", recipe=("frozen",))
        memo.memoise(module, ("frozen",), counter)
        module(torch.empty(2, 4, 8, 8))                   # not counting: no key, nothing recorded
        assert memo._CALLS == {}
        with counter.counting():
            x = torch.empty(2, 4, 8, 8, requires_grad=True)
            module(x).sum().backward()                    # its output needs a graph: refused
        counter.close()
        assert "forward" not in module.__dict__ and "forward" not in module.conv.__dict__   # unwrapped
    assert memo._CALLS and all(r is None for k, r in memo._CALLS.items() if k[1] == "forward")


@pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")
def test_a_deep_copy_keeps_the_fake_mode():
    """Trainer.build's trained copy: its fake tensors stay the process's mode's own (else every op converts)."""
    with memo.fake_mode() as mode:
        net = Frozen()
        twin = copy.deepcopy(net)
        assert all(p.fake_mode is mode for p in twin.parameters())
        assert all(mode.is_our_fake(p) for p in twin.parameters())


def test_built_once_builds_a_recipe_once():
    made = []
    with memo.fake_mode():
        first = memo.built_once(("test-net", 1), lambda: made.append(1) or Frozen())
        again = memo.built_once(("test-net", 1), lambda: made.append(1) or Frozen())
        other = memo.built_once(("test-net", 2), lambda: made.append(1) or Frozen())
    assert first is again and other is not first and len(made) == 2


def test_the_first_step_state_is_the_state_a_real_first_step_leaves():
    """`_first_step_state` (Adam's own lazy initialisation) against a real Adam step on real tensors."""
    def state_of(step):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
        net[0].bias.requires_grad_(False)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, amsgrad=True)
        net(torch.randn(5, 3)).sum().backward()
        step(opt)
        return {i: {k: (tuple(v.shape), v.stride(), v.dtype, v.device) for k, v in opt.state[p].items()}
                for i, p in enumerate(net.parameters()) if p in opt.state}
    real = state_of(lambda opt: opt.step())
    assert real and state_of(_first_step_state) == real
