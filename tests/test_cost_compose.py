"""The cost model's composed trace (one step traced, the optimiser state primed, the layer-selection pass traced
once per process and replayed) counts exactly what two whole traced steps count: FLOPs per component, the
per-op list the roofline sums, the peak and where it was reached. On the tiny models, across what changes the
step's structure: both methods, layer selection with different k (the replayed pass) with and without the
regularizers that add a frozen render, no layer selection, an optimiser with biases frozen, and a DDS variant whose
selection pass reads the frozen render. Replays are checked to happen (the pass is not traced again).
"""
from __future__ import annotations

from dataclasses import asdict

import pytest

from conftest import tiny_adapt_dict
from trainables.config_io import validate_config
from trainables.cost import memo
from trainables.cost import model as cost_model
from trainables.cost.model import estimate

CASES = {
    "fusion-k2": dict(layers__k=2),
    "fusion-k1-directional-reconstruction": dict(layers__k=1, reg__directional__weight=1.0,
                                                 reg__reconstruction__weight=1.0),
    "fusion-k3-reconstruction": dict(layers__k=3, reg__reconstruction__weight=1.0),
    "fusion-no-selection-regs": dict(reg__directional__weight=1.0, reg__reconstruction__weight=1.0),
    "nada-k2": dict(method="nada", layers__k=2),
    "nada-k1": dict(method="nada", layers__k=1, optim__freeze_bias=True),
    "nada-no-selection": dict(method="nada"),
    "dds-k2": dict(layers__k=2, guidance__variant="dds"),
}


@pytest.fixture(scope="module")
def configs(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("compose")
    return {name: validate_config(tiny_adapt_dict(tiny_models, out, train__batch_size=2, **over))
            for name, over in CASES.items()}


def _numbers(report):
    data = asdict(report)
    data.pop("config_name", None)
    return data


@pytest.mark.numeric
def test_composed_trace_counts_what_two_whole_steps_count(configs, monkeypatch):
    monkeypatch.setattr(cost_model, "_SELECTIONS", {})
    monkeypatch.setattr(memo, "_CALLS", {})
    replays = []
    replay = cost_model.CostCounter.replay
    monkeypatch.setattr(cost_model.CostCounter, "replay", lambda self, seg: (replays.append(seg), replay(self, seg))[1])
    memo_replays, wholes = {}, {}

    def composed_replaying(name):
        before = len(replays)
        composed = estimate(configs[name], gpus=("H100",))
        assert _numbers(composed) == wholes[name], name
        return {key[0][0] for key, record in memo._CALLS.items()
                if record is not None and any(s is record.segment for s in replays[before:])}

    for name, cfg in configs.items():
        wholes[name] = _numbers(estimate(cfg, gpus=("H100",), compose=False))
        memo_replays[name] = composed_replaying(name)
    # the same configuration again: every memoised call replayed, the optimiser's step too
    assert composed_replaying("fusion-k3-reconstruction") >= {"unet", "vae", "generator", "optimizer"}
    assert composed_replaying("nada-k1") >= {"open_clip", "optimizer"}
    # fusion k=2 traced the pass; k=1 and k=3 (other regularizers) replayed it; NADA's k=1 with frozen biases
    # replayed NADA's; DDS reads the frozen render in its pass: another key, traced
    passes = [seg for seg in replays if any(seg is s for s, _ in cost_model._SELECTIONS.values())]
    assert len(passes) == 3 + 2                          # and the two configurations traced again
    # the frozen networks' graph-free calls were replayed (trainables/cost/memo.py): the UNet, the VAE on the
    # frozen render and the renders without a graph where an earlier configuration made the same calls
    assert memo_replays["fusion-no-selection-regs"] >= {"unet", "vae", "generator"}, memo_replays  # k1's rows
    assert "open_clip" in memo_replays["nada-k1"], memo_replays
    keys = {cost_model.selection_key(cfg) for cfg in configs.values() if cfg.layers.k > 0}
    assert len(keys) == 3 and len(cost_model._SELECTIONS) == 3


def test_a_replayed_pass_raises_the_peak_from_where_it_starts():
    """CostCounter.segment/replay on a hand-made chain: the pass's peak rise is added to the live bytes at the
    replay, and a segment that leaves bytes behind is not reusable."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from trainables.cost.counter import CostCounter

    mib = 1024 * 1024
    counter = CostCounter()
    with FakeTensorMode():
        x = torch.empty(256, 1024)                       # 1 MiB
        counter.hold([x])
        with counter.counting():
            with counter.segment() as seg:
                y = x * 2                                # +1 MiB
                z = y * 2                                # +1 MiB: rise 2 MiB
                del y, z
            extra = torch.empty(1024, 1024)              # 4 MiB live besides x
            counter.replay(seg)
            with counter.segment() as leaky:
                kept = x + 1
    assert seg.reusable and seg.peak_rise == 2 * mib and len(seg.ops) == 2
    assert counter.peak_bytes == (1 + 4 + 2) * mib       # replayed at 5 MiB live
    assert not leaky.reusable and kept.shape == x.shape and extra.numel() == mib


@pytest.mark.numeric
def test_one_traced_text_row_per_clip_counts_what_the_whole_prepare_counts(configs, monkeypatch):
    """NADA's prepare (setup, uncounted; its embeddings held as state) encodes one text per CLIP model under the
    cost model and gives a batch of N texts N such rows: the same report as encoding every text, in one text-tower
    trace per model instead of three."""
    import contextlib

    from trainables.frozen.clip_models import LoadedClip

    calls = []
    encode = LoadedClip.encode_text
    monkeypatch.setattr(LoadedClip, "encode_text", lambda self, texts: (calls.append(len(texts)), encode(self, texts))[1])
    cfg = configs["nada-no-selection"]
    n_models = len(cfg.nada.clip_models)
    monkeypatch.setattr(cost_model, "_SELECTIONS", {})
    shortcut = estimate(cfg, gpus=("H100",))
    assert calls == [1] * n_models
    calls.clear()
    monkeypatch.setattr(cost_model, "_one_text_row_traced", lambda clips: contextlib.nullcontext())
    full = estimate(cfg, gpus=("H100",))
    assert len(calls) == 3 * n_models and max(calls) > 1          # every call, the template batches whole
    assert _numbers(shortcut) == _numbers(full)


def _segment_of_two_mib():
    """A recorded pass whose peak is 2 MiB above where it starts, its peak charged to 'pass'."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from trainables.cost.counter import CostCounter

    counter = CostCounter()
    with FakeTensorMode():
        x = torch.empty(256, 1024)
        counter.hold([x])
        with counter.counting():
            counter.labels.stack.append("pass")
            with counter.segment() as seg:
                y = x * 2
                z = y * 2
                del y, z
    assert seg.reusable and seg.peak_rise == 2 * 1024 * 1024 and seg.peak_at == "pass.forward"
    return seg


def _count_around(seg, mode: str, before_mib: int, after_mib: int, hold_mib: int):
    """1 MiB held; a transient of before_mib; the pass (replayed now, or deferred and filled in at the end); a
    transient of after_mib; then hold_mib counted as live since the start (as the primed optimiser state is)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from trainables.cost.counter import CostCounter

    counter = CostCounter()
    with FakeTensorMode():
        x = torch.empty(256, 1024)
        state = torch.empty(max(hold_mib, 1) * 256, 1024)
        counter.hold([x])
        with counter.counting():
            counter.labels.stack.append("before")
            tmp = torch.empty(before_mib * 256, 1024) if before_mib else None
            del tmp
            counter.labels.stack[-1] = "at"
            place = counter.replay(seg) if mode == "replay" else counter.defer()
            counter.labels.stack[-1] = "after"
            tmp = torch.empty(after_mib * 256, 1024)
            del tmp
            if hold_mib:
                counter.hold_since_start([state])
        if mode == "defer":
            counter.fill(place, seg)
    return counter.peak_bytes, counter.peak_at, dict(counter.flops), list(counter.ops)


@pytest.mark.parametrize("before_mib", [0, 5])
@pytest.mark.parametrize("after_mib", [1, 2, 3])
@pytest.mark.parametrize("hold_mib", [0, 2])
def test_a_pass_filled_in_later_counts_what_a_replay_there_counts(before_mib, after_mib, hold_mib):
    """CostCounter.defer/fill against replay on hand-made chains: the pass's peak (1 + 2 MiB) below, equal to
    (the pass came first: its label) and above what follows it, under and over a larger peak before it, and with
    bytes counted as live since the start afterwards."""
    seg = _segment_of_two_mib()
    replayed = _count_around(seg, "replay", before_mib, after_mib, hold_mib)
    filled = _count_around(seg, "defer", before_mib, after_mib, hold_mib)
    assert filled == replayed
    mib = 1024 * 1024
    expected_at = ("before" if before_mib else "after" if after_mib > 2 else "pass") + ".forward"
    assert replayed[:2] == (max(1 + before_mib, 3, 1 + after_mib) * mib + hold_mib * mib, expected_at)


@pytest.mark.numeric
def test_a_pass_traced_apart_counts_what_two_whole_steps_count(configs, monkeypatch):
    """The layer-selection pass traced on its own (`trace_selection`, what sweeps.cost runs in a second process
    for a one-configuration sweep) and filled into the step traced without it: the numbers of two whole steps."""
    from trainables.cost.counter import CostCounter
    from trainables.cost.model import trace_selection

    fills = []
    fill = CostCounter.fill
    monkeypatch.setattr(CostCounter, "fill", lambda self, place, seg: (fills.append(seg), fill(self, place, seg))[1])
    selected = {name: cfg for name, cfg in configs.items() if cfg.layers.k > 0}
    assert len(selected) == 6
    for name, cfg in selected.items():
        monkeypatch.setattr(cost_model, "_SELECTIONS", {})
        whole = estimate(cfg, gpus=("H100",), compose=False)
        apart = estimate(cfg, gpus=("H100",), selection=lambda cfg=cfg: trace_selection(cfg))
        assert _numbers(apart) == _numbers(whole), name
    assert len(fills) == len(selected)
