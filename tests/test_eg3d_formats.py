"""EG3D checkpoint handling: the official ffhq512-128 key layout, the restricted unpickler, the internal format."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

from trainables.generators.eg3d import (EG3DGenerator, build_pocket_eg3d, convert_eg3d_state_dict, ffhq512_128_config,
                                        infer_eg3d_config, load_eg3d, save_eg3d)
from trainables.generators.eg3d.formats import EG3DUnpickler, read_eg3d_pickle
from trainables.generators.formats.errors import CheckpointError

FIX = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
pytestmark = pytest.mark.usefixtures("eg3d_fixtures")    # fails (not skips) when ../shared/fixtures is missing


def _layout():
    d = json.loads((FIX / "eg3d" / "eg3d_keys_ffhq512-128.json").read_text())
    sd = {k: torch.empty(v, device="meta") for k, v in d["keys"].items()}
    return d, sd


def test_ffhq512_128_layout_maps_completely():
    d, sd = _layout()
    rk = d["constructor"]["G_kwargs"]["rendering_kwargs"]
    cfg = infer_eg3d_config(sd, rendering_kwargs=rk, neural_rendering_resolution=128)
    assert cfg == ffhq512_128_config()
    assert cfg.rendering["depth_resolution"] == 48 and cfg.num_ws == d["num_ws"] == 14
    converted = convert_eg3d_state_dict(sd, cfg)
    with torch.device("meta"):
        g = EG3DGenerator(cfg)
    own = g.state_dict()
    fixed = {k for k in own if k.endswith(".kernel")}  # FIR kernels come from the config
    assert set(converted) == set(own) - fixed
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in converted)
    assert sum(p.numel() for p in g.parameters()) == d["n_parameters"] == 30_662_136
    assert g.superresolution.block0.upsample_block and g.cfg.sr_input_resolution == 128


def test_layout_with_a_wrong_shape_is_refused():
    d, sd = _layout()
    sd["superresolution.block1.conv1.weight"] = torch.empty(128, 64, 3, 3, device="meta")
    cfg = infer_eg3d_config(sd)
    with pytest.raises(CheckpointError, match="block1.conv1"):
        from trainables.generators.eg3d.formats import _load_strict
        with torch.device("meta"):
            g = EG3DGenerator(cfg)
        _load_strict(g, convert_eg3d_state_dict(sd, cfg), None, fill_fixed=True)


def test_unknown_and_missing_keys_are_refused(tmp_path):
    sd = torch.load(FIX / "eg3d" / "eg3d_tiny_state.pt", weights_only=True)
    bad = dict(sd, **{"superresolution.block0.extra.weight": torch.zeros(1)})
    torch.save(bad, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unknown EG3D key"):
        load_eg3d(tmp_path / "extra.pt")
    missing = {k: v for k, v in sd.items() if k != "decoder.net.2.bias"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="decoder.net.2.bias"):
        load_eg3d(tmp_path / "missing.pt")


def _evil_pickle(module: str, name: str) -> bytes:
    # GLOBAL module name; EMPTY_TUPLE; REDUCE; STOP -> would call module.name() on a plain unpickler
    return b"\x80\x04c" + module.encode() + b"\n" + name.encode() + b"\n)R."


@pytest.mark.parametrize("glob", [("os", "system"), ("builtins", "eval"), ("training.triplane", "TriPlaneGenerator"),
                                  ("torch_utils.persistence", "import_hook")])
def test_restricted_unpickler_refuses_other_globals(tmp_path, glob):
    p = tmp_path / "evil.pkl"
    p.write_bytes(_evil_pickle(*glob))
    with pytest.raises(CheckpointError, match="forbidden global"):
        load_eg3d(p)


def test_plain_classes_become_inert_records_and_no_code_is_imported():
    data = read_eg3d_pickle(FIX / "eg3d" / "eg3d_tiny.pkl")
    g = data["G_ema"]
    dec = g.state["_modules"]["decoder"]
    assert type(dec).__name__ == "Record_OSGDecoder" and not hasattr(dec, "forward")
    assert dec.__dict__["_modules"]["net"].class_path == "torch.nn.modules.container.Sequential"
    assert g.state["neural_rendering_resolution"] == 16
    assert "training" not in sys.modules and "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    # records are data only: NEWOBJ of a stand-in with arguments cannot smuggle calls
    rec = EG3DUnpickler(io.BytesIO(b"\x80\x04ctraining.triplane\nOSGDecoder\n)\x81}(X\x01\x00\x00\x00aI1\nub."), None).load()
    assert rec.__dict__ == {"a": 1}


def test_truncated_pickle_and_wrong_network(tmp_path):
    raw = (FIX / "eg3d" / "eg3d_tiny.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_eg3d(tmp_path / "cut.pkl")
    with pytest.raises(CheckpointError, match="TriPlaneGenerator"):  # a 2D StyleGAN2 pickle is not an EG3D
        load_eg3d(FIX / "stylegan2" / "nvlabs_tiny32.pkl")
    with pytest.raises(CheckpointError, match="not found"):
        load_eg3d(tmp_path / "nope.pkl")


def test_internal_round_trip_is_weights_only_and_exact(tmp_path):
    g = build_pocket_eg3d(3)
    path = save_eg3d(g, tmp_path / "pocket.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "eg3d-internal-v1" and isinstance(raw["config"], str)
    h = load_eg3d(path)
    assert h.cfg == g.cfg and h.source_format == "eg3d-internal-v1"
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), h.state_dict().values()))
    torch.testing.assert_close(h.latent_avg, g.latent_avg, rtol=0, atol=0)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    from trainables.generators.eg3d import orbit_cameras
    c = orbit_cameras(2)
    with torch.no_grad():
        a = g(z, c, render_generator=torch.Generator().manual_seed(1))["image"]
        b = h(z, c, render_generator=torch.Generator().manual_seed(1))["image"]
    assert torch.equal(a, b)
    raw["state_dict"]["decoder.net.0.weight"] = raw["state_dict"]["decoder.net.0.weight"][:, :4]
    torch.save(raw, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="decoder.net.0.weight"):
        load_eg3d(tmp_path / "broken.pt")
