"""Fixed-latent sampling: determinism, manifest, latents reuse, truncation; a tiny StyleGAN2 (random weights)."""
from __future__ import annotations

import json
import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evaluation.sampling import list_images, sample_checkpoint, sample_to_folder, sha256_file  # noqa: E402


def _tiny_generator(path, seed):
    from trainables.generators import StyleGAN2, StyleGAN2Config, save_rosinality

    torch.manual_seed(seed)
    g = StyleGAN2(StyleGAN2Config(size=32, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16, 32: 16}))
    save_rosinality(g, path)
    return path


def test_sampling_is_deterministic_and_recorded(tmp_path):
    world = {"adapted": _tiny_generator(tmp_path / "adapted.pt", 1), "src": _tiny_generator(tmp_path / "src.pt", 0)}
    kw = dict(num_samples=6, truncation=0.7, latents_path=tmp_path / "z.pt", latents_seed=3, batch_size=4,
              image_size=64, device="cpu", progress=False)
    a = sample_checkpoint(world["adapted"], tmp_path / "a", **kw)
    b = sample_checkpoint(world["adapted"], tmp_path / "b", **kw)
    pa, pb = list_images(tmp_path / "a"), list_images(tmp_path / "b")
    assert [p.name for p in pa] == [f"{i:05d}.png" for i in range(6)]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(pa, pb))
    assert a["pixels_sha256"] == b["pixels_sha256"]
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["checkpoint_sha256"] == sha256_file(world["adapted"]) and m["latents_sha256"] == sha256_file(tmp_path / "z.pt")
    assert (m["count"], m["truncation"], m["resolution"], m["native_resolution"]) == (6, 0.7, 64, 32)
    # the latents file is created once and reused: a fresh seed does not rewrite it
    z = torch.load(tmp_path / "z.pt")["z"]
    c = sample_checkpoint(world["adapted"], tmp_path / "c", **dict(kw, latents_seed=4))
    assert torch.equal(torch.load(tmp_path / "z.pt")["z"], z) and c["pixels_sha256"] == a["pixels_sha256"]
    # truncation is applied around latent_avg: psi = 0 gives the same image for every z
    from trainables.generators import load_generator

    m0 = sample_to_folder(load_generator(str(world["adapted"])), z[:3], tmp_path / "psi0", truncation=0.0,
                          image_size=None, device="cpu", progress=False)
    imgs = [p.read_bytes() for p in list_images(tmp_path / "psi0")]
    assert m0["count"] == 3 and imgs[0] == imgs[1] == imgs[2]
    # a different generator with the same latents gives different images
    d = sample_checkpoint(world["src"], tmp_path / "d", **kw)
    assert d["pixels_sha256"] != a["pixels_sha256"] and d["latents_sha256"] == a["latents_sha256"]
