"""The cost model traces StyleGAN3 at full size with fake tensors (no weights): the FFHQ-T 1024 and AFHQv2-R 512
layouts' generator FLOPs equal an analytic count of their convolutions and filters from the layer schedule."""
from __future__ import annotations

import pytest

from conftest import tiny_adapt_dict
from trainables.config_io import validate_config
from trainables.cost.model import estimate
from trainables.generators.stylegan3 import StyleGAN3Config, afhqv2_r_512, ffhq_t_1024


def analytic_forward_flops(cfg: StyleGAN3Config) -> int:
    """One image: Fourier features, per layer the affine, the modulated conv ('full' padding), the separable
    up filter (zero insertion folded into a transposed conv per axis), the strided down filter (separable or
    radial 2-D). 2 FLOPs / MAC."""
    fourier, specs = cfg.layer_specs()
    s0, c0 = fourier["size"], fourier["channels"]
    total = 2 * s0 * s0 * 2 * c0 + 2 * s0 * s0 * c0 * c0 + 2 * cfg.w_dim * 4
    for s in specs:
        i, o, k = s.in_channels, s.out_channels, s.conv_kernel
        total += 2 * cfg.w_dim * i
        h = s.in_size + k - 1
        total += 2 * i * o * k * k * h * h
        if s.up_taps > 1:  # transposed conv per axis: every input sample meets every tap (W pass, then H pass)
            w1 = h * s.up_factor + sum(s.padding) - s.up_taps + 1
            total += 2 * s.up_taps * o * h * h + 2 * s.up_taps * o * h * w1
            h = w1
        else:
            h = h * s.up_factor + sum(s.padding)
        if s.down_taps > 1:
            w1 = (h - s.down_taps) // s.down_factor + 1
            total += (2 * s.down_taps ** 2 * o * w1 * w1 if s.down_radial
                      else 2 * s.down_taps * o * h * w1 + 2 * s.down_taps * o * w1 * w1)
    return total


@pytest.mark.parametrize("name,arch", [("stylegan3-t-ffhq-1024x1024.pkl", ffhq_t_1024()),
                                       ("stylegan3-r-afhqv2-512x512.pkl", afhqv2_r_512())])
def test_full_size_trace_without_weights(tiny_models, tmp_path, name, arch):
    data = tiny_adapt_dict(tiny_models, tmp_path, guidance__image_clamp_quantile=None)
    data["generator"] = {"kind": "stylegan3", "checkpoint": str(tmp_path / name), "size": arch.img_resolution}
    report = estimate(validate_config(data), gpus=("H100",))
    # generator.forward: the trained generator's forward twice per step (the loop's recompute), batch 1
    assert report.by_component["generator.forward"] == pytest.approx(2 * analytic_forward_flops(arch), rel=1e-3)
    assert report.by_component["generator.backward"] > report.by_component["generator.forward"] / 2
    assert any("stylegan3-" + arch.config_kind in n for n in report.assumptions)
