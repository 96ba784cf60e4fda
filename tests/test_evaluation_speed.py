"""What evaluation no longer repeats per trial, and that the numbers are the ones the per-trial way computes.

- CLIP score: the open_clip model comes from `trainables.frozen.model_cache` (on only in sweep workers), under the key
  NADA's critic uses, so a NADA trial's CLIP serves the score; scores equal those of a freshly loaded model.
- Source samples: the frozen source generator is rendered once into `cache_dir/source_samples/<key>` and
  reused by later evaluations; its pixels equal `sample_source_generator` into a fresh folder (the old
  per-trial way), a damaged shared folder is rendered again.
- Pocket reference sets: their judge features are kept on disk next to the PNGs; a new process loads exactly
  the array a fresh computation gives, a rewritten folder or another compute environment (torch, CPU kernels,
  MKL_CBWR) is computed again.
- The pocket demo's evaluation block (pocket-CLIP, feature diversity, the three pocket plugins) twice in one
  process with the model cache on, the second time after the pocket plugins' process caches are dropped (a
  new worker): every metric equals the old way's value exactly (fresh model load, a fresh source folder,
  features and predictions from freshly decoded PNGs), and the second evaluation renders no source samples,
  computes no reference features and builds no CLIP model.
Real components throughout (open_clip, clean-fid, the committed pocket models); no mocks.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import evaluation.sampling as sampling  # noqa: E402
import pocket.metrics as PM  # noqa: E402
from evaluation.clip_score import clip_cosines, clip_scores, metric_suffix, score_from_cosines  # noqa: E402
from evaluation.config import EvalConfig  # noqa: E402
from evaluation.fid import build_feature_model, feature_diversity, folder_features  # noqa: E402
from evaluation.runner import evaluate_generator  # noqa: E402
from evaluation.sampling import (SOURCE_SAMPLES_DIR, list_images, load_images, sample_source_generator,  # noqa: E402
                                 shared_source_samples)
from pocket import refs  # noqa: E402
from pocket import world as W  # noqa: E402
from trainables.config import NadaConfig  # noqa: E402
from trainables.generators import load_generator, save_rosinality  # noqa: E402
from trainables.frozen.clip_models import load_open_clip  # noqa: E402
from trainables.guidance.nada import NadaGuidance  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
POCKET_G = REPO / "pocket" / "models" / "stylegan2" / "pocket-circles-32.pt"
POCKET_CLIP = (REPO / "pocket" / "models" / "clip" / "pocket-clip.json",
               REPO / "pocket" / "models" / "clip" / "open_clip_model.safetensors")


def _pixels(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in list_images(folder)])


def _perturbed(src: Path, out: Path, seed: int) -> Path:
    """An 'adapted' generator: the source with small seeded weight noise."""
    g = load_generator(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    save_rosinality(g, out)
    return out


def _clear_pocket_caches() -> None:
    """What a new worker process starts with (the on-disk caches stay)."""
    for fn in (PM._cached_pixels, PM._cached_predictions, PM._cached_features, PM._cached_reference_features):
        fn.cache_clear()


# ---- CLIP score through the model cache --------------------------------------------------------------
def test_clip_score_model_comes_from_the_cache_nada_fills(tiny_models, tmp_path, model_cache_on, one_torch_thread):
    name, weights = str(tiny_models["clip_config"]), str(tiny_models["clip_weights"])
    folder = tmp_path / "imgs"
    folder.mkdir()
    gen = torch.Generator().manual_seed(3)
    for i in range(6):
        arr = (torch.rand(20, 20, 3, generator=gen) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i:05d}.png")
    cfg = EvalConfig(device="cpu", batch_size=4, clip=dict(models=[dict(name=name, pretrained=weights)]))
    nada = NadaGuidance(NadaConfig(clip_models=[dict(name=name, pretrained=weights)]), "cpu")   # a NADA trial
    assert model_cache_on.stats().misses == 1 and model_cache_on.stats().hits == 0
    got = clip_scores(folder, "a red square", cfg)
    assert model_cache_on.stats().misses == 1 and model_cache_on.stats().hits == 1      # NADA's CLIP served the score
    again = clip_scores(folder, "a red square", cfg)
    assert model_cache_on.stats().misses == 1 and model_cache_on.stats().hits == 2 and again == got

    fresh = load_open_clip(name, weights, device="cpu", dtype=torch.float32)   # the old way: its own load
    assert fresh.model is not nada.models[0][0].model
    ref = score_from_cosines(clip_cosines(list_images(folder), "a red square", fresh, batch_size=4))
    suffix = metric_suffix(name, weights)
    assert got == {"eval/clip_score": ref.score, "eval/clip_score_raw": ref.raw,
                   f"eval/clip_score/{suffix}": ref.score, f"eval/clip_score_raw/{suffix}": ref.raw}

    # a forced activation is another build (another key), with the same numbers for this GELU model
    forced = cfg.model_copy(update={"clip": cfg.clip.model_copy(
        update={"models": [cfg.clip.models[0].model_copy(update={"quick_gelu": False})]})})
    assert clip_scores(folder, "a red square", forced) == got
    assert model_cache_on.stats().misses == 2


# ---- source samples rendered once -------------------------------------------------------------------
def test_source_samples_rendered_once_and_equal_to_the_per_trial_folder(tiny_models, tmp_path, monkeypatch,
                                                                        one_torch_thread):
    src = tiny_models["generator"]
    cfg = EvalConfig(num_samples=12, batch_size=5, truncation=0.8, image_size=None, device="cpu", progress=False,
                     cache_dir=str(tmp_path / "cache"), latents=dict(seed=4),
                     fid=dict(enabled=False), clip=dict(enabled=False),
                     diversity=dict(lpips=dict(enabled=False), feature=dict(enabled=False)),
                     extra_metrics=["evaluation.testing:brightness_plugin"])
    renders = []
    real = sampling.sample_to_folder

    def counting(g, z, out_dir, **kw):
        renders.append(Path(out_dir).name)
        return real(g, z, out_dir, **kw)

    monkeypatch.setattr(sampling, "sample_to_folder", counting)   # counts renders; the real renderer runs
    results = []
    for i in range(2):
        adapted = _perturbed(src, tmp_path / f"adapted{i}.pt", seed=i)
        results.append(evaluate_generator(adapted, "p", cfg, tmp_path / f"trial{i}", source_generator=src))
    monkeypatch.undo()
    assert renders.count("samples") == 2 and len(renders) == 3          # the source once, for both trials
    shared = [p for p in (tmp_path / "cache" / SOURCE_SAMPLES_DIR).iterdir() if p.is_dir()]
    assert len(shared) == 1 and not (tmp_path / "trial0" / "source_samples").exists()

    old = sample_source_generator(src, tmp_path / "old_source", cfg)   # the per-trial way
    manifest = json.loads((shared[0] / "manifest.json").read_text())
    assert manifest["images_dir"] == str(shared[0].resolve())
    assert manifest["pixels_sha256"] == old["pixels_sha256"]
    assert np.array_equal(_pixels(shared[0]), _pixels(tmp_path / "old_source"))
    for i, (metrics, _) in enumerate(results):   # the plugin's number, from the old folder by hand (float64)
        x = _pixels(tmp_path / f"trial{i}" / "samples").astype(np.float64) / 255
        s = _pixels(tmp_path / "old_source").astype(np.float64) / 255
        assert metrics["eval/test/source_change"] == pytest.approx(np.abs(x - s).mean(), rel=1e-5)   # float32 mean

    # a damaged shared folder (a PNG gone) is rendered again, in place, with the same pixels
    list_images(shared[0])[3].unlink()
    again = shared_source_samples(src, cfg)
    assert again["images_dir"] == str(shared[0].resolve()) and len(list_images(shared[0])) == 12
    assert np.array_equal(_pixels(shared[0]), _pixels(tmp_path / "old_source"))
    assert [p for p in shared[0].parent.iterdir() if p.is_dir()] == [shared[0]]   # no temporary folder left


def test_concurrent_trials_render_the_shared_source_folder_once(tiny_models, tmp_path, monkeypatch,
                                                                one_torch_thread):
    """Two trials asking at the same moment (threads here; the lock is a flock on the folder's lock file, so
    separate processes behave the same): one renders, the other waits and reads the same complete folder."""
    cfg = EvalConfig(num_samples=8, batch_size=4, image_size=None, device="cpu", progress=False,
                     cache_dir=str(tmp_path / "cache"))
    renders = []
    real = sampling.sample_to_folder
    monkeypatch.setattr(sampling, "sample_to_folder", lambda *a, **kw: renders.append(1) or real(*a, **kw))
    barrier = threading.Barrier(2)
    out: list[dict] = []

    def trial():
        barrier.wait()
        out.append(shared_source_samples(tiny_models["generator"], cfg))

    threads = [threading.Thread(target=trial) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(renders) == 1 and len(out) == 2 and out[0] == out[1]
    assert len(list_images(out[0]["images_dir"])) == 8


# ---- pocket reference features on disk ---------------------------------------------------------------
def test_pocket_reference_features_on_disk_equal_a_fresh_computation(tmp_path, monkeypatch, one_torch_thread):
    folder = refs.save_folder(W.reference_images("a red circle", 24, seed=5), tmp_path / "ref")
    fresh = PM.judge_feature_array(load_images(list_images(folder)))
    _clear_pocket_caches()
    assert np.array_equal(PM.reference_features(folder), fresh)
    saved = list(folder.glob(".judge_features-*.npz"))
    assert len(saved) == 1 and list_images(folder) == sorted(folder.glob("*.png"))   # not an image

    _clear_pocket_caches()   # a new process: the array comes from disk, no feature pass
    with monkeypatch.context() as m:
        m.setattr(PM, "judge_feature_array", lambda x: pytest.fail("reference features computed again"))
        assert np.array_equal(PM.reference_features(folder), fresh)

    # saved with other kernels (e.g. MKL_CBWR=COMPATIBLE moves the judge's last bits): not loaded here
    _clear_pocket_caches()
    with monkeypatch.context() as m:
        calls = []
        m.setattr(PM, "compute_environment", lambda: "another torch|AVX2|COMPATIBLE||another CPU")
        m.setattr(PM, "judge_feature_array", lambda x: calls.append(len(x)) or fresh)
        PM.reference_features(folder)
        assert calls == [24] and len(list(folder.glob(".judge_features-*.npz"))) == 2

    # the folder rewritten (another image, newer mtime): computed again, the new images' features
    first = list_images(folder)[0]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(first)
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    _clear_pocket_caches()
    now = PM.reference_features(folder)
    assert np.array_equal(now, PM.judge_feature_array(load_images(list_images(folder))))
    assert not np.array_equal(now[0], fresh[0]) and np.array_equal(now[1:], fresh[1:])


# ---- the demo's evaluation block, old way vs now ------------------------------------------------------
def _old_way(samples: Path, prompt: str, cfg: EvalConfig, old_source: Path) -> dict[str, float]:
    """Every metric of the demo block as the per-trial code computed it: a fresh pocket-CLIP, a freshly
    rendered source folder, judge features / predictions from freshly decoded PNGs (no cache anywhere)."""
    spec = cfg.clip.models[0]
    loaded = load_open_clip(spec.name, spec.pretrained, device="cpu", dtype=torch.float32)
    clip = score_from_cosines(clip_cosines(list_images(samples), prompt, loaded, cfg.batch_size))
    suffix = metric_suffix(spec.name, spec.pretrained)
    model = build_feature_model(cfg.fid, torch.device("cpu"))
    feats_cf = folder_features(samples, model, cfg.fid.mode, torch.device("cpu"), batch_size=cfg.batch_size,
                               progress=False)

    def decoded(folder):
        return load_images(list_images(folder))

    new_pred = PM.judge_images(decoded(samples))
    src_pred = PM.judge_images(decoded(old_source))
    feats = PM.judge_feature_array(decoded(samples))
    target = PM.judge_feature_array(decoded(refs.reference_dir(prompt)))
    source = PM.judge_feature_array(decoded(refs.reference_dir(None)))
    plugin = {**PM.accuracy_of(new_pred, prompt), **PM.preservation_of(src_pred, new_pred, prompt),
              "pocket/fid_gt": PM.judge_fid(feats, target), "pocket/fid_source": PM.judge_fid(feats, source)}
    return {"eval/clip_score": clip.score, "eval/clip_score_raw": clip.raw, f"eval/clip_score/{suffix}": clip.score,
            f"eval/clip_score_raw/{suffix}": clip.raw, "eval/feature_diversity": feature_diversity(feats_cf),
            **{f"eval/{k}": float(v) for k, v in plugin.items()}}


def test_demo_evaluation_block_metrics_equal_the_old_way(tmp_path, model_cache_on, monkeypatch, one_torch_thread):
    block = yaml.safe_load((REPO / "sweeps" / "pocket" / "demo.yaml").read_text())["evaluation"]
    block["clip"]["models"] = [{"name": str(POCKET_CLIP[0]), "pretrained": str(POCKET_CLIP[1])}]
    cfg = EvalConfig.model_validate(dict(block, num_samples=64, cache_dir=str(tmp_path / "cache")))
    prompt = "a red circle"
    ref_passes, renders = [], []
    real_features, real_render = PM.judge_feature_array, sampling.sample_to_folder

    def counting_features(x):
        ref_passes.append(len(x))
        return real_features(x)

    def counting_render(g, z, out_dir, **kw):
        renders.append(Path(out_dir).name)
        return real_render(g, z, out_dir, **kw)

    results = []
    monkeypatch.setattr(PM, "judge_feature_array", counting_features)   # counts passes; the real ones run
    monkeypatch.setattr(sampling, "sample_to_folder", counting_render)
    for i in range(2):
        _clear_pocket_caches()   # the second evaluation starts like a new worker (on-disk caches kept)
        ref_passes.clear()
        renders.clear()
        adapted = _perturbed(POCKET_G, tmp_path / f"adapted{i}.pt", seed=10 + i)
        metrics, _ = evaluate_generator(adapted, prompt, cfg, tmp_path / f"trial{i}", source_generator=POCKET_G)
        assert not metrics.errors, {u: e.reason for u, e in metrics.errors.items()}
        results.append((metrics, list(ref_passes), list(renders), model_cache_on.stats()))
    monkeypatch.undo()

    metrics1, passes1, renders1, stats1 = results[1]
    assert renders1 == ["samples"]                                   # no source render
    assert passes1 == [64]                                           # the samples only: references from disk
    assert stats1.misses == 1 and stats1.hits >= 1                   # pocket-CLIP built once (score, preservation)
    old_source = tmp_path / "old_source"
    sample_source_generator(POCKET_G, old_source, cfg)
    for i, (metrics, *_) in enumerate(results):
        want = _old_way(tmp_path / f"trial{i}" / "samples", prompt, cfg, old_source)
        assert {k: v for k, v in metrics.items() if not k.startswith("eval/preservation/")} == want   # bit for bit
        assert {"eval/preservation/clip", "eval/preservation/features"} <= set(metrics)   # the demo's parts
    assert results[0][0]["eval/pocket/preservation"] > 0.5           # a meaningful comparison, not all zeros
