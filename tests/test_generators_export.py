"""Export to NVlabs' Generator layout (`save_nvlabs_state_dict`, `convert --to nvlabs`).

The independent check is `_nvlabs_forward` below: a float64 re-statement of NVlabs' Generator arithmetic
(stylegan2-ada-pytorch `training/networks.py`: FullyConnectedLayer gains, modulated_conv2d on the raw conv
weight, conv2d_resample's transposed conv + [1,3,3,1] filter, upfirdn2d.upsample2d on the skip image,
bias_act's sqrt(2)-gain lrelu and clamp, w_avg.lerp truncation) that reads ONLY an exported
`{"G_ema", "init_kwargs"}` dict: none of the project's model, ops or importer. It is first shown to reproduce
NVlabs' own outputs from the fixtures' NVlabs state dicts, then run on our exports.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainables.generators import CheckpointError, StyleGAN2, StyleGAN2Config, load_generator
from trainables.generators.__main__ import main
from trainables.generators.formats import detect_format, save_nvlabs_state_dict
from trainables.generators.formats.nvlabs import flatten_record, read_network_pickle
from trainables.generators.formats.nvlabs_export import (
    INIT_KWARGS_KEY,
    STATE_KEY,
    nvlabs_checkpoint,
    nvlabs_init_kwargs,
    nvlabs_state_dict,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "stylegan2"
pytestmark = [pytest.mark.usefixtures("stylegan2_fixtures", "one_torch_thread")]  # fails (not skips) without fixtures
F32_TOL = 1e-5  # float32 reference vs float64 recomputation (README: float32 vs float64 up to ~5e-6)
F64_TOL = 1e-9  # float64 vs float64 (README: the reference's own two modconv paths differ by 8.7e-15)
EPS_TOL = 1e-6  # NVlabs vs rosinality arithmetic in float64: demodulation eps 1e-8 added before vs after the
# 1/sqrt(fan_in) gain (measured 3.9e-8 on tiny32; below float32 resolution of these ~1-sized images)

# The constructor arguments the fixtures' README gives for the NVlabs generators (as Generator(...) kwargs).
TINY32_KWARGS = {"z_dim": 64, "c_dim": 0, "w_dim": 64, "img_resolution": 32, "img_channels": 3,
                 "mapping_kwargs": {"num_layers": 2, "lr_multiplier": 0.01},
                 "synthesis_kwargs": {"channel_base": 1024, "channel_max": 32, "num_fp16_res": 0, "conv_clamp": None}}
MIXED64_KWARGS = {"z_dim": 48, "c_dim": 0, "w_dim": 48, "img_resolution": 64, "img_channels": 3,
                  "mapping_kwargs": {"num_layers": 3, "lr_multiplier": 0.01},
                  "synthesis_kwargs": {"channel_base": 512, "channel_max": 32, "num_fp16_res": 0, "conv_clamp": None}}


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


# ------------------------------------------------------------------------------------------------------------
# Independent float64 NVlabs Generator (reads only the exported dict)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * math.sqrt(2)  # bias_act 'lrelu': alpha 0.2, def_gain sqrt(2)


def _fc(x: torch.Tensor, sd: dict, name: str, lr: float = 1.0, act: bool = False) -> torch.Tensor:
    w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
    y = x @ (w * (lr / math.sqrt(w.shape[1]))).T + b * lr  # FullyConnectedLayer: weight_gain lr/sqrt(in), bias_gain lr
    return _lrelu(y) if act else y


def _fir(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """Per-channel true 2-D convolution with f after zero padding (before, after) on both axes."""
    c = x.shape[1]
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, f.flip([0, 1])[None, None].expand(c, 1, *f.shape), groups=c)


def _upsample2d(img: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """upfirdn2d.upsample2d(up=2): a zero after every sample, pad (2, 1), filter with gain 4."""
    n, c, h, w = img.shape
    u = img.new_zeros(n, c, 2 * h, 2 * w)
    u[:, :, ::2, ::2] = img
    return _fir(u, f * 4, (2, 1))


def _layer(x, w, sd, name, up: bool, clamp, ros_eps: bool = False):
    """SynthesisLayer: styles = affine(w); demodulated conv of the RAW weight; + noise_const*strength; bias_act.

    Demodulation w'' = w' / sqrt(sum w'^2 + eps), eps = 1e-8. `ros_eps`: rosinality's placement instead (its eps is
    added after the 1/sqrt(fan_in) gain, i.e. eps = 1e-8 * fan_in here), the ONE arithmetic difference of the
    two codes."""
    weight, styles = sd[f"{name}.weight"], _fc(w, sd, f"{name}.affine")
    f = sd[f"{name}.resample_filter"]
    eps = 1e-8 * weight[0].numel() if ros_eps else 1e-8
    outs = []
    for n in range(x.shape[0]):
        wn = weight * styles[n].reshape(1, -1, 1, 1)
        wn = wn * (wn.square().sum([1, 2, 3], keepdim=True) + eps).rsqrt()
        xn = x[n:n + 1]
        if up:  # stride-2 transposed conv (= conv of the zero-inserted input, flipped kernel), then filter pad (1, 1)
            u = xn.new_zeros(1, xn.shape[1], 2 * xn.shape[2] - 1, 2 * xn.shape[3] - 1)
            u[:, :, ::2, ::2] = xn
            outs.append(_fir(F.conv2d(F.pad(u, [2, 2, 2, 2]), wn.flip([2, 3])), f * 4, (1, 1)))
        else:
            outs.append(F.conv2d(xn, wn, padding=1))
    x = torch.cat(outs) + sd[f"{name}.noise_const"] * sd[f"{name}.noise_strength"]
    x = _lrelu(x + sd[f"{name}.bias"].reshape(1, -1, 1, 1))
    return x if clamp is None else x.clamp(-clamp, clamp)


def _torgb(x, w, sd, name, clamp):
    """ToRGBLayer: styles = affine(w) / sqrt(in); modulated 1x1 conv without demodulation; + bias; clamp."""
    weight = sd[f"{name}.weight"]
    styles = _fc(w, sd, f"{name}.affine") / math.sqrt(weight.shape[1])
    y = torch.cat([F.conv2d(x[n:n + 1], weight * styles[n].reshape(1, -1, 1, 1)) for n in range(x.shape[0])])
    y = y + sd[f"{name}.bias"].reshape(1, -1, 1, 1)
    return y if clamp is None else y.clamp(-clamp, clamp)


def _nvlabs_mapping(ckpt: dict, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
    sd = {k: v.double() for k, v in ckpt[STATE_KEY].items()}
    kw = ckpt[INIT_KWARGS_KEY]
    x = z.double()
    x = x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()  # normalize_2nd_moment
    for i in range(kw["mapping_kwargs"]["num_layers"]):
        x = _fc(x, sd, f"mapping.fc{i}", kw["mapping_kwargs"]["lr_multiplier"], act=True)
    num_ws = 2 * int(math.log2(kw["img_resolution"])) - 2
    x = x.unsqueeze(1).repeat(1, num_ws, 1)
    return sd["mapping.w_avg"].lerp(x, psi)  # truncation: w_avg + psi * (w - w_avg)


def _nvlabs_synthesis(ckpt: dict, ws: torch.Tensor, ros_eps: bool = False) -> torch.Tensor:
    sd = {k: v.double() for k, v in ckpt[STATE_KEY].items()}
    kw = ckpt[INIT_KWARGS_KEY]
    clamp = kw["synthesis_kwargs"]["conv_clamp"]
    ws = ws.double()
    x = sd["synthesis.b4.const"].unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
    x = _layer(x, ws[:, 0], sd, "synthesis.b4.conv1", False, clamp, ros_eps)
    img = _torgb(x, ws[:, 1], sd, "synthesis.b4.torgb", clamp)
    res, w_idx = 8, 1  # block b{res} reads ws[w_idx : w_idx + 3] (conv0, conv1, torgb), then w_idx += 2
    while res <= kw["img_resolution"]:
        b = f"synthesis.b{res}"
        x = _layer(x, ws[:, w_idx], sd, f"{b}.conv0", True, clamp, ros_eps)
        x = _layer(x, ws[:, w_idx + 1], sd, f"{b}.conv1", False, clamp, ros_eps)
        img = _upsample2d(img, sd[f"{b}.resample_filter"]) + _torgb(x, ws[:, w_idx + 2], sd, f"{b}.torgb", clamp)
        res, w_idx = res * 2, w_idx + 2
    return img


def _nvlabs_forward(ckpt: dict, z: torch.Tensor, psi: float = 1.0, ros_eps: bool = False) -> torch.Tensor:
    return _nvlabs_synthesis(ckpt, _nvlabs_mapping(ckpt, z, psi), ros_eps)


def _randomized(cfg: StyleGAN2Config, seed: int) -> StyleGAN2:
    """A generator whose constant-initialised tensors (biases, noise strengths, ...) are random too."""
    torch.manual_seed(seed)
    g = StyleGAN2(cfg).eval()
    with torch.no_grad():
        for p in g.parameters():
            if torch.all(p == 0):
                p.copy_(0.1 * torch.randn_like(p))
            elif torch.all(p == 1):
                p.copy_(1 + 0.1 * torch.randn_like(p))
        g.set_latent_avg(torch.randn(cfg.style_dim))
    return g


# ------------------------------------------------------------------------------------------------------------
# The independent forward is right: it reproduces NVlabs' fixture outputs from NVlabs' own tensors


@pytest.mark.numeric
def test_reference_forward_reproduces_nvlabs_fixtures():
    e = torch.load(FIXTURES / "nvlabs_tiny32_expected.pt", weights_only=True)
    tiny = {STATE_KEY: torch.load(FIXTURES / "nvlabs_tiny32_state.pt", weights_only=True),
            INIT_KWARGS_KEY: TINY32_KWARGS}
    assert _maxdiff(_nvlabs_forward(tiny, e["z"]), e["img_const"]) < F32_TOL
    assert _maxdiff(_nvlabs_forward(tiny, e["z"], 0.7), e["img_trunc"]) < F32_TOL
    assert _maxdiff(_nvlabs_mapping(tiny, e["z"], 0.7), e["ws"]) < F32_TOL
    e = torch.load(FIXTURES / "nvlabs_mixed64_expected.pt", weights_only=True)
    data = read_network_pickle(FIXTURES / "nvlabs_mixed64.pkl")
    mixed = {STATE_KEY: flatten_record(data["G_ema"]), INIT_KWARGS_KEY: MIXED64_KWARGS}
    assert _maxdiff(_nvlabs_forward(mixed, e["z"]), e["img_const"]) < F32_TOL
    assert _maxdiff(_nvlabs_forward(mixed, e["z"], 0.7), e["img_trunc07"]) < F32_TOL


# ------------------------------------------------------------------------------------------------------------
# Exports


@pytest.mark.numeric
def test_export_of_rosinality_fixture_reproduces_rosinality_reference(tmp_path: Path):
    """rosinality tensors -> our export -> NVlabs arithmetic == rosinality's own float64 outputs (no importer)."""
    e = torch.load(FIXTURES / "rosinality_tiny32_expected.pt", weights_only=True)
    g = load_generator(FIXTURES / "rosinality_tiny32.pt")
    ckpt = torch.load(save_nvlabs_state_dict(g, tmp_path / "G_nvlabs.pt"), weights_only=True)
    assert ckpt[INIT_KWARGS_KEY] == TINY32_KWARGS  # the same NVlabs constructor as the fixture's tiny32
    # NVlabs' arithmetic as it is: within EPS_TOL of rosinality (measured 3.9e-8: the demodulation eps placement)
    assert _maxdiff(_nvlabs_forward(ckpt, e["z"]), e["out_plain"]) < EPS_TOL
    # with rosinality's eps placement the rest is float64-exact, so the exported tensors carry no other difference
    assert _maxdiff(_nvlabs_forward(ckpt, e["z"], ros_eps=True), e["out_plain"]) < F64_TOL
    assert _maxdiff(_nvlabs_forward(ckpt, e["z"], 0.7, ros_eps=True), e["out_trunc"]) < F64_TOL  # w_avg = latent_avg
    assert _maxdiff(_nvlabs_synthesis(ckpt, e["w_plus"], ros_eps=True), e["out_wplus"]) < F64_TOL  # W+ index order
    assert _maxdiff(_nvlabs_forward(ckpt, e["z"]), e["out_plain_f32"]) < F32_TOL


def test_export_of_nvlabs_fixtures_is_their_state_dict():
    """NVlabs -> project -> NVlabs gives back the reference Generator's own state_dict: keys, order, bits."""
    tiny = nvlabs_checkpoint(load_generator(FIXTURES / "nvlabs_tiny32.pkl"))
    state = torch.load(FIXTURES / "nvlabs_tiny32_state.pt", weights_only=True)
    assert list(tiny[STATE_KEY]) == list(state) and len(state) == 75
    assert all(torch.equal(tiny[STATE_KEY][k], state[k]) for k in state)  # resample_filter and w_avg included
    assert tiny[INIT_KWARGS_KEY] == TINY32_KWARGS
    mixed = nvlabs_checkpoint(load_generator(FIXTURES / "nvlabs_mixed64.pkl"))
    ref = flatten_record(read_network_pickle(FIXTURES / "nvlabs_mixed64.pkl")["G_ema"])
    assert list(mixed[STATE_KEY]) == list(ref)
    assert all(torch.equal(mixed[STATE_KEY][k], ref[k].float()) for k in ref)
    assert mixed[INIT_KWARGS_KEY] == MIXED64_KWARGS


def test_ffhq1024_layout_and_kwargs():
    """A config-only FFHQ-1024 model (meta device, no weights) exports exactly the official G_ema layout."""
    layout = json.loads((FIXTURES / "nvlabs_keys_ffhq1024.json").read_text())
    cfg = StyleGAN2Config(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2)
    with torch.device("meta"):
        g = StyleGAN2(cfg)
    sd = nvlabs_state_dict(g)
    assert list(sd) == list(layout)  # same keys in the same order
    assert {k: list(v.shape) for k, v in sd.items()} == layout
    assert sum(v.numel() for v in sd.values()) == 33_167_164
    kw = nvlabs_init_kwargs(cfg)  # README: channel_base=32768, channel_max=512, num_layers=8
    assert (kw["synthesis_kwargs"]["channel_base"], kw["synthesis_kwargs"]["channel_max"]) == (32768, 512)
    assert (kw["z_dim"], kw["w_dim"], kw["img_resolution"], kw["mapping_kwargs"]["num_layers"]) == (512, 512, 1024, 8)


@pytest.mark.numeric
def test_round_trip_project_nvlabs_project_is_exact(tmp_path: Path):
    """Every tensor and the config survive; images are bit-identical; clamp and lr multiplier included."""
    cfg = StyleGAN2Config(size=32, style_dim=32, n_mlp=3, channels={4: 64, 8: 64, 16: 32, 32: 16}, lr_mlp=0.02,
                          conv_clamp=1.0)
    g = _randomized(cfg, seed=7)
    path = save_nvlabs_state_dict(g, tmp_path / "G_nvlabs.pt")
    assert detect_format(path) == "nvlabs-pickle-dict" and not (tmp_path / "G_nvlabs.pt.tmp").exists()
    g2 = load_generator(path)
    assert g2.cfg == cfg and g2.source_format == "nvlabs-state-dict"
    assert list(g2.state_dict()) == list(g.state_dict())
    assert all(torch.equal(g2.state_dict()[k], v) for k, v in g.state_dict().items())
    assert torch.equal(g2.latent_avg, g.latent_avg)
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for psi in (1.0, 0.7):
            assert torch.equal(g2(z, truncation=psi), g(z, truncation=psi))
        # the clamp is active (so carrying it over is tested) ...
        unclamped = StyleGAN2(StyleGAN2Config(**{**cfg.to_dict(), "blur_kernel": (1, 3, 3, 1), "conv_clamp": None}))
        unclamped.load_state_dict(g.state_dict())
        unclamped.set_latent_avg(g.latent_avg)
        assert _maxdiff(unclamped(z), g(z)) > 1e-2
        # ... and NVlabs' arithmetic on the export gives the project's float64 image
        ckpt = torch.load(path, weights_only=True)
        g64 = g.double()
        assert _maxdiff(_nvlabs_forward(ckpt, z, 0.7, ros_eps=True), g64(z.double(), truncation=0.7)) < F64_TOL
        assert _maxdiff(_nvlabs_forward(ckpt, z, 0.7), g64(z.double(), truncation=0.7)) < EPS_TOL


def test_unbuildable_channel_table_is_refused(tmp_path: Path):
    g = load_generator(FIXTURES / "rosinality_mixed64.pt")  # channels {4: 32, 8: 32, 16: 24, 32: 16, 64: 16}
    out = tmp_path / "G_nvlabs.pt"
    with pytest.raises(CheckpointError,
                       match=r"G_nvlabs\.pt: channel table .*16: 24.*channel_base // res.*--to rosinality"):
        save_nvlabs_state_dict(g, out)
    assert not out.exists()
    with pytest.raises(CheckpointError, match="channel table"):  # widening with resolution: no base/max gives it
        nvlabs_init_kwargs(StyleGAN2Config(size=16, style_dim=8, n_mlp=1, channels={4: 16, 8: 32, 16: 32}))


@pytest.mark.parametrize("multiplier", [1, 2, 4])
def test_rosinality_tables_are_buildable(multiplier: int):
    """Every rosinality table (any size, channel_multiplier 1/2/4) has an NVlabs channel_base/channel_max."""
    for size in (2**k for k in range(2, 11)):
        cfg = StyleGAN2Config(size=size, style_dim=8, n_mlp=1, channel_multiplier=multiplier)
        syn = nvlabs_init_kwargs(cfg)["synthesis_kwargs"]
        # NVlabs SynthesisNetwork: channels_dict = {res: min(channel_base // res, channel_max)}
        built = {res: min(syn["channel_base"] // res, syn["channel_max"]) for res in cfg.channels}
        assert built == cfg.channels, (size, multiplier, syn)


# ------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_convert_to_nvlabs(tmp_path: Path):
    out = tmp_path / "G_nvlabs.pt"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "trainables.generators", "convert", "--checkpoint",
                        str(FIXTURES / "nvlabs_tiny32.pkl"), "--out", str(out), "--to", "nvlabs"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "NVlabs format" in r.stdout
    ckpt = torch.load(out, weights_only=True)  # plain tensors and dicts: no pickled code
    state = torch.load(FIXTURES / "nvlabs_tiny32_state.pt", weights_only=True)
    assert list(ckpt[STATE_KEY]) == list(state) and all(torch.equal(ckpt[STATE_KEY][k], state[k]) for k in state)
    assert ckpt[INIT_KWARGS_KEY] == TINY32_KWARGS
    # the default stays rosinality; an unexportable table exits 2 with the reason
    assert main(["convert", "--checkpoint", str(out), "--out", str(tmp_path / "ros.pt")]) == 0
    assert detect_format(tmp_path / "ros.pt") == "rosinality"
    assert main(["convert", "--checkpoint", str(FIXTURES / "rosinality_mixed64.pt"), "--out",
                 str(tmp_path / "bad.pt"), "--to", "nvlabs"]) == 2
    assert not (tmp_path / "bad.pt").exists()
