"""FID / KID / feature diversity with real clean-fid and a cheap custom feature extractor.

The extractor is `evaluation.testing:random_conv_features`: a fixed random (seeded, untrained) conv net
(3 -> 8 -> 16 channels, global average pool, 16-d features). clean-fid's own folder pipeline feeds it.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evaluation import fid as F  # noqa: E402
from evaluation import testing  # noqa: E402
from evaluation.config import EvalConfig  # noqa: E402

N, RES = 48, 32


def _images(seed: int = 0) -> np.ndarray:
    """Smooth random images: 4x4 colour noise upsampled to 32x32 (uint8 [N, 32, 32, 3])."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, size=(N, 4, 4, 3)).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(a).resize((RES, RES), Image.BICUBIC)) for a in low])


def _write(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(images):
        Image.fromarray(a).save(folder / f"{i:05d}.png")
    return folder


def _noisy(images, sigma, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(images.astype(np.float64) + rng.normal(0, sigma, images.shape), 0, 255).astype(np.uint8)


def _fid64(a: np.ndarray, b: np.ndarray) -> float:
    """Independent FID in float64: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), the matrix
    square roots by symmetric eigendecomposition (clean-fid uses scipy's sqrtm on S_a S_b)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    s_a_half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(s_a_half @ s_b @ s_a_half), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_sqrt)


def _kid64(a: np.ndarray, b: np.ndarray) -> float:
    """Independent unbiased MMD^2 (KID) in float64 with the cubic polynomial kernel k(x,y) = (x.y/d + 1)^3:
    mean over i != j of k(a_i, a_j) + the same for b - 2 mean over all (i, j) of k(a_i, b_j)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d, m = a.shape[1], len(a)
    k = lambda x, y: (x @ y.T / d + 1.0) ** 3   # noqa: E731
    off = lambda g: (g.sum() - np.trace(g)) / (m * (m - 1))   # noqa: E731
    return float(off(k(a, a)) + off(k(b, b)) - 2.0 * k(a, b).mean())


def _cfg(tmp_path, reference, **fid):
    return EvalConfig(
        device="cpu", batch_size=16, progress=False, cache_dir=str(tmp_path / "cache"),
        fid=dict(reference=str(reference), feature_extractor="evaluation.testing:random_conv_features",
                 kid_subset_size=24, kid_subsets=20, **fid),
    )


@pytest.fixture(scope="module")
def ref_images():
    return _images(0)


@pytest.mark.numeric
def test_fid_zero_against_itself_and_monotone_in_noise(tmp_path, ref_images):
    ref = _write(tmp_path / "ref", ref_images)
    cfg = _cfg(tmp_path, ref)
    same = F.compute_fid(ref, cfg)
    assert same.fid == pytest.approx(0.0, abs=1e-9)   # clamped at 0 (a set vs itself gives -0.0 / +-1e-15)
    fids, kids = [same.fid], [same.kid]
    for sigma in (15, 40, 90):
        res = F.compute_fid(_write(tmp_path / f"noise{sigma}", _noisy(ref_images, sigma)), cfg)
        # the reported FID is the Frechet distance of these very features (same.feats = reference features)
        assert res.fid == pytest.approx(_fid64(res.feats, same.feats), rel=1e-6, abs=1e-9), sigma
        fids.append(res.fid)
        kids.append(res.kid)
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert kids[3] > kids[2] > abs(kids[0]), kids
    assert same.feats.shape == (N, 16)


@pytest.mark.numeric
def test_kid_equals_independent_unbiased_mmd(tmp_path, ref_images):
    """With subsets as large as the sets, every clean-fid subset is a permutation of the whole set, so KID is
    exactly the full-set unbiased MMD^2 -- compared with an independent float64 computation."""
    ref = _write(tmp_path / "ref", ref_images)
    cfg = _cfg(tmp_path, ref).model_copy(update={"fid": _cfg(tmp_path, ref).fid.model_copy(
        update={"kid_subset_size": N, "kid_subsets": 2})})
    same = F.compute_fid(ref, cfg)
    res = F.compute_fid(_write(tmp_path / "noise40", _noisy(ref_images, 40)), cfg)
    want_same, want = _kid64(same.feats, same.feats), _kid64(res.feats, same.feats)
    assert want > 3 * abs(want_same)         # the noisy set is measurably farther than the set itself (~6x)
    assert res.kid == pytest.approx(want, rel=1e-4)
    assert same.kid == pytest.approx(want_same, rel=1e-3, abs=1e-4 * abs(want))


def test_reference_stats_cached_and_reused(tmp_path, ref_images):
    ref = _write(tmp_path / "ref", ref_images)
    gen = _write(tmp_path / "gen", _noisy(ref_images, 30))
    cfg = _cfg(tmp_path, ref)
    model = F.build_feature_model(cfg.fid, F.resolve_device("cpu"))
    before = testing.CALLS["count"]
    first = F.reference_statistics(ref, model, "clean", F.resolve_device("cpu"), cfg.fid_cache_dir(), batch_size=16,
                                   progress=False)
    assert first.source == "computed" and testing.CALLS["count"] - before == 3    # 48 images / 16
    cached = list(cfg.fid_cache_dir().glob("ref_*.npz"))
    assert len(cached) == 1
    before = testing.CALLS["count"]
    second = F.reference_statistics(ref, model, "clean", F.resolve_device("cpu"), cfg.fid_cache_dir(), batch_size=16,
                                    progress=False)
    assert testing.CALLS["count"] == before                                        # no feature pass
    assert second.source.startswith("cache:")
    np.testing.assert_allclose(second.mu, first.mu)
    np.testing.assert_allclose(second.feats, first.feats)
    # end to end: a second compute_fid only runs the generated set's 3 batches
    F.compute_fid(gen, cfg)
    before = testing.CALLS["count"]
    res = F.compute_fid(gen, cfg)
    assert testing.CALLS["count"] - before == 3 and res.reference_source.startswith("cache:")
    # another mode is another cache entry; changed reference content is another entry
    F.compute_fid(gen, _cfg(tmp_path, ref, mode="legacy_tensorflow"))
    Image.fromarray(_noisy(ref_images[:1], 50)[0]).save(ref / "00000.png")
    F.compute_fid(gen, cfg)
    assert len(list(cfg.fid_cache_dir().glob("ref_*.npz"))) == 3


@pytest.mark.numeric
def test_precomputed_stats_and_feature_diversity(tmp_path, ref_images):
    ref = _write(tmp_path / "ref", ref_images)
    cfg = _cfg(tmp_path, ref)
    npz = F.save_reference_stats(ref, tmp_path / "ref_stats.npz", cfg)
    gen = _write(tmp_path / "gen", _noisy(ref_images, 30))
    a = F.compute_fid(gen, cfg)
    b = F.compute_fid(gen, _cfg(tmp_path, npz))
    assert b.reference_source.startswith("precomputed:")
    assert b.fid == pytest.approx(a.fid) and b.kid == pytest.approx(a.kid)
    # feature diversity: mean over pairs of 1 - cos; identical features -> 0, orthogonal -> 1
    assert F.feature_diversity(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-12)
    assert F.feature_diversity(np.eye(4)) == pytest.approx(1.0)
    f = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    want = np.mean([1 - 1 / np.sqrt(2), 1.0, 1 - 1 / np.sqrt(2)])
    assert F.feature_diversity(f) == pytest.approx(want)


def test_inception_missing_gives_clear_offline_error(tmp_path):
    if os.path.exists(F.CLEANFID_INCEPTION):
        pytest.skip("Inception is pre-staged on this machine")
    missing = tmp_path / "nowhere" / "inception-2015-12-05.pt"
    with pytest.raises(F.InceptionMissingError) as err:
        F.build_feature_model(EvalConfig(fid=dict(inception_path=str(missing))).fid, F.resolve_device("cpu"))
    msg = str(err.value)
    assert str(missing) in msg and F.CLEANFID_INCEPTION in msg and F.INCEPTION_URL in msg
    assert "fid.inception_path" in msg


def test_inception_staged_elsewhere_is_linked(tmp_path, monkeypatch):
    """A pre-staged file at fid.inception_path is linked to clean-fid's fixed /tmp location."""
    fake_target = tmp_path / "tmp" / "inception-2015-12-05.pt"
    fake_target.parent.mkdir()
    monkeypatch.setattr(F, "CLEANFID_INCEPTION", str(fake_target))
    staged = tmp_path / "staged.pt"
    staged.write_bytes(b"not really inception")
    assert F.ensure_inception(staged) == fake_target
    assert fake_target.read_bytes() == b"not really inception"
