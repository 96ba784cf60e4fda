"""NVlabs stylegan2-ada-pytorch pickles and state dicts: exact outputs, G_ema (not G), safe unpickling."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from trainables.generators import CheckpointError, StyleGAN2Config, load_generator, save_rosinality
from trainables.generators.formats import detect_format
from trainables.generators.formats.nvlabs import (
    PersistentRecord,
    flatten_record,
    generator_from_nvlabs_state_dict,
    infer_nvlabs_config,
    nvlabs_to_rosinality,
    read_network_pickle,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "stylegan2"
pytestmark = pytest.mark.usefixtures("stylegan2_fixtures")    # fails (not skips) without fixtures
F32_TOL = 1e-5


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.numeric
@pytest.mark.parametrize("name", ["nvlabs_tiny32.pkl", "nvlabs_tiny32_state.pt"])
def test_tiny32_matches_reference(name: str):
    e = torch.load(FIXTURES / "nvlabs_tiny32_expected.pt", weights_only=True)
    g = load_generator(FIXTURES / name)
    assert g.n_latent == e["num_ws"] == 8
    assert sum(p.numel() for p in g.parameters()) == 96_851
    with torch.no_grad():
        assert _maxdiff(g(e["z"], noise_mode="const"), e["img_const"]) < F32_TOL
        assert _maxdiff(g(e["z"], truncation=0.7, noise_mode="const"), e["img_trunc"]) < F32_TOL
        ws = g.truncate(g.broadcast(g.mapping(e["z"])), 0.7)
        assert _maxdiff(ws, e["ws"]) < F32_TOL
        assert _maxdiff(g.broadcast(g.mapping(e["z"])), e["ws_psi1"]) < F32_TOL
        assert _maxdiff(g.synthesis(e["ws"], noise_mode="const"), e["img_ws"]) < F32_TOL


@pytest.mark.numeric
def test_mixed64_matches_reference():
    e = torch.load(FIXTURES / "nvlabs_mixed64_expected.pt", weights_only=True)
    g = load_generator(FIXTURES / "nvlabs_mixed64.pkl")
    assert g.cfg.channels == {4: 32, 8: 32, 16: 32, 32: 16, 64: 8}
    assert (g.cfg.style_dim, g.cfg.n_mlp, g.n_latent) == (48, 3, e["num_ws"])
    with torch.no_grad():
        assert _maxdiff(g(e["z"]), e["img_const"]) < F32_TOL
        assert _maxdiff(g(e["z"], truncation=0.7), e["img_trunc07"]) < F32_TOL


def test_pickle_takes_g_ema_not_g():
    data = read_network_pickle(FIXTURES / "nvlabs_tiny32.pkl")
    assert list(data) == ["training_set_kwargs", "G", "D", "G_ema", "augment_pipe"]
    assert isinstance(data["G"], PersistentRecord) and data["G_ema"].class_name == "Generator"
    assert "module_src" not in vars(data["G_ema"])  # the embedded source is dropped, never executed
    g_sd, ema_sd = flatten_record(data["G"]), flatten_record(data["G_ema"])
    state = torch.load(FIXTURES / "nvlabs_tiny32_state.pt", weights_only=True)
    assert list(ema_sd) == list(state)
    assert all(torch.equal(ema_sd[k], state[k]) for k in state)
    assert any(not torch.equal(g_sd[k], ema_sd[k]) for k in ema_sd)
    # the distinct G renders differently: the fixture outputs only match G_ema
    e = torch.load(FIXTURES / "nvlabs_tiny32_expected.pt", weights_only=True)
    with torch.no_grad():
        wrong = generator_from_nvlabs_state_dict(g_sd)(e["z"])
    assert _maxdiff(wrong, e["img_const"]) > 1e-2


def test_pickle_reads_lr_and_formats(tmp_path: Path):
    g = load_generator(FIXTURES / "nvlabs_tiny32.pkl")
    assert g.cfg.lr_mlp == pytest.approx(0.01) and g.cfg.conv_clamp is None
    assert detect_format(FIXTURES / "nvlabs_tiny32.pkl") == "nvlabs-pickle"
    assert detect_format(FIXTURES / "nvlabs_tiny32_state.pt") == "nvlabs-state-dict"
    assert detect_format(FIXTURES / "rosinality_tiny32.pt") == "rosinality"
    # extension does not matter: the same pickle under a .pt name is still read as a pickle
    (tmp_path / "renamed.pt").write_bytes((FIXTURES / "nvlabs_tiny32.pkl").read_bytes())
    assert detect_format(tmp_path / "renamed.pt") == "nvlabs-pickle"
    # NVlabs w_avg becomes latent_avg
    state = torch.load(FIXTURES / "nvlabs_tiny32_state.pt", weights_only=True)
    assert torch.equal(g.latent_avg, state["mapping.w_avg"])


def test_convert_to_rosinality_round_trip(tmp_path: Path):
    e = torch.load(FIXTURES / "nvlabs_tiny32_expected.pt", weights_only=True)
    g = load_generator(FIXTURES / "nvlabs_tiny32.pkl")
    out = save_rosinality(g, tmp_path / "converted.pt")
    g2 = load_generator(out)
    assert g2.source_format == "rosinality"
    with torch.no_grad():
        assert _maxdiff(g2(e["z"], truncation=0.7), e["img_trunc"]) < F32_TOL


def test_ffhq1024_layout_maps():
    layout = json.loads((FIXTURES / "nvlabs_keys_ffhq1024.json").read_text())
    ros_layout = json.loads((FIXTURES / "rosinality_keys_1024.json").read_text())
    meta = {k: torch.empty(v, device="meta") for k, v in layout.items()}
    cfg = infer_nvlabs_config(meta)
    assert cfg == StyleGAN2Config(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2)
    converted, w_avg = nvlabs_to_rosinality(meta, cfg)
    assert w_avg is not None and tuple(w_avg.shape) == (512,)
    expected = {k: v for k, v in ros_layout.items() if not k.endswith(".kernel")}  # kernels come from the config
    assert {k: list(v.shape) for k, v in converted.items()} == expected


def test_unknown_and_missing_nvlabs_keys(tmp_path: Path):
    state = torch.load(FIXTURES / "nvlabs_tiny32_state.pt", weights_only=True)
    torch.save(dict(state, **{"synthesis.b8.skip.weight": torch.zeros(32, 32, 1, 1)}), tmp_path / "resnet.pt")
    with pytest.raises(CheckpointError, match=r"resnet.pt.*synthesis\.b8\.skip\.weight"):
        load_generator(tmp_path / "resnet.pt")
    partial = {k: v for k, v in state.items() if k != "synthesis.b16.conv1.affine.bias"}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial.pt.*synthesis\.b16\.conv1\.affine\.bias"):
        load_generator(tmp_path / "partial.pt")


# ----------------------------------------------------------------------------------------------------------
# Safety: nothing in a pickle is executed beyond the allow-list


class _Evil:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return (self.call, (self.arg,))


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path: Path, target: str):
    marker = tmp_path / "pwned"
    mod, name = target.split(".")
    fn = getattr(__import__(mod), name)
    arg = {
        "os.system": f"touch {marker}",
        "builtins.eval": f"open({str(marker)!r}, 'w').close()",
        "builtins.exec": f"open({str(marker)!r}, 'w').close()",
        "subprocess.call": ["touch", str(marker)],
    }[target]
    evil = tmp_path / "network-snapshot.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": _Evil(fn, arg)}, protocol=4))
    with pytest.raises(CheckpointError) as info:
        load_generator(evil)
    msg = str(info.value)
    assert "network-snapshot.pkl" in msg and "forbidden global" in msg
    assert name in msg
    assert not marker.exists()


def test_evil_payload_inside_storage_bytes_is_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(_Evil(os.system, f"touch {marker}"), buf, _use_new_zipfile_serialization=False)

    class _Storage:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (buf.getvalue(),))

    evil = tmp_path / "storage.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": _Storage()}, protocol=4))
    with pytest.raises(CheckpointError, match="storage.pkl"):
        load_generator(evil)
    assert not marker.exists()


def test_evil_torch_file_is_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"g_ema": _Evil(os.system, f"touch {marker}")}, evil)
    with pytest.raises(CheckpointError, match="evil.pt.*weights-only"):
        load_generator(evil)
    assert not marker.exists()


def test_truncated_and_corrupt_pickles(tmp_path: Path):
    data = (FIXTURES / "nvlabs_tiny32.pkl").read_bytes()
    for frac in (0.1, 0.5, 0.99):
        p = tmp_path / f"cut{int(frac * 100)}.pkl"
        p.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(CheckpointError, match=p.name):
            load_generator(p)
    flipped = bytearray(data)  # garbage in the pickle's opcode stream (raw tensor bytes carry no checksum)
    flipped[2:66] = b"\xff" * 64
    p = tmp_path / "flipped.pkl"
    p.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="flipped.pkl"):
        load_generator(p)
    p = tmp_path / "nog.pkl"
    p.write_bytes(pickle.dumps({"G": None}, protocol=4))
    with pytest.raises(CheckpointError, match="nog.pkl.*G_ema"):
        load_generator(p)
