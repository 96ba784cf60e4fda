"""StyleGAN3 checkpoints: the restricted reader refuses code and foreign classes; every format round-trips."""
from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from trainables.generators.formats.errors import CheckpointError
from trainables.generators.stylegan3 import (infer_stylegan3_config, init_kwargs, is_stylegan3_file, load_stylegan3,
                                             save_stylegan3)
from trainables.generators.stylegan3.formats import config_from_init_kwargs

FIX = Path(__file__).resolve().parent / "fixtures" / "stylegan3"


class _Evil:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return (self.call, (self.arg,))


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "subprocess.call"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path: Path, target: str):
    marker = tmp_path / "pwned"
    fn, arg = {"os.system": (os.system, f"touch {marker}"),
               "builtins.eval": (eval, f"open({str(marker)!r}, 'w').close()"),
               "subprocess.call": (subprocess.call, ["touch", str(marker)])}[target]
    evil = tmp_path / "sg3-evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": _Evil(fn, arg)}, protocol=4))
    with pytest.raises(CheckpointError) as info:
        load_stylegan3(evil)
    assert "sg3-evil.pkl" in str(info.value) and "forbidden global" in str(info.value)
    assert not marker.exists()
    assert not is_stylegan3_file(evil) and not marker.exists()


def test_an_unexpected_class_in_the_module_tree_is_refused(tmp_path: Path):
    # Same-length rename keeps the pickle valid: the record now claims a class StyleGAN3 does not have.
    data = (FIX / "t16.pkl").read_bytes().replace(b"SynthesisLayer", b"SynthesisXayer")
    p = tmp_path / "foreign.pkl"
    p.write_bytes(data)
    with pytest.raises(CheckpointError, match=r"foreign.pkl.*SynthesisXayer.*only StyleGAN3 modules"):
        load_stylegan3(p)


def test_truncated_pickle_and_a_stylegan2_pickle_are_refused(tmp_path: Path):
    data = (FIX / "r16.pkl").read_bytes()
    p = tmp_path / "cut.pkl"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pkl.*truncated or corrupt"):
        load_stylegan3(p)
    sd = load_stylegan3(FIX / "t16.pkl").state_dict()
    sg2ish = {k: v for k, v in sd.items() if not k.startswith("synthesis.input.")}
    torch.save(sg2ish, tmp_path / "noinput.pt")
    with pytest.raises(CheckpointError, match="noinput.pt.*no StyleGAN3 generator"):
        load_stylegan3(tmp_path / "noinput.pt")


@pytest.mark.parametrize("name", ["t16", "r16"])
def test_round_trips_are_exact_and_weights_only(tmp_path: Path, name: str):
    g = load_stylegan3(FIX / f"{name}.pkl")
    assert g.source_format == "nvlabs-pickle" and is_stylegan3_file(FIX / f"{name}.pkl")
    z = torch.randn(2, g.cfg.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = g(z, 0.7)
    out = save_stylegan3(g, tmp_path / "sg3.pt")
    obj = torch.load(out, weights_only=True)
    assert list(obj["G_ema"]) == list(g.state_dict()) and obj["init_kwargs"] == init_kwargs(g.cfg)
    torch.save(g.state_dict(), tmp_path / "sd.pt")
    torch.save({"G_ema": g.state_dict()}, tmp_path / "wrapped.pt")
    for p, fmt in ((out, "stylegan3-nvlabs-v1"), (tmp_path / "sd.pt", "stylegan3-state-dict"),
                   (tmp_path / "wrapped.pt", "stylegan3-state-dict")):
        h = load_stylegan3(p)
        assert h.source_format == fmt and h.cfg == g.cfg and is_stylegan3_file(p)
        with torch.no_grad():
            assert torch.equal(h(z, 0.7), want)
    assert infer_stylegan3_config(g.state_dict()) == g.cfg


def test_bad_arguments_and_altered_filters_are_refused(tmp_path: Path):
    g = load_stylegan3(FIX / "t16.pkl")
    with pytest.raises(CheckpointError, match="conditional generator"):
        config_from_init_kwargs({**init_kwargs(g.cfg), "c_dim": 10})
    with pytest.raises(CheckpointError, match=r"unknown StyleGAN3 Generator argument\(s\) \['bogus'\]"):
        config_from_init_kwargs({**init_kwargs(g.cfg), "bogus": 1})
    sd = g.state_dict()
    key = next(k for k in sd if k.endswith("down_filter"))
    sd[key] = sd[key].flip(0) * 1.1
    torch.save(sd, tmp_path / "filters.pt")
    with pytest.raises(CheckpointError, match=f"filters.pt.*{key}.*differs"):
        load_stylegan3(tmp_path / "filters.pt")
    sd = g.state_dict()
    key = "synthesis.L3_36_11.weight"  # t16: layer 3 has 36 px and 11 channels
    sd[key] = sd[key][:, :-1]
    torch.save(sd, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="shape.pt"):
        load_stylegan3(tmp_path / "shape.pt")


def test_cli_converts_to_nvlabs_and_back_exactly(tmp_path: Path, capsys):
    from trainables.generators.__main__ import main

    out = tmp_path / "r16-nvlabs.pt"
    assert main(["convert", "--checkpoint", str(FIX / "r16.pkl"), "--out", str(out), "--to", "nvlabs"]) == 0
    assert "NVlabs StyleGAN3 format" in capsys.readouterr().out
    g, h = load_stylegan3(FIX / "r16.pkl"), load_stylegan3(out)
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), h.state_dict().values()))
    again = tmp_path / "again.pt"
    assert main(["convert", "--checkpoint", str(out), "--out", str(again), "--to", "nvlabs"]) == 0
    assert torch.load(again, weights_only=True)["init_kwargs"] == torch.load(out, weights_only=True)["init_kwargs"]
    assert main(["convert", "--checkpoint", str(out), "--out", str(tmp_path / "x.pt")]) == 2
    assert "no rosinality layout" in capsys.readouterr().err
    assert main(["info", "--checkpoint", str(out), "--json"]) == 0
    assert '"config": "stylegan3-r"' in capsys.readouterr().out


def test_stylegan2_pickles_stay_stylegan2(stylegan2_fixtures: Path):
    """An NVlabs StyleGAN2 pickle (same Generator class name) is not taken for a StyleGAN3, and load_stylegan3
    names the foreign module."""
    from trainables.generators.kinds import detect_kind

    sg2 = stylegan2_fixtures / "nvlabs_tiny32.pkl"
    assert not is_stylegan3_file(sg2) and detect_kind(sg2) == "stylegan2"
    assert detect_kind(FIX / "t16.pkl") == "stylegan3"
    with pytest.raises(CheckpointError, match=r"nvlabs_tiny32.pkl.*SynthesisBlock.*only StyleGAN3 modules"):
        load_stylegan3(sg2)


def test_official_layouts_are_inferred_from_shapes():
    """stylegan3-t-ffhq-1024 and stylegan3-r-afhqv2-512 state dicts (meta tensors: shapes only) give back their
    configuration, so a bare G_ema state dict of a published model loads without its pickle. Parameter counts:
    NVlabs' own Generator with the same arguments (commit c233a91, counted by hand on the CPU)."""
    from trainables.generators.stylegan3 import StyleGAN3, afhqv2_r_512, ffhq_t_1024

    for cfg, n_params in ((ffhq_t_1024(), 22_313_167), (afhqv2_r_512(), 16_665_594)):
        with torch.device("meta"):
            g = StyleGAN3(cfg)
        assert infer_stylegan3_config(g.state_dict()) == cfg and g.num_ws == 16
        assert sum(p.numel() for p in g.parameters()) == n_params
