"""FID and KID with clean-fid, reference statistics cached on disk, offline Inception, pluggable features.

Features come from clean-fid's own folder pipeline (`cleanfid.fid.get_folder_features`: its resize for the
mode, its Inception wrapper), always with an explicit device and `num_workers=0`. FID is clean-fid's
`frechet_distance` on (mu, sigma) and KID is `cleanfid.fid.kernel_distance` on the same feature arrays, so
one feature pass of the generated set gives FID, KID and the feature-space diversity.

Reference statistics (mu, sigma and the features themselves, for KID) are computed once per
(reference content hash, mode, feature input resolution, feature model) and stored as .npz in the cache dir;
a later call loads them and runs no feature pass over the reference set.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from trainables.devices import resolve_device
from trainables.objects import import_object  # noqa: F401  (re-exported: evaluation.runner, preflight)

from .defaults import CLEANFID_INCEPTION

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
IMAGE_EXTS = {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}


class InceptionMissingError(FileNotFoundError):
    """The Inception torchscript file clean-fid needs is not on this machine (no download is attempted)."""


# ---- feature extractors ------------------------------------------------------------------------------
@dataclass
class FeatureModel:
    """A clean-fid feature extractor plus what the cache key needs to know about it."""

    fn: Callable[[torch.Tensor], torch.Tensor]   # float32 [B, 3, H, W] in [0, 255] -> [B, D]
    model_id: str                                # identity in the cache key
    custom_fn_resize: Callable | None            # None = the mode's clean-fid resize
    resolution: str                              # feature input resolution in the cache key ("299", "native")


def ensure_inception(inception_path: str | Path = CLEANFID_INCEPTION) -> Path:
    """Make clean-fid find `inception-2015-12-05.pt` at its hard-coded /tmp path, never downloading it.

    clean-fid (non-Windows) loads `/tmp/inception-2015-12-05.pt` and fetches it by urllib when absent. When the
    file is pre-staged elsewhere (`fid.inception_path`), it is symlinked (or copied) to the /tmp path.
    """
    target = Path(CLEANFID_INCEPTION)
    source = check_inception(inception_path)
    if source != target:
        try:
            target.symlink_to(source.resolve())
        except OSError:
            shutil.copyfile(source, target)
    return target


def check_inception(inception_path: str | Path = CLEANFID_INCEPTION) -> Path:
    """The Inception file clean-fid will use (its /tmp path, else `inception_path`), without touching
    anything; `InceptionMissingError` (where we looked, how to fetch) when neither exists. Preflight uses it."""
    target = Path(CLEANFID_INCEPTION)
    source = Path(inception_path).expanduser()
    if target.exists():
        return target
    if source != target and source.is_file():
        return source
    raise InceptionMissingError(
        f"clean-fid's Inception network is missing: looked for {source}"
        + (f" and {target}" if source != target else "")
        + ". This machine cannot download it. Fetch it where the internet is reachable "
        f"(curl -L -o inception-2015-12-05.pt {INCEPTION_URL}), copy it to {target} (clean-fid's fixed "
        "location) or anywhere and set `fid.inception_path`, or use `fid.feature_extractor: module:function` "
        "with a custom extractor. (Feature diversity uses these features too: with fid disabled, set "
        "`diversity.feature.enabled: false` to run without Inception.)"
    )


# legacy_pytorch: clean-fid's `pytorch_inception` = pytorch-fid's port of the TF FID Inception (StudioGAN's
# InceptionV3_tf), loaded by torch.hub's `load_state_dict_from_url` from its cache (never downloaded here)
PT_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
PT_INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PT_INCEPTION_FILE}"


def pt_inception_cache_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / PT_INCEPTION_FILE


def check_pt_inception(path: str | Path | None = None) -> Path:
    """The pytorch-fid Inception weights `legacy_pytorch` mode loads (torch hub's cache, else `path`);
    `InceptionMissingError` with the fix when neither exists. Cheap: preflight uses it."""
    target = pt_inception_cache_path()
    if target.is_file():
        return target
    if path is not None and Path(path).expanduser().is_file():
        return Path(path).expanduser()
    raise InceptionMissingError(
        f"fid.mode legacy_pytorch needs pytorch-fid's FID Inception weights ({PT_INCEPTION_FILE}), missing at "
        f"{target}" + (f" and {Path(path).expanduser()}" if path else "") + ". This machine cannot download them. "
        f"Fetch {PT_INCEPTION_URL} where the internet is reachable and put it at {target} (torch hub's cache; "
        "$TORCH_HOME moves it) or set `fid.pt_inception_path`; or use fid.mode clean / legacy_tensorflow.")


def ensure_pt_inception(path: str | Path | None = None) -> Path:
    """Make torch hub's cache hold the pytorch-fid Inception weights (a symlink to `path` when staged elsewhere)."""
    target = pt_inception_cache_path()
    source = check_pt_inception(path)
    if source != target:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to(source.resolve())
        except OSError:
            shutil.copyfile(source, target)
    return target


def build_feature_model(fid_cfg: "FidConfig", device: torch.device) -> FeatureModel:
    if fid_cfg.feature_extractor == "inception":
        if fid_cfg.mode == "legacy_pytorch":
            path = ensure_pt_inception(fid_cfg.pt_inception_path)
            model_id = f"pt_inception-2015-12-05:{path.stat().st_size}"
        else:
            path = ensure_inception(fid_cfg.inception_path)
            model_id = f"inception-2015-12-05:{path.stat().st_size}"
        from cleanfid.features import build_feature_extractor  # late: clean-fid ~1.8 s; validate loads fid.py only

        fn = build_feature_extractor(fid_cfg.mode, device=device, use_dataparallel=False)
        # clean: PIL bicubic to 299 outside the net; legacy_pytorch: torch bilinear (no antialias) to 299 outside
        # the net (StudioGAN's `legacy` resizer); legacy_tensorflow: native size in, TF-style resize inside
        resolution = "native" if fid_cfg.mode == "legacy_tensorflow" else "299"
        return FeatureModel(fn=fn, model_id=model_id, custom_fn_resize=None, resolution=resolution)
    factory = import_object(fid_cfg.feature_extractor)
    kwargs: dict[str, Any] = {}
    params = inspect.signature(factory).parameters
    if "device" in params:
        kwargs["device"] = device
    if "mode" in params:
        kwargs["mode"] = fid_cfg.mode
    fn = factory(**kwargs)
    model_id = f"{fid_cfg.feature_extractor}:{getattr(fn, 'cache_id', '')}"
    if fid_cfg.custom_resize == "native" or fid_cfg.mode == "legacy_tensorflow":
        return FeatureModel(fn=fn, model_id=model_id, custom_fn_resize=_identity, resolution="native")
    return FeatureModel(fn=fn, model_id=model_id, custom_fn_resize=None, resolution="299")


def _identity(x):
    return x


def folder_features(folder: str | Path, model: FeatureModel, mode: str, device: torch.device,
                    batch_size: int = 32, progress: bool = True, num: int | None = None) -> np.ndarray:
    """clean-fid features of every image in a folder (sorted, recursive) or .zip: [N, D] float."""
    from cleanfid.fid import get_folder_features  # late: clean-fid ~1.8 s; validate loads fid.py only

    feats = get_folder_features(
        str(folder), model.fn, num_workers=0, num=num, batch_size=batch_size, device=device, mode=mode,
        custom_fn_resize=model.custom_fn_resize, description=f"features {Path(folder).name}",
        verbose=progress,
    )
    return np.asarray(feats, dtype=np.float64)


# ---- reference statistics ----------------------------------------------------------------------------
def reference_files(reference: str | Path) -> list[tuple[str, Path | None]]:
    ref = Path(reference).expanduser()
    if ref.is_dir():
        return [(str(p.relative_to(ref)), p) for p in sorted(ref.rglob("*")) if p.suffix.lower() in IMAGE_EXTS]
    if ref.suffix == ".zip":
        with zipfile.ZipFile(ref) as zf:
            return [(n, None) for n in sorted(zf.namelist()) if Path(n).suffix.lower() in IMAGE_EXTS]
    raise FileNotFoundError(f"FID reference {ref} is neither a folder, a .zip nor a .npz of statistics")


def reference_hash(reference: str | Path) -> str:
    """Content identity of a reference set: sha256 over (relative name, sha256 of bytes) of every image."""
    ref = Path(reference).expanduser()
    h = hashlib.sha256()
    if ref.is_dir():
        files = reference_files(ref)
        if not files:
            raise FileNotFoundError(f"FID reference folder {ref} holds no images")
        for name, path in files:
            h.update(name.encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    else:
        h.update(hashlib.sha256(ref.read_bytes()).digest())
    return h.hexdigest()


def stats_cache_path(cache_dir: str | Path, ref_hash: str, mode: str, resolution: str, model_id: str) -> Path:
    key = json.dumps({"ref": ref_hash, "mode": mode, "res": resolution, "model": model_id}, sort_keys=True)
    return Path(cache_dir).expanduser() / f"ref_{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


@dataclass
class ReferenceStats:
    mu: np.ndarray
    sigma: np.ndarray
    feats: np.ndarray | None     # None for precomputed stats without features (no KID then)
    source: str                  # "computed", "cache:<path>", "precomputed:<path>"


def reference_statistics(reference: str | Path, model: FeatureModel, mode: str, device: torch.device,
                         cache_dir: str | Path, batch_size: int = 32, progress: bool = True) -> ReferenceStats:
    ref = Path(reference).expanduser()
    if not ref.exists():
        raise FileNotFoundError(f"FID reference not found: {ref}")
    if ref.suffix == ".npz":
        data = np.load(ref)
        if "model" in data.files and str(data["model"]) != model.model_id:
            raise ValueError(f"precomputed FID statistics {ref} were made with feature model {data['model']}, "
                             f"this evaluation uses {model.model_id}")
        if "mode" in data.files and str(data["mode"]) != mode:
            raise ValueError(f"precomputed FID statistics {ref} are for mode {data['mode']}, not {mode}")
        feats = data["feats"] if "feats" in data.files else None
        return ReferenceStats(data["mu"], data["sigma"], feats, f"precomputed:{ref}")
    cache = stats_cache_path(cache_dir, reference_hash(ref), mode, model.resolution, model.model_id)
    if cache.exists():
        data = np.load(cache)
        return ReferenceStats(data["mu"], data["sigma"], data["feats"], f"cache:{cache}")
    feats = folder_features(ref, model, mode, device, batch_size=batch_size, progress=progress)
    mu, sigma = feats.mean(axis=0), np.cov(feats, rowvar=False)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")   # concurrent trials: unique temp, atomic rename
    np.savez(tmp, mu=mu, sigma=sigma, feats=feats, reference=str(ref.resolve()), mode=mode,
             resolution=model.resolution, model=model.model_id)
    tmp.replace(cache)
    return ReferenceStats(mu, sigma, feats, "computed")


# ---- metrics -----------------------------------------------------------------------------------------
def fid_from_features(feats: np.ndarray, ref: ReferenceStats) -> float:
    from cleanfid.fid import frechet_distance  # late: clean-fid ~1.8 s; validate loads fid.py only

    mu, sigma = feats.mean(axis=0), np.cov(feats, rowvar=False)
    return max(0.0, float(frechet_distance(mu, sigma, ref.mu, ref.sigma)))   # a set vs itself gives -0.0


def kid_from_features(feats: np.ndarray, ref_feats: np.ndarray, num_subsets: int = 100,
                      max_subset_size: int = 1000, seed: int = 0) -> float:
    """clean-fid's unbiased polynomial-kernel MMD on the same features, with a fixed numpy seed."""
    from cleanfid.fid import kernel_distance  # late: clean-fid ~1.8 s; validate loads fid.py only

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return float(kernel_distance(feats, ref_feats, num_subsets=num_subsets, max_subset_size=max_subset_size))
    finally:
        np.random.set_state(state)


def feature_diversity(feats: np.ndarray, num: int | None = None) -> float:
    """Mean over pairs i < j of 1 - cos(f_i, f_j) of the feature vectors (0 = all identical directions)."""
    f = np.asarray(feats[:num] if num else feats, dtype=np.float64)
    if len(f) < 2:
        raise ValueError("feature diversity needs at least 2 images")
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    cos = f @ f.T
    iu = np.triu_indices(len(f), k=1)
    return float(np.mean(1.0 - cos[iu]))


@dataclass
class FidResult:
    fid: float | None
    kid: float | None
    feats: np.ndarray           # features of the generated set (also used by feature diversity)
    reference_source: str | None


def compute_fid(folder: str | Path, cfg: "EvalConfig", feature_model: FeatureModel | None = None,
                feats: np.ndarray | None = None) -> FidResult:
    """FID (+ KID) of a folder of samples against `cfg.fid.reference`; features returned for diversity.

    `feats` (with the `feature_model` that made them): the samples' features already computed, so the
    folder is not read again (evaluation computes them once for FID and feature diversity).
    """
    device = resolve_device(cfg.device)
    model = feature_model or build_feature_model(cfg.fid, device)
    if feats is None:
        feats = folder_features(folder, model, cfg.fid.mode, device, batch_size=cfg.batch_size,
                                progress=cfg.progress)
    if not cfg.fid.enabled:
        return FidResult(None, None, feats, None)
    if cfg.fid.reference is None:
        raise ValueError("fid.enabled but fid.reference is not set (a folder of real target images or an .npz)")
    ref = reference_statistics(cfg.fid.reference, model, cfg.fid.mode, device, cfg.fid_cache_dir(),
                               batch_size=cfg.batch_size, progress=cfg.progress)
    fid = fid_from_features(feats, ref)
    kid = None
    if cfg.fid.kid:
        if ref.feats is None:
            raise ValueError(f"fid.kid needs reference features; {cfg.fid.reference} holds only mu/sigma "
                             "(save an .npz with a 'feats' array or set fid.kid: false)")
        kid = kid_from_features(feats, ref.feats, cfg.fid.kid_subsets, cfg.fid.kid_subset_size, cfg.fid.kid_seed)
    return FidResult(fid, kid, feats, ref.source)


def save_reference_stats(reference: str | Path, out: str | Path, cfg: "EvalConfig") -> Path:
    """Precompute a reference .npz (mu, sigma, feats) with the config's feature model, for `fid.reference`."""
    device = resolve_device(cfg.device)
    model = build_feature_model(cfg.fid, device)
    stats = reference_statistics(reference, model, cfg.fid.mode, device, cfg.fid_cache_dir(),
                                 batch_size=cfg.batch_size, progress=cfg.progress)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"mu": stats.mu, "sigma": stats.sigma}
    if stats.feats is not None:
        arrays["feats"] = stats.feats
    np.savez(out, mode=cfg.fid.mode, model=model.model_id, **arrays)
    return out

