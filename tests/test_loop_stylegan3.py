"""StyleGAN3 through the same adaptation loop as StyleGAN2 (tiny random-weight 16 px StyleGAN3, tiny SD / CLIP):
kind detection, Fusion and NADA trainable sets, the paper's layer selection over 16 W+ entries, checkpoint and
bitwise resume, evaluation sampling."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_adapt_dict
from trainables.adaptation.callbacks import Callback
from trainables.adaptation.loop import adapt
from trainables.config_io import validate_config
from trainables.generators.kinds import detect_kind, generator_kind, load_any
from trainables.generators.stylegan3 import build_pocket_stylegan3, load_stylegan3, save_stylegan3
from trainables.generators.stylegan3.groups import wplus_index_layers


@pytest.fixture(scope="module")
def sg3_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sg3") / "pocket_sg3_16.pt"
    save_stylegan3(build_pocket_stylegan3(seed=0, img_resolution=16), path)
    return path


def _cfg(tiny_models, sg3_path, out, **over):
    data = tiny_adapt_dict(tiny_models, out, **over)
    data["generator"] = {"kind": "stylegan3", "checkpoint": str(sg3_path)}
    return validate_config(data)


def _changed(before_path, after_path) -> set[str]:
    before, after = load_stylegan3(before_path).state_dict(), load_stylegan3(after_path).state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_kind_detection_and_sets(sg3_path):
    assert detect_kind(sg3_path) == "stylegan3"
    kind, g = load_any(sg3_path)
    assert kind.name == "stylegan3" and kind.owns(g) and g.num_ws == 16 == len(wplus_index_layers(g))
    fusion = kind.trainable_names(g, "fusion", freeze_bias=True)
    assert fusion and all(n.endswith(".weight") and ".L" in n for n in fusion)
    assert not any(g.synthesis.layer_names[-1] in n for n in fusion)   # ToRGB is not in the Fusion set
    nada = kind.trainable_names(g, "nada", freeze_bias=False)
    assert any(n.startswith("synthesis.input.") for n in nada) and any(n.endswith(".bias") for n in nada)
    assert kind.layer_names(g, [0], True) == {"synthesis.input.weight", "synthesis.input.affine.weight"}
    assert not any(n.startswith("mapping.") for n in kind.synthesis_names(g))


def test_fusion_trains_only_the_fusion_set(tiny_models, sg3_path, tmp_path):
    result = adapt(_cfg(tiny_models, sg3_path, tmp_path / "run", train__iterations=2, train__sample_every=0,
                        optim__lr=0.01), progress=False)
    assert result.final_grid_path.is_file() and detect_kind(result.generator_path) == "stylegan3"
    changed = _changed(sg3_path, result.generator_path)
    fusion = generator_kind("stylegan3").trainable_names(load_stylegan3(sg3_path), "fusion", True)
    assert changed and changed <= fusion, sorted(changed - fusion)


def test_nada_and_layer_selection(tiny_models, sg3_path, tmp_path):
    result = adapt(_cfg(tiny_models, sg3_path, tmp_path / "nada", method="nada", train__iterations=1,
                        train__sample_every=0, optim__freeze_bias=False), progress=False)
    changed = _changed(sg3_path, result.generator_path)
    assert changed and not any(k.startswith("mapping.") or load_stylegan3(sg3_path).synthesis.layer_names[-1] in k
                               for k in changed)
    sel = adapt(_cfg(tiny_models, sg3_path, tmp_path / "sel", layers__k=2, train__iterations=1,
                     train__sample_every=0), progress=False)
    layers = wplus_index_layers(load_stylegan3(sg3_path))
    moved = {next(l for l in layers if k.startswith(l + ".")) for k in _changed(sg3_path, sel.generator_path)}
    assert 1 <= len(moved) <= 2, moved   # only the 2 chosen W+ entries' modules train


class _StopAt(Callback):
    """Simulates a crash right after the checkpoint of `step` is written."""

    def __init__(self, step):
        self.step = step

    def on_checkpoint(self, step, ckpt_dir):
        if step == self.step:
            raise KeyboardInterrupt


def test_resume_is_bitwise_identical(tiny_models, sg3_path, tmp_path):
    over = dict(train__iterations=4, train__sample_every=0, optim__lr=0.01)
    full = adapt(_cfg(tiny_models, sg3_path, tmp_path / "full", **over), progress=False)
    cfg = _cfg(tiny_models, sg3_path, tmp_path / "cut", train__checkpoint_every=2, **over)
    with pytest.raises(KeyboardInterrupt):
        adapt(cfg, callbacks=[_StopAt(2)], progress=False)
    resumed = adapt(cfg, resume_from=tmp_path / "cut" / "checkpoints" / "step_000002", progress=False)
    a, b = load_stylegan3(full.generator_path).state_dict(), load_stylegan3(resumed.generator_path).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _changed(sg3_path, resumed.generator_path)


def test_pocket_build_is_deterministic_and_leaves_the_global_rng(sg3_path):
    state = torch.random.get_rng_state()
    a = build_pocket_stylegan3(seed=0, img_resolution=16).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    b = load_stylegan3(sg3_path).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    mags = [v.item() for k, v in a.items() if k.endswith("magnitude_ema")]
    assert all(0 < m < 100 for m in mags) and len(set(mags)) > 1   # measured input energies, not the init 1.0


@pytest.mark.parametrize("variant", ["nfsd", "csd", "delta", "dds"])
def test_every_score_variant_with_the_regularizers_trains_a_stylegan3(tiny_models, sg3_path, tmp_path, variant):
    """The variants and the directional / reconstruction regularizers only see renders: on a StyleGAN3 they run
    and move the Fusion set (LPIPS needs torchvision's ImageNet weights, which tests do not download)."""
    cfg = _cfg(tiny_models, sg3_path, tmp_path / variant, guidance__variant=variant, train__iterations=1,
               train__sample_every=0, optim__lr=0.01, reg__directional__weight=0.5,
               reg__reconstruction__weight=1.0)
    result = adapt(cfg, progress=False)
    assert result.steps == 1 and all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())
    fusion = generator_kind("stylegan3").trainable_names(load_stylegan3(sg3_path), "fusion", True)
    changed = _changed(sg3_path, result.generator_path)
    assert changed and changed <= fusion
