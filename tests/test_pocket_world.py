"""The pocket world: determinism, ground-truth pairing, captions, catalogue, reference folders."""
from __future__ import annotations

import random

import pytest
import torch

from pocket import world as W


def test_render_is_deterministic_in_seed():
    a1, a2 = W.sample_source(16, seed=3), W.sample_source(16, seed=3)
    x1, x2 = W.render(a1), W.render(a2)
    assert x1.shape == (16, 3, W.RES, W.RES) and x1.dtype == torch.float32
    assert torch.equal(x1, x2)
    assert not torch.equal(x1, W.render(W.sample_source(16, seed=4)))
    assert 0.0 <= x1.min() and x1.max() <= 1.0
    w1, w2 = W.sample_world(32, 5, hard_negatives=0.3), W.sample_world(32, 5, hard_negatives=0.3)
    assert torch.equal(W.render(w1), W.render(w2))


def test_source_domain_is_plain_circles_and_covers_free_attributes():
    a = W.sample_source(600, seed=0)
    assert (a.shape == 0).all() and (a.pattern == 0).all()
    assert set(a.colour.tolist()) == set(range(len(W.COLOURS)))
    assert set(a.background.tolist()) == set(range(len(W.BACKGROUNDS)))
    assert set(a.size.tolist()) == {0, 1}


def test_attrs_from_z_is_the_source_map():
    z = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    a, b = W.attrs_from_z(z), W.attrs_from_z(z.clone())
    assert torch.equal(W.render(a), W.render(b))
    assert (a.shape == 0).all() and (a.pattern == 0).all()
    # only the direction of z matters (StyleGAN2's mapping starts with PixelNorm), and u is uniform
    assert torch.allclose(W.render(W.attrs_from_z(z * 3.0)), W.render(a), atol=1e-5)
    u = W.z_to_uniform(torch.randn(4000, 32, generator=torch.Generator().manual_seed(1)))
    assert u.min() >= 0 and u.max() <= 1 and (u.mean(0) - 0.5).abs().max() < 0.03


def test_ground_truth_changes_exactly_the_prompted_attributes():
    a = W.sample_source(64, seed=11)
    for prompt in W.CATALOGUE:
        gt = W.ground_truth(prompt.text, a)
        for attr in W.ATTRS:
            if attr in prompt.spec:
                assert (getattr(gt, attr) == W.VOCAB[attr].index(prompt.spec[attr])).all(), (prompt.text, attr)
            else:
                assert torch.equal(getattr(gt, attr), getattr(a, attr)), (prompt.text, attr)
        for cont in ("size_u", "x_u", "y_u", "shade"):
            assert torch.equal(getattr(gt, cont), getattr(a, cont))
    # same seeds -> paired: a colour prompt leaves the background pixels of every sample untouched
    x_src = W.render(a)
    x_red = W.reference_images("a red circle", 64, seed=11)
    corner = (slice(None), slice(None), slice(0, 1), slice(0, 1))
    assert torch.equal(x_src[corner], x_red[corner])
    assert not torch.equal(x_src, x_red)
    assert torch.equal(W.reference_images(None, 64, seed=11), x_src)


def test_catalogue_lookup_and_short_and_long_prompts():
    kinds = {p.kind for p in W.CATALOGUE}
    assert {"short", "long", "source"} <= kinds
    assert W.lookup("  A Square ").text == "a square"
    assert W.lookup("a red circle").changed == {"colour": "red"}
    longs = [p for p in W.CATALOGUE if p.kind == "long"]
    assert all(len(p.changed) >= 3 for p in longs)
    with pytest.raises(KeyError, match="known prompts"):
        W.lookup("a dog")


def test_captions_vary_and_omit_attributes():
    a = W.sample_world(400, seed=2)
    caps = W.captions(a, seed=7)
    assert caps == W.captions(a, seed=7)
    assert len(set(caps)) > 250
    colour_named = [any(c in cap.split() for c in W.COLOURS) for cap in caps]
    assert 0.4 < sum(colour_named) / len(caps) < 0.95
    assert any("background" in c or "backdrop" in c for c in caps) and not all("background" in c for c in caps)
    assert any(c.startswith(("a picture of", "an image of", "a drawing of")) for c in caps)
    # a stated attribute is always the true one
    for i, cap in enumerate(caps):
        words = cap.replace(",", " ").split()
        named = [s for s in W.SHAPES if s in words]
        assert named in ([], [W.SHAPES[int(a.shape[i])]]), (cap, int(a.shape[i]))
    full = W.caption(a, 0, random.Random(0), p_keep={k: 1.0 for k in ("shape", "colour", "background", "size",
                                                                         "pattern", "plain")})
    assert W.SHAPES[int(a.shape[0])] in full and W.COLOURS[int(a.colour[0])] in full


def test_reference_dir_writes_paired_pngs(tmp_path):
    from pocket.refs import reference_dir

    src = reference_dir(None, n=8, seed=5, root=tmp_path)
    sq = reference_dir("a square", n=8, seed=5, root=tmp_path)
    assert len(list(src.glob("*.png"))) == 8 and len(list(sq.glob("*.png"))) == 8
    assert src != sq
    assert reference_dir("a square", n=8, seed=5, root=tmp_path) == sq      # cached
