"""StyleGAN2 against the rosinality reference fixtures: exact outputs, key layouts, round trip, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainables.generators import CheckpointError, StyleGAN2, StyleGAN2Config, load_generator, save_rosinality
from trainables.generators.formats.rosinality import infer_config

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "stylegan2"
pytestmark = pytest.mark.usefixtures("stylegan2_fixtures")    # fails (not skips) without fixtures

F64_TOL = 1e-10
F32_TOL = 1e-5


def _expected(name: str) -> dict:
    return torch.load(FIXTURES / name, weights_only=True)


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


@pytest.fixture(scope="module")
def tiny() -> StyleGAN2:
    return load_generator(FIXTURES / "rosinality_tiny32.pt")


@pytest.mark.numeric
@pytest.mark.parametrize("dtype,suffix,tol", [(torch.float64, "", F64_TOL), (torch.float32, "_f32", F32_TOL)])
def test_tiny32_matches_reference(tiny: StyleGAN2, dtype, suffix, tol):
    e = _expected("rosinality_tiny32_expected.pt")
    g = load_generator(FIXTURES / "rosinality_tiny32.pt").to(dtype)
    z, z2 = e["z"].to(dtype), e["z2"].to(dtype)
    with torch.no_grad():
        w = g.mapping(z)
        assert _maxdiff(w, e["w" + suffix]) < tol
        img, lat = g(z, return_latents=True)
        assert img.dtype == dtype
        assert _maxdiff(img, e["out_plain" + suffix]) < tol
        assert _maxdiff(lat, e["latent_plain" + suffix]) < tol
        img, lat = g(z, truncation=0.7, return_latents=True)
        assert _maxdiff(img, e["out_trunc" + suffix]) < tol
        assert _maxdiff(lat, e["latent_trunc" + suffix]) < tol
        img, lat = g(z, z2, inject_index=3, return_latents=True)
        assert _maxdiff(img, e["out_mix" + suffix]) < tol
        assert _maxdiff(lat, e["latent_mix" + suffix]) < tol
        img = g.synthesis(e["w_plus" + suffix].to(dtype), noise_mode="const")
        assert _maxdiff(img, e["out_wplus" + suffix]) < tol
        # the explicit API path: mapping -> broadcast -> truncate -> synthesis
        wp = g.truncate(g.broadcast(g.mapping(z)), 0.7)
        assert _maxdiff(g.synthesis(wp), e["out_trunc" + suffix]) < tol


def test_tiny32_structure(tiny: StyleGAN2):
    e = _expected("rosinality_tiny32_expected.pt")
    assert tiny.n_latent == e["n_latent"] == 8
    assert tiny.num_layers == e["num_layers"] == 7
    assert sum(p.numel() for p in tiny.parameters()) == 96_851
    assert torch.equal(tiny.latent_avg, e["latent_avg"])
    assert tiny.cfg.channels == {4: 32, 8: 32, 16: 32, 32: 32} and tiny.cfg.n_mlp == 2 and tiny.cfg.style_dim == 64
    assert not tiny.training
    # the state dict is exactly rosinality's g_ema (latent_avg is a non-persistent buffer)
    ref = torch.load(FIXTURES / "rosinality_tiny32.pt", weights_only=True)["g_ema"]
    ours = tiny.state_dict()
    assert list(ours) == list(ref)
    assert all(torch.equal(ours[k], ref[k]) for k in ref)


@pytest.mark.numeric
@pytest.mark.parametrize("dtype,suffix,tol", [(torch.float64, "", F64_TOL), (torch.float32, "_f32", F32_TOL)])
def test_mixed64_matches_reference(dtype, suffix, tol):
    e = _expected("rosinality_mixed64_expected.pt")
    g = load_generator(FIXTURES / "rosinality_mixed64.pt").to(dtype)
    assert g.cfg.channels == {4: 32, 8: 32, 16: 24, 32: 16, 64: 16}
    assert (g.cfg.style_dim, g.cfg.n_mlp, g.n_latent) == (48, 3, e["n_latent"])
    z = e["z"].to(dtype)
    with torch.no_grad():
        assert _maxdiff(g(z), e["out_plain" + suffix]) < tol
        assert _maxdiff(g(z, truncation=0.7), e["out_trunc07" + suffix]) < tol


def test_noise_modes_differ_and_random_is_seeded(tiny: StyleGAN2):
    z = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        const = tiny(z, noise_mode="const")
        none = tiny(z, noise_mode="none")
        r1 = tiny(z, noise_mode="random", noise_generator=torch.Generator().manual_seed(5))
        r2 = tiny(z, noise_mode="random", noise_generator=torch.Generator().manual_seed(5))
        r3 = tiny(z, noise_mode="random", noise_generator=torch.Generator().manual_seed(6))
    assert torch.equal(r1, r2)
    assert not torch.allclose(r1, r3)
    assert not torch.allclose(const, none)
    assert const.dtype == torch.float32 and const.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError):
        tiny(z, noise_mode="bogus")


def test_mean_latent_is_seeded(tiny: StyleGAN2):
    a = tiny.mean_latent(256, generator=torch.Generator().manual_seed(1))
    b = tiny.mean_latent(256, generator=torch.Generator().manual_seed(1))
    assert a.shape == (64,) and torch.equal(a, b)
    # the fixture's latent_avg came from mean_latent(4096) after manual_seed(10) on the global stream
    torch.manual_seed(10)
    c = tiny.mean_latent(4096)
    assert _maxdiff(c, tiny.latent_avg) < 1e-5


def test_round_trip_is_exact(tiny: StyleGAN2, tmp_path: Path):
    g = load_generator(FIXTURES / "rosinality_tiny32.pt")
    with torch.no_grad():  # make it differ from the file, as an adapted generator would
        g.convs[2].conv.weight.add_(0.5)
    out = save_rosinality(g, tmp_path / "adapted.pt")
    raw = torch.load(out, weights_only=True)
    assert set(raw) >= {"g_ema", "latent_avg"} and raw["latent_avg"].shape == (64,)
    g2 = load_generator(out)
    assert g2.cfg == g.cfg
    sd1, sd2 = g.state_dict(), g2.state_dict()
    assert list(sd1) == list(sd2) and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert torch.equal(g.latent_avg, g2.latent_avg)
    z = torch.randn(2, 64)
    with torch.no_grad():
        assert torch.equal(g(z, truncation=0.7), g2(z, truncation=0.7))
        assert not torch.equal(g(z), tiny(z))
    # a reader that only knows rosinality's format (strict load of g_ema into a fresh model) works too
    fresh = StyleGAN2(infer_config(raw["g_ema"]))
    fresh.load_state_dict(raw["g_ema"], strict=True)


def test_bare_state_dict_and_missing_latent_avg(tmp_path: Path):
    ref = torch.load(FIXTURES / "rosinality_tiny32.pt", weights_only=True)
    torch.save(ref["g_ema"], tmp_path / "bare.pt")
    g = load_generator(tmp_path / "bare.pt")
    assert g.source_format == "rosinality-state-dict"
    assert "computed" in g.latent_avg_source
    g2 = load_generator(tmp_path / "bare.pt")
    assert torch.equal(g.latent_avg, g2.latent_avg)  # fixed seed: reproducible
    assert _maxdiff(g.latent_avg, ref["latent_avg"]) < 0.1  # a 4096-sample mean is close to the stored one


@pytest.mark.parametrize("size", [1024, 512, 256])
def test_real_checkpoint_layouts(size: int):
    layout = json.loads((FIXTURES / f"rosinality_keys_{size}.json").read_text())
    cfg = infer_config(layout)
    assert cfg == StyleGAN2Config(size=size, style_dim=512, n_mlp=8, channel_multiplier=2)
    with torch.device("meta"):
        g = StyleGAN2(cfg)
    ours = {k: list(v.shape) for k, v in g.state_dict().items()}
    assert list(ours) == list(layout)  # same keys, same order
    assert ours == layout
    assert g.n_latent == {1024: 18, 512: 16, 256: 14}[size]
    assert sum(v.numel() for v in g.state_dict().values()) == {1024: 33_166_492, 512: 30_975_831, 256: 30_209_266}[size]


def test_errors_name_the_file_and_key(tmp_path: Path):
    src = FIXTURES / "rosinality_tiny32.pt"
    data = src.read_bytes()
    trunc = tmp_path / "truncated.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_generator(trunc)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="junk.bin.*unrecognised"):
        load_generator(junk)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt.*empty"):
        load_generator(empty)
    with pytest.raises(CheckpointError, match="does_not_exist.pt.*not found"):
        load_generator(tmp_path / "does_not_exist.pt")

    ckpt = torch.load(src, weights_only=True)
    bad = dict(ckpt, g_ema=dict(ckpt["g_ema"]))
    bad["g_ema"]["convs.1.conv.weight"] = torch.zeros(1, 32, 16, 3, 3)
    torch.save(bad, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"shape.pt.*convs\.1\.conv\.weight.*\[1, 32, 16, 3, 3\].*\[1, 32, 32, 3, 3\]"):
        load_generator(tmp_path / "shape.pt")
    extra = dict(ckpt, g_ema=dict(ckpt["g_ema"], **{"convs.1.extra.weight": torch.zeros(3)}))
    torch.save(extra, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match=r"unknown.pt.*convs\.1\.extra\.weight"):
        load_generator(tmp_path / "unknown.pt")
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt.*no generator"):
        load_generator(tmp_path / "other.pt")


def test_gradients_reach_parameters(tiny: StyleGAN2):
    g = load_generator(FIXTURES / "rosinality_tiny32.pt")
    z = torch.randn(2, 64, generator=torch.Generator().manual_seed(3))
    g(z, truncation=0.7, noise_mode="random").square().mean().backward()
    for name in ("style.1.weight", "input.input", "conv1.conv.weight", "convs.3.conv.modulation.bias",
                 "convs.3.noise.weight", "convs.5.activate.bias", "to_rgbs.2.bias", "to_rgb1.conv.weight"):
        grad = dict(g.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_conv_clamp_bounds_activations():
    ref = torch.load(FIXTURES / "rosinality_tiny32.pt", weights_only=True)
    plain = load_generator(FIXTURES / "rosinality_tiny32.pt")
    cfg = StyleGAN2Config(**{**plain.cfg.to_dict(), "conv_clamp": 0.25})
    g = StyleGAN2(cfg).eval()
    g.load_state_dict(ref["g_ema"], strict=True)
    seen = []
    g.convs[1].activate.register_forward_hook(lambda m, i, o: seen.append(o.abs().max().item()))
    z = torch.randn(2, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        x = g(z)
        assert not torch.allclose(x, plain(z))
    assert seen and seen[0] <= 0.25 + 1e-7  # sqrt(2) * lrelu(.) clamped to +-conv_clamp
