"""The cost model against independent counts: torch's FlopCounterMode on real modules, hand formulas, live bytes.

The cost model traces the real step under fake tensors; these tests count the same work another way (real
tensors, the parts run one by one) and check the two agree, and that the model's fixes (grouped-convolution
backward, CPU flash attention, live-byte tracking) are right on cases small enough to count by hand.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from conftest import tiny_adapt_dict
from trainables.config_io import validate_config
from trainables.cost import gpu
from trainables.cost.model import estimate
from trainables.cost.counter import CostCounter
from trainables.generators import load_generator
from trainables.generators.groups import fusion_trainable_names, set_trainable
from trainables.frozen.diffusion_model import FrozenDiffusion

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _count(fn) -> int:
    """FLOPs by torch's own FlopCounterMode, with torch's own attention formula registered for the CPU flash
    kernel (FlopCounterMode has none for it)."""
    aten = torch.ops.aten
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *a, **kw: sdpa_flop_count(q, k, v),          # arguments arrive as shapes
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda g, q, k, v, *a, **kw: sdpa_backward_flop_count(g, q, k, v),
    }
    with FlopCounterMode(display=False, custom_mapping=mapping) as fc:
        fn()
    return fc.get_total_flops()


def test_grouped_conv_backward_counts_per_group():
    """A per-sample modulated conv (StyleGAN2) is a grouped conv: its input and weight gradients each cost one
    forward, 2 * H * W * k^2 * C_out * C_in_per_group * N."""
    n, c, h, k = 4, 8, 16, 3
    x = torch.randn(1, n * c, h, h, requires_grad=True)
    w = torch.randn(n * c, c, k, k, requires_grad=True)
    counter = CostCounter()
    with FakeTensorMode(allow_non_fake_inputs=True), counter.counting():
        F.conv2d(x, w, padding=1, groups=n).sum().backward()
    forward = 2 * h * h * k * k * (n * c) * c
    assert counter.flops["other.forward"] == forward
    assert counter.flops["other.backward"] == 2 * forward


def test_cpu_flash_attention_is_counted_like_attention():
    q = torch.randn(2, 4, 64, 16)
    counter = CostCounter()
    with FakeTensorMode(allow_non_fake_inputs=True), counter.counting():
        F.scaled_dot_product_attention(q, q, q)
    assert counter.total_flops == 2 * 2 * 4 * 64 * 64 * (16 + 16)     # Q K^T and P V


def test_live_bytes_peak_of_a_chain():
    """y1 = x @ W (kept), y2 = y1 @ W (kept), then y1 dropped: the peak holds x, W, y1, y2 (4 x 4 MiB)."""
    counter = CostCounter()
    with FakeTensorMode():
        x, w = torch.empty(1024, 1024), torch.empty(1024, 1024)
        counter.hold([x, w])
        with counter.counting():
            y1 = x @ w
            y2 = y1 @ w
            del y1
            y3 = y2 @ w
    assert counter.peak_bytes == 4 * 1024 * 1024 * 4
    assert y3.shape == (1024, 1024)


def test_step_flops_equal_the_parts_counted_on_real_modules(tiny_models, tmp_path):
    """Fast engine, SDS alone, no image clamp: one step = the frozen mapping of z + VAE encode (forward and
    input VJP) + UNet on 2 rows per image (uncond, cond) + the trained generator's forward twice (recompute)
    and its backward into the Fusion set; each part counted on the real tiny modules with FlopCounterMode."""
    cfg = validate_config(tiny_adapt_dict(tiny_models, tmp_path, train__batch_size=2,
                                          guidance__image_clamp_quantile=None))
    report = estimate(cfg, gpus=("H100",))
    g = load_generator(tiny_models["generator"])
    set_trainable(g, fusion_trainable_names(g))
    z = torch.randn(2, g.cfg.style_dim)
    mapping = _count(lambda: g.mapping(z))
    wp = g.broadcast(g.mapping(z)).detach()
    # one sample, twice: at batch 1 the modulated convs have groups=1, where torch's conv-backward formula
    # is exact (at batch B it counts B times the work: the bug the cost model's own formula fixes)
    gen_fwd = 2 * _count(lambda: g.synthesis(wp[:1]))
    gen_bwd = 2 * _count(lambda: g.synthesis(wp[:1]).sum().backward()) - gen_fwd
    model = FrozenDiffusion.from_ref(str(tiny_models["sd"]), None, image_size=cfg.guidance.image_size, fast=True)
    xi = model.prepare_images(g.synthesis(wp).detach()).requires_grad_(True)
    vae = _count(lambda: model.encode(xi).sum().backward())
    lat = model.encode(xi).detach()
    emb = model.embed("x").expand(4, -1, -1)
    unet = _count(lambda: model.unet(torch.cat([lat, lat]), torch.full((4,), 100), encoder_hidden_states=emb))
    assert report.by_component["unet.forward"] == unet
    assert report.by_component["generator.forward"] == 2 * gen_fwd
    assert report.by_component["generator_frozen.forward"] == mapping        # z -> w only: nothing reads x_frozen
    expected = mapping + vae + unet + 2 * gen_fwd + gen_bwd
    assert report.step_flops == pytest.approx(expected, rel=0.01)     # + the SDS arithmetic, a few elementwise ops


def test_memory_and_time_move_the_right_way(tiny_models, tmp_path):
    base = validate_config(tiny_adapt_dict(tiny_models, tmp_path, train__batch_size=2))
    one = estimate(base, gpus=("H100", "L4"))
    four = estimate(base.model_copy(update={"train": base.train.model_copy(update={"batch_size": 8})}),
                    gpus=("H100", "L4"))
    assert 3.5 < four.step_flops / one.step_flops < 4.5
    assert four.peak_bytes > one.peak_bytes > one.weight_bytes > 0
    assert one.step_seconds("L4") > one.step_seconds("H100") > 0
    reg = base.model_copy(update={"reg": base.reg.model_copy(update={
        "directional": base.reg.directional.model_copy(update={"weight": 1.0})})})
    with_reg = estimate(reg, gpus=("H100",))
    frozen = "generator_frozen.forward"
    assert with_reg.step_flops > one.step_flops
    assert with_reg.by_component[frozen] > 100 * one.by_component[frozen]     # the frozen render, not just z -> w


def test_roofline_is_the_sum_of_per_op_bounds():
    counter = CostCounter()
    counter.ops = [(2_000_000_000, 1_000, False), (10, 4_000_000_000, True)]
    h100 = gpu("H100")
    expected = (2e9 / (h100.fp32_tflops * 1e12) + 4e9 / (h100.bandwidth_tbs * 1e12)
                + 2 * h100.op_overhead_us * 1e-6)
    assert counter.roofline_s(h100, "bf16") == pytest.approx(expected)


def test_cli_prints_the_table(tiny_models, tmp_path):
    import yaml

    from trainables.cost.__main__ import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_adapt_dict(tiny_models, tmp_path / "run")))
    assert main(["--config", str(path), "--gpu", "H100"]) == 0
    assert main(["--config", str(path), "--set", "generator.checkpoint=/nonexistent.pt"]) == 2
