"""StyleGAN3 T and R against NVlabs' own stylegan3 code (tests/fixtures/stylegan3, see its README).

Tolerance (a rounding model, not a tuned constant): every output value is a chain of dot products whose lengths
add up to N (mapping fan-ins + per layer: conv fan-in C_in k^2 and the filter taps). With unit-gain layers
(demodulation renormalises every layer) the first-order worst-case bound of a length-N accumulation in
precision u is gamma_N ~ N u relative to the values (Higham, Thm 3.1), so each implementation is within
N u max|y| of the exact result and two of them within tol_u = 2 N u max|y|.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainables.generators.stylegan3 import StyleGAN3, load_stylegan3
from trainables.generators.stylegan3.filters import lowpass_filter

FIX = Path(__file__).resolve().parent / "fixtures" / "stylegan3"
CASES = [(1.0, None), (0.7, None), (0.5, 6)]  # make_fixtures.py CASES: (truncation_psi, truncation_cutoff)
U = {torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53}


def accumulation_length(g: StyleGAN3) -> int:
    """N of the module docstring: the dot-product lengths along the network, summed."""
    cfg = g.cfg
    n = cfg.z_dim + cfg.w_dim * (cfg.mapping_layers - 1) + g.synthesis.input.channels
    for name in g.synthesis.layer_names:
        layer = getattr(g.synthesis, name)
        s = layer.spec
        n += s.in_channels * s.conv_kernel ** 2
        for f in (layer.up_filter, layer.down_filter):
            n += 0 if f is None else (2 * f.numel() if f.ndim == 1 else f.numel())
    return n


def _tolerance(g: StyleGAN3, ref: torch.Tensor, dtype: torch.dtype) -> float:
    return 2 * accumulation_length(g) * U[dtype] * ref.abs().max().item()


@pytest.fixture(scope="module", params=["t16", "r16"])
def sg3(request):
    g = load_stylegan3(FIX / f"{request.param}.pkl")
    return request.param, g, torch.load(FIX / f"{request.param}_outputs.pt", weights_only=True)


def test_float32_equals_nvlabs_in_both_noise_modes(sg3):
    name, g, ref = sg3
    for i, (psi, cutoff) in enumerate(CASES):
        ws = g.mapping(ref["z"], psi, cutoff)
        tol_w = _tolerance(g, ref[f"ws32_{i}"], torch.float32)
        assert (ws - ref[f"ws32_{i}"]).abs().max().item() <= tol_w
        for mode in ("const", "random"):  # StyleGAN3 has no noise inputs: both modes give NVlabs' one image
            want = ref[f"img32_{i}_{mode}"]
            err = (g.render(ref[f"ws32_{i}"], noise_mode=mode) - want).abs().max().item()
            tol = _tolerance(g, want, torch.float32)
            print(f"{name} psi={psi} cutoff={cutoff} {mode}: float32 max abs error {err:.3e} (tolerance {tol:.3e})")
            assert err <= tol
            assert tol < 1e-2 * want.abs().max().item()  # the bound is not vacuous


def test_float64_equals_nvlabs_float64(sg3):
    name, g, ref = sg3
    g64 = StyleGAN3(g.cfg)
    g64.load_state_dict(g.state_dict())
    g64 = g64.double()
    for i, (psi, cutoff) in enumerate(CASES):
        ws = g64.mapping(ref["z"].double(), psi, cutoff)
        assert (ws - ref[f"ws64_{i}"]).abs().max().item() <= _tolerance(g, ref[f"ws64_{i}"], torch.float64)
        want = ref[f"img64_{i}"]
        err = (g64.synthesis(ref[f"ws64_{i}"]) - want).abs().max().item()
        tol = _tolerance(g, want, torch.float64)
        print(f"{name} psi={psi} cutoff={cutoff}: float64 max abs error {err:.3e} (tolerance {tol:.3e})")
        assert err <= tol
        # The float32 fixture is within the float32 model of the float64 one (the model covers NVlabs too).
        assert (ref[f"img32_{i}_const"].double() - want).abs().max().item() <= _tolerance(g, want, torch.float32)


def test_designed_filters_equal_nvlabs_scipy_filters(sg3):
    """Our numpy/torch Kaiser sinc and jinc designs against the scipy-designed buffers in NVlabs' pickle:
    equal up to the float32 rounding of each value (2 ulp)."""
    name, g, _ = sg3
    checked = 0
    for lname in g.synthesis.layer_names:
        layer = getattr(g.synthesis, lname)
        s = layer.spec
        tmp = max(s.in_sampling_rate, s.out_sampling_rate) * (1 if s.is_torgb else g.cfg.lrelu_upsampling)
        for stored, designed in ((layer.up_filter, lowpass_filter(s.up_taps, s.in_cutoff, 2 * s.in_half_width, tmp)),
                                 (layer.down_filter, lowpass_filter(s.down_taps, s.out_cutoff, 2 * s.out_half_width,
                                                                    tmp, radial=s.down_radial))):
            assert (stored is None) == (designed is None)
            if stored is not None:
                assert (designed - stored).abs().max().item() <= 2 * 2.0 ** -24 * stored.abs().max().item()
                checked += 1
    assert checked >= 2 * (len(g.synthesis.layer_names) - 1) - 2
    if name == "r16":
        assert any(getattr(g.synthesis, n).down_filter.ndim == 2 for n in g.synthesis.layer_names[:-3])


def test_the_randomised_parameters_are_seen(sg3):
    """The fixture randomised magnitude_ema, the input transform and the biases: dropping one moves the output
    over 10x the tolerance (so the equality above tests them)."""
    name, g, ref = sg3
    want = ref["img32_0_const"]
    tol = _tolerance(g, want, torch.float32)
    for key, value in (("synthesis.input.transform", torch.eye(3)), ("synthesis.input.affine.bias", None)):
        h = StyleGAN3(g.cfg)
        sd = g.state_dict()
        sd[key] = value if value is not None else torch.tensor([1.0, 0.0, 0.0, 0.0])
        h.load_state_dict(sd)
        with torch.no_grad():
            assert (h.render(ref["ws32_0"]) - want).abs().max().item() > 10 * tol, key
    h = StyleGAN3(g.cfg)
    h.load_state_dict({k: (torch.ones([]) if k.endswith("magnitude_ema") else v) for k, v in g.state_dict().items()})
    with torch.no_grad():
        assert (h.render(ref["ws32_0"]) - want).abs().max().item() > 10 * tol
