"""Fixed-latent sampling: N images per generator, the same z for every method and seed of a comparison.

Latents are created once from a seed (`torch.Generator("cpu")`, z ~ N(0, I)), saved as a .pt and reused; their
sha256 is recorded in every manifest, so a table can tell whether two runs saw the same z. Each image is
    x = G.synthesis(G.truncate(G.broadcast(G.mapping(z)), psi), noise_mode="const")
i.e. truncation around the centre `truncation_center` names (the authors': a fresh mean of 4096 mapped z,
`model/ZSSGAN.py:45,127`, drawn here from a seeded CPU generator; or the checkpoint's latent_avg) and the
generator's registered (constant) noise buffers, written as `{i:05d}.png` at the evaluation resolution next to
`manifest.json`: resized with `image_resize` (the authors': bilinear without antialias, `ZSSGAN.py:128`) and
quantized with `image_quantize` (the authors': torchvision's `save_image(normalize=True, range=(-1, 1))`,
`utils/file_utils.py:27-34`).

The frozen SOURCE generator is the same for every trial of a sweep: `shared_source_samples` renders it once
per (checkpoint content, latents, sampling settings) into `cache_dir/source_samples/<key>` (under a file
lock, in a temporary folder renamed into place: concurrent trials never read a partial one), and every later
evaluation, in any worker or later sweep, reads that folder instead of rendering and writing the same PNGs
again. Its key holds `compute_environment()`: a folder rendered with other kernels (another torch, CPU or
GPU) is not reused.
"""
from __future__ import annotations

import fcntl
import logging
import hashlib
import json
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from trainables.devices import resolve_device  # noqa: F401  (re-exported for evaluation.fid, runner, diversity)
from trainables.generators.kinds import kind_of, load_any
from trainables.protocols import GeneratorKind, RecenterableKind, missing_members

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SOURCE_SAMPLES_DIR = "source_samples"   # under EvalConfig.cache_dir: the shared source-generator samples


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=4)
def compute_environment(device: str = "cpu") -> str:
    """What a float result depends on besides its inputs and code: the torch version, the CPU kernels it
    dispatches to (capability; MKL_CBWR / ATEN_CPU_CAPABILITY overrides), the CPU model, and on cuda the GPU.
    On-disk caches of computed arrays key on it, so a cached value is the one a fresh computation here gives."""
    lines = _read_lines("/proc/cpuinfo")
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    parts = [torch.__version__, torch.backends.cpu.get_cpu_capability(), os.environ.get("MKL_CBWR", ""),
             os.environ.get("ATEN_CPU_CAPABILITY", ""), cpu]
    if device.startswith("cuda"):
        parts.append(torch.cuda.get_device_name(torch.device(device)))
    return "|".join(parts)


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


# ---- latents -----------------------------------------------------------------------------------------
def default_latents_path(cache_dir: str | Path, seed: int, num: int, z_dim: int) -> Path:
    return Path(cache_dir).expanduser() / "latents" / f"latents_seed{seed}_n{num}_d{z_dim}.pt"


def make_latents(num: int, z_dim: int, seed: int) -> torch.Tensor:
    """z ~ N(0, I) [num, z_dim] from a CPU generator: identical on every machine and device."""
    gen = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(num, z_dim, generator=gen, dtype=torch.float32)


def load_or_create_latents(path: str | Path, num: int, z_dim: int, seed: int) -> torch.Tensor:
    """The first `num` rows of the latents file; the file is created from `seed` when missing.

    An existing file is never rewritten: a file with too few rows or another z_dim is an error.
    """
    path = Path(path).expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        z = make_latents(num, z_dim, seed)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save({"z": z, "seed": seed, "num": num, "z_dim": z_dim}, tmp)
        tmp.replace(path)   # atomic: concurrent trials never read a half-written file
    data = torch.load(path, map_location="cpu", weights_only=True)
    z = data["z"] if isinstance(data, dict) else data
    if z.ndim != 2 or z.shape[1] != z_dim:
        raise ValueError(f"latents file {path} has shape {tuple(z.shape)}; this generator needs [N, {z_dim}]")
    if z.shape[0] < num:
        raise ValueError(f"latents file {path} holds {z.shape[0]} latents, {num} requested")
    return z[:num].float()


# ---- images ------------------------------------------------------------------------------------------
RESIZES = ("bilinear", "bilinear_antialias")   # F.interpolate bilinear (half-pixel centres), without / with antialias
QUANTIZES = ("save_image", "round")             # floor(255 (x + 1) / 2 + 0.5) (torchvision) / round-half-even(127.5 (x + 1))


def to_uint8(x: torch.Tensor, size: int | None = None, resize: str = "bilinear",
             quantize: str = "save_image") -> np.ndarray:
    """[N, 3, H, W] in about [-1, 1] -> [N, size, size, 3] uint8.

    resize (when `size` differs): "bilinear" is the authors' `F.interpolate(img, 512, 'bilinear',
    align_corners=False)` (ZSSGAN.py:128; no antialias: a 1024 -> 512 downsize averages 2x2 blocks),
    "bilinear_antialias" the same with antialias=True (a triangle filter over the source footprint).
    quantize: "save_image" is torchvision's save_image(normalize=True, value_range=(-1, 1)): clamp, (x + 1) / 2,
    then floor(255 y + 0.5); "round" is round-half-to-even of 127.5 (x + 1)."""
    if resize not in RESIZES or quantize not in QUANTIZES:
        raise ValueError(f"resize must be one of {RESIZES} (got {resize!r}), quantize one of {QUANTIZES} "
                         f"(got {quantize!r})")
    x = x.float()
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=resize == "bilinear_antialias")
    x = x.clamp(-1, 1)
    if quantize == "save_image":
        x = ((x + 1) / 2).mul(255).add(0.5).clamp(0, 255).to(torch.uint8)   # uint8 cast truncates: floor
    else:
        x = ((x + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


CENTERS = ("mean_latent", "checkpoint")


@torch.no_grad()
def recenter_truncation(kind: GeneratorKind, g, center: str, samples: int, seed: int) -> str:
    """Set the truncation centre of a freshly loaded generator: "mean_latent" = the mean of `samples` mapped
    z ~ N(0, I) drawn from torch.Generator("cpu").manual_seed(seed) (the authors' `mean_latent(4096)`, unseeded
    there); "checkpoint" = keep the checkpoint's stored average (w_avg / latent_avg). Returns the centre used: a
    kind that does not declare `RecenterableKind` (one of one's own, say) keeps its own centre, and says so."""
    if center not in CENTERS:
        raise ValueError(f"truncation_center must be one of {CENTERS}, got {center!r}")
    if center == "mean_latent":
        missing = missing_members(kind, RecenterableKind)
        if missing:
            log.warning("generator kind %r declares no %s (trainables.protocols.RecenterableKind): evaluated around "
                        "its own truncation centre, not a fresh mean latent", kind.name, ", ".join(missing))
            return f"checkpoint (kind {kind.name} declares no mean_latent)"
        kind.set_truncation_center(g, kind.mean_latent(g, samples, torch.Generator("cpu").manual_seed(seed)))
    return center


def list_images(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() == ".png" and p.name[0] != ".")


def load_images(paths: list[Path], size: int | None = None) -> torch.Tensor:
    """PNG files -> float32 [N, 3, H, W] in [0, 1] (optionally resized)."""
    arr = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


# ---- sampling ----------------------------------------------------------------------------------------
@torch.no_grad()
def sample_to_folder(
    generator: torch.nn.Module,
    z: torch.Tensor,
    out_dir: str | Path,
    *,
    truncation: float,
    batch_size: int = 16,
    image_size: int | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    manifest_extra: dict[str, Any] | None = None,
    kind: GeneratorKind | None = None,
    resize: str = "bilinear",
    quantize: str = "save_image",
) -> dict[str, Any]:
    """Render `z` through `generator` into `out_dir` ({i:05d}.png + manifest.json); returns the manifest.

    `kind` (trainables.generators.kinds) says how latents become images (default: the registered kind that owns
    `generator`): StyleGAN2 maps W+; EG3D renders
    fixed (z, camera) pairs."""
    kind = kind or kind_of(generator)

    dev = resolve_device(device) if isinstance(device, str) else device
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in list_images(out):
        stale.unlink()
    g = generator.to(dev).eval()
    native = None
    digests = []
    bar = tqdm(total=len(z), desc=f"sampling {out.name}", unit="img", disable=not progress)
    for start in range(0, len(z), batch_size):
        zb = z[start : start + batch_size].to(dev)
        x = kind.render_grid(g, kind.eval_inputs(g, zb, truncation, first_index=start))
        native = int(x.shape[-1])
        for i, img in enumerate(to_uint8(x, image_size, resize, quantize)):
            name = out / f"{start + i:05d}.png"
            Image.fromarray(img).save(name)
            digests.append(hashlib.sha256(img.tobytes()).hexdigest())
        bar.update(len(zb))
    bar.close()
    manifest = {
        "count": len(z),
        "truncation": truncation,
        "noise_mode": "const",
        "resolution": image_size if image_size is not None else native,
        "native_resolution": native,
        "images_dir": str(out.resolve()),
        "file_pattern": "{i:05d}.png",
        "pixels_sha256": hashlib.sha256("".join(digests).encode()).hexdigest(),   # over decoded pixels, in order
        "device": str(dev),
        "generator_kind": kind.name,
        "resize": resize,
        "quantize": quantize,
    }
    manifest.update(manifest_extra or {})
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def _load_generator(path: str | Path, kind: str | None = None):
    """(kind, generator) for any supported checkpoint (StyleGAN2 formats, EG3D), or by the named kind (a run's
    `generator.kind`: a kind of one's own is not found by content)."""
    return load_any(str(path), kind)


def _manifest_matches(out: Path, want: dict[str, Any]) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        have = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if any(have.get(k) != v for k, v in want.items()):
        return None
    if len(list_images(out)) != have.get("count"):
        return None
    return have


def sample_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    num_samples: int,
    truncation: float,
    latents_path: str | Path | None = None,
    latents_seed: int = 0,
    cache_dir: str | Path = "~/.cache/sgf-evaluation",
    batch_size: int = 16,
    image_size: int | None = 512,
    device: str = "auto",
    progress: bool = True,
    reuse: bool = True,
    kind: str | None = None,
    resize: str = "bilinear",
    quantize: str = "save_image",
    truncation_center: str = "mean_latent",
    center_samples: int = 4096,
    center_seed: int = 0,
) -> dict[str, Any]:
    """Sample a checkpoint with the fixed latents; reuses `out_dir` when its manifest already matches. `kind`:
    the generator kind's name (None: the registered kind that recognises the file). `resize` / `quantize`:
    `to_uint8`; `truncation_center` (with its samples and seed): `recenter_truncation`.

    The manifest records checkpoint path + sha256, latents file + sha256 + seed, truncation, count, resolution.
    """
    checkpoint = Path(checkpoint).expanduser().resolve()
    if not checkpoint.exists():
        raise FileNotFoundError(f"generator checkpoint not found: {checkpoint}")
    ckpt_sha = sha256_file(checkpoint)
    kind_name, g, kind = kind, None, None
    if latents_path is None:
        kind, g = _load_generator(checkpoint, kind_name)
        latents_path = default_latents_path(cache_dir, latents_seed, num_samples, int(kind.z_dim(g)))
    latents_path = Path(latents_path).expanduser().resolve()
    out = Path(out_dir)
    if reuse and latents_path.exists():
        want = {
            "checkpoint_sha256": ckpt_sha,
            "latents_sha256": sha256_file(latents_path),
            "truncation": truncation,
            "count": num_samples,
            "requested_resolution": image_size,
            "resize": resize,
            "quantize": quantize,
            "truncation_center": _center_label(truncation_center, center_samples, center_seed, truncation),
        }
        have = _manifest_matches(out, want)
        if have is not None:
            return have
    if g is None:
        kind, g = _load_generator(checkpoint, kind_name)
    used = "none"
    if truncation != 1:   # psi = 1 renders w itself: no centre is read
        used = recenter_truncation(kind, g, truncation_center, center_samples, center_seed)
    z = load_or_create_latents(latents_path, num_samples, int(kind.z_dim(g)), latents_seed)
    extra = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": ckpt_sha,
        "latents": str(latents_path),
        "latents_sha256": sha256_file(latents_path),
        "latents_seed": latents_seed,
        "requested_resolution": image_size,
        "truncation_center": _center_label(truncation_center, center_samples, center_seed, truncation),
        "truncation_center_used": used if used != "mean_latent" else _center_label(
            truncation_center, center_samples, center_seed, truncation),
    }
    return sample_to_folder(
        g, z, out, truncation=truncation, batch_size=batch_size, image_size=image_size,
        device=device, progress=progress, manifest_extra=extra, kind=kind, resize=resize, quantize=quantize,
    )


def _center_label(center: str, samples: int, seed: int, truncation: float) -> str:
    """The manifest's record of the truncation centre ("none" at psi = 1, where no centre is read)."""
    if truncation == 1:
        return "none"
    return f"mean_latent:{samples}:seed{seed}" if center == "mean_latent" else center


def sample_for_eval(checkpoint: str | Path, out_dir: str | Path, cfg, kind: str | None = None) -> dict[str, Any]:
    """`sample_checkpoint` with an EvalConfig's settings."""
    return sample_checkpoint(
        checkpoint, out_dir, num_samples=cfg.num_samples, truncation=cfg.truncation,
        latents_path=cfg.latents.path, latents_seed=cfg.latents.seed, cache_dir=cfg.cache_dir,
        batch_size=cfg.batch_size, image_size=cfg.image_size, device=cfg.device, progress=cfg.progress, kind=kind,
        resize=cfg.image_resize, quantize=cfg.image_quantize, truncation_center=cfg.truncation_center,
        center_samples=cfg.truncation_center_samples, center_seed=cfg.truncation_center_seed,
    )


def sample_source_generator(source_checkpoint: str | Path, out_dir: str | Path, cfg,
                            kind: str | None = None) -> dict[str, Any]:
    """The frozen source generator with exactly the latents, truncation and size of the adapted one.

    For attribute-preservation plugins: image i of both folders comes from the same z.
    """
    return sample_for_eval(source_checkpoint, out_dir, cfg, kind=kind)


def shared_source_samples(source_checkpoint: str | Path, cfg, kind: str | None = None) -> dict[str, Any]:
    """`sample_source_generator`'s folder, rendered once per (source checkpoint sha256, latents, count,
    truncation, size, batch size, device, compute_environment) into `cfg.cache_dir/source_samples/<key>` and
    reused afterwards (the manifest is checked as `sample_checkpoint` checks a reused folder); returns its
    manifest, whose `images_dir` is the folder. Same pixels as rendering it per trial: same code, latents,
    settings and kernels. One process renders it (a file lock); concurrent trials wait for it, then read."""
    checkpoint = Path(source_checkpoint).expanduser().resolve()
    if not checkpoint.exists():
        raise FileNotFoundError(f"source generator checkpoint not found: {checkpoint}")
    device = str(resolve_device(cfg.device))
    key = {
        "checkpoint_sha256": sha256_file(checkpoint),
        "latents": str(Path(cfg.latents.path).expanduser().resolve()) if cfg.latents.path else None,
        "latents_seed": cfg.latents.seed,
        "count": cfg.num_samples,
        "truncation": cfg.truncation,
        "requested_resolution": cfg.image_size,
        "resize": cfg.image_resize,
        "quantize": cfg.image_quantize,
        "truncation_center": _center_label(cfg.truncation_center, cfg.truncation_center_samples,
                                           cfg.truncation_center_seed, cfg.truncation),
        "batch_size": cfg.batch_size,
        "device": device,
        "environment": compute_environment(device),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    root = Path(cfg.cache_dir).expanduser() / SOURCE_SAMPLES_DIR
    final = root / digest
    have = _shared_folder_manifest(final, key)
    if have is not None:
        return have
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = _shared_folder_manifest(final, key)   # rendered by another trial while this one waited
        if have is not None:
            return have
        shutil.rmtree(final, ignore_errors=True)     # damaged, or made from a latents file rewritten since
        tmp = final.with_name(f"{digest}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        manifest = sample_source_generator(checkpoint, tmp, cfg, kind=kind)
        manifest["images_dir"] = str(final.resolve())
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        tmp.rename(final)                            # complete before it appears (readers take no lock)
    return manifest


def _shared_folder_manifest(folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of a complete shared source folder made with `key`'s settings, else None."""
    try:
        latents = json.loads((folder / MANIFEST).read_text()).get("latents")
    except (OSError, json.JSONDecodeError):
        return None
    if not latents or not Path(latents).is_file():
        return None
    want = {k: key[k] for k in ("checkpoint_sha256", "truncation", "count", "requested_resolution", "resize",
                                "quantize", "truncation_center")}
    want["latents_sha256"] = sha256_file(latents)   # the latents file still holds the z it was rendered from
    return _manifest_matches(folder, want)
