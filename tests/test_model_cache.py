"""trainables.frozen.model_cache: the per-process cache of frozen models that sweep trials in a reused worker share.

On the real loaders (tiny SD directory and tiny open_clip model from `tiny_models`, loaded through
FusionGuidance / NadaGuidance exactly as a trial does): off by default (two builds, two objects); when on, the
same key returns the same object, while a touched or resized file, another dtype or image_size is a miss; the
LRU bound evicts; an adaptation that reuses a cached model gives bit for bit the generator of a fresh one (the
shared model is not changed by the run that loaded it, nor does skipping the load move any random stream).
The last test runs a real 2-trial sweep (embedded Ray Tune, the real loop on the tiny models) and reads the
trials' `sweep.model_cache` tags: the second trial, in the first one's reused worker, hits.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_adapt_dict
from trainables.frozen import model_cache
from trainables.config import AdaptConfig
from trainables.guidance.fusion import FusionGuidance
from trainables.guidance.nada import NadaGuidance
from trainables.adaptation.loop import adapt

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def own_models(tiny_models, tmp_path) -> dict[str, Path]:
    """A private copy of the tiny models (tests here touch and resize files; the session fixture stays intact)."""
    shutil.copytree(tiny_models["sd"], tmp_path / "sd")
    shutil.copytree(tiny_models["clip_config"].parent, tmp_path / "clip")
    return {**tiny_models, "sd": tmp_path / "sd",
            "clip_config": tmp_path / "clip" / tiny_models["clip_config"].name,
            "clip_weights": tmp_path / "clip" / tiny_models["clip_weights"].name}


def _cfg(models: dict[str, Path], out: Path, **over) -> AdaptConfig:
    return AdaptConfig.model_validate(tiny_adapt_dict(models, out, **over))


def _fusion(cfg: AdaptConfig) -> FusionGuidance:
    return FusionGuidance.from_config(cfg, "cpu")


def test_off_by_default_two_builds_give_two_objects(own_models, tmp_path, one_torch_thread):
    assert not model_cache.enabled(), "something turned the model cache on outside a sweep trial"
    cfg = _cfg(own_models, tmp_path / "run")
    a, b = _fusion(cfg), _fusion(cfg)
    assert a.model is not b.model and a.model.unet is not b.model.unet
    n1, n2 = NadaGuidance.from_config(cfg, "cpu"), NadaGuidance.from_config(cfg, "cpu")
    assert n1.models[0][0] is not n2.models[0][0]
    assert model_cache.size() == 0 and model_cache.stats().hits == 0


def test_hit_returns_the_same_object(model_cache_on, own_models, tmp_path, one_torch_thread):
    cfg = _cfg(own_models, tmp_path / "run")
    a = _fusion(cfg)
    b = _fusion(cfg.model_copy(update={"seed": 7, "prompt": "a blue circle"}))   # not part of the model's key
    assert b.model is a.model
    n1, n2 = NadaGuidance.from_config(cfg, "cpu"), NadaGuidance.from_config(cfg, "cpu")
    assert n2.models[0][0] is n1.models[0][0]
    s = model_cache_on.stats()
    assert (s.hits, s.misses, model_cache_on.size()) == (2, 2, 2)
    # the shared model is still frozen after a guidance used it
    assert not any(p.requires_grad for p in b.model.unet.parameters())


def test_changed_file_mtime_or_size_is_a_miss(model_cache_on, own_models, tmp_path, one_torch_thread):
    cfg = _cfg(own_models, tmp_path / "run")
    first = _fusion(cfg).model
    unet_cfg = own_models["sd"] / "unet" / "config.json"
    st = unet_cfg.stat()
    os.utime(unet_cfg, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))    # same bytes, new mtime
    second = _fusion(cfg).model
    assert second is not first
    with unet_cfg.open("a") as fh:                                            # same mtime, new size
        fh.write("\n")
    os.utime(unet_cfg, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    third = _fusion(cfg).model
    assert third is not second and _fusion(cfg).model is third

    clip = NadaGuidance.from_config(cfg, "cpu").models[0][0]
    w = own_models["clip_weights"]
    st = w.stat()
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert NadaGuidance.from_config(cfg, "cpu").models[0][0] is not clip
    assert model_cache_on.stats().misses == 5


def test_changed_dtype_or_image_size_is_a_miss(model_cache_on, own_models, tmp_path, one_torch_thread):
    base = _cfg(own_models, tmp_path / "run")
    fp32 = _fusion(base).model
    resized = _fusion(_cfg(own_models, tmp_path / "run", guidance__image_size=32)).model
    bf16 = _fusion(_cfg(own_models, tmp_path / "run", guidance__precision="bf16")).model
    reference = _fusion(_cfg(own_models, tmp_path / "run", guidance__engine="reference")).model   # fast=False
    assert (fp32.image_size, resized.image_size) == (16, 32)
    assert bf16.dtype == torch.bfloat16 and next(bf16.unet.parameters()).dtype == torch.bfloat16
    assert len({id(fp32), id(resized), id(bf16), id(reference)}) == 4
    assert _fusion(base).model is fp32 and model_cache_on.stats().misses == 4
    # what the key is made of, checked directly: dtype and device by name, every other argument by value
    key = model_cache.make_key("k", (str(own_models["sd"]),), {"dtype": torch.float16, "device": torch.device("cpu")})
    assert key[2] == (("device", "cpu"), ("dtype", "torch.float16"))


def test_bound_evicts_the_least_recently_used(model_cache_on):
    model_cache_on.enable(2)
    built: list[str] = []

    def get(name: str) -> object:
        return model_cache_on.cached("test", lambda: built.append(name) or object(), name=name)

    a = get("a")
    get("b")
    assert get("a") is a                 # a is now the most recently used
    get("c")                             # over the bound: evicts b (least recently used), not a
    assert model_cache_on.size() == 2 and get("a") is a
    get("b")                             # b was evicted: built again (and c goes)
    assert built == ["a", "b", "c", "b"]
    assert model_cache_on.stats().evictions == 2
    model_cache_on.enable(1)                      # a smaller bound applies at once
    assert model_cache_on.size() == 1
    model_cache_on.enable(0)                      # 0 = off: builds every time, holds nothing
    assert not model_cache_on.enabled() and model_cache_on.size() == 0
    assert get("x") is not get("x")


def test_hub_id_stamp_follows_the_cached_revision(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    refs = tmp_path / "models--org--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("1111aaaa")
    assert model_cache.stamp("org/model") == ("org/model", "1111aaaa")
    (refs / "main").write_text("2222bbbb")                     # a newer snapshot pulled into the cache
    assert model_cache.stamp("org/model") == ("org/model", "2222bbbb")
    assert model_cache.stamp("ViT-B-32") == "ViT-B-32" and model_cache.stamp(None) is None


@pytest.mark.parametrize("method", ["fusion", "nada"])
def test_cached_model_adapts_bit_for_bit_like_a_fresh_one(method, tiny_models, tmp_path, one_torch_thread):
    """fresh load (cache off) vs. the second run of a warm cache (its guidance model is the one the first
    cached run used and left behind): identical adapted generators."""
    over = {"method": method, "train__iterations": 3, "train__sample_every": 0}

    def run(name: str) -> dict[str, torch.Tensor]:
        result = adapt(_cfg(tiny_models, tmp_path / name, **over), progress=False)
        return torch.load(result.generator_path, map_location="cpu", weights_only=True)["g_ema"]

    model_cache.disable()
    try:
        fresh = run("fresh")
        model_cache.enable(4)
        run("warm")
        cached = run("cached")
        assert model_cache.stats().hits == 1
    finally:
        model_cache.disable()
    moved = [k for k in fresh if not torch.equal(fresh[k], torch.load(
        tiny_models["generator"], map_location="cpu", weights_only=True)["g_ema"][k])]
    assert moved, "the adaptation moved no weight: the comparison below would prove nothing"
    diff = [k for k in fresh if not torch.equal(fresh[k], cached[k])]
    assert not diff, f"a run on the cached {method} model differs from a fresh one in {diff[:4]}"


@pytest.mark.slow
def test_second_trial_in_a_reused_worker_hits(tiny_models, tmp_path):
    """A real sweep (embedded Ray Tune, MLflow store, the real loop on tiny models), one trial at a time so
    the second trial runs in the first one's worker: its tag `sweep.model_cache` says it loaded nothing."""
    from mlflow.tracking import MlflowClient

    base = tiny_adapt_dict(tiny_models, tmp_path / "unused", train__iterations=2, train__sample_every=0)
    base.pop("output_dir")
    spec = {"name": "cache", "base": base, "grid": {"seed": [0, 1]}, "resources": {"cpu": 1},
            "max_concurrent_trials": 1, "storage_path": str(tmp_path / "storage")}
    path = tmp_path / "cache.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "sweeps", "run", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cache")
    trials = sorted((r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweep.role") == "trial"),
                    key=lambda r: r.data.tags["sweep.trial_name"])
    tags = [r.data.tags.get("sweep.model_cache") for r in trials]
    assert tags == ["0 hits, 1 misses", "1 hits, 0 misses"], tags
