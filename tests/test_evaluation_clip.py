"""CLIP score through the real open_clip path with a tiny model trained here for the test.

`build_tiny_open_clip` gives a random tiny open_clip ViT (32 px, 1 layer); it is trained contrastively for a
few hundred steps on two visually distinct synthetic classes (reddish vs bluish images, captions "red" /
"blue"), saved, and loaded back through `load_open_clip` -- the code path the real ViT-B-32/openai takes.
"""
from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evaluation.clip_score import clip_score_folder, clip_scores, metric_suffix  # noqa: E402
from evaluation.config import EvalConfig  # noqa: E402

PROMPTS = ["red", "blue"]


def _batch(n: int, gen: torch.Generator, size: int = 32):
    """Images in [-1,1]: class 0 reddish, class 1 bluish, random texture on top; labels."""
    labels = torch.randint(0, 2, (n,), generator=gen)
    base = torch.rand(n, 3, 1, 1, generator=gen) * 0.3
    main = 0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    colour = base.clone()
    colour[labels == 0, 0:1] = main[labels == 0]
    colour[labels == 1, 2:3] = main[labels == 1]
    x = colour + 0.15 * torch.randn(n, 3, size, size, generator=gen)
    return x.clamp(0, 1) * 2 - 1, labels


def _write(folder, x_m11):
    folder.mkdir(parents=True, exist_ok=True)
    arr = ((x_m11 + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, a in enumerate(arr):
        Image.fromarray(a).save(folder / f"{i:05d}.png")
    return folder


@pytest.fixture(scope="module")
def trained_clip(tmp_path_factory):
    from trainables.guidance.clip_models import load_open_clip, preprocess_differentiable
    from trainables.testing import build_tiny_open_clip

    root = tmp_path_factory.mktemp("tinyclip")
    cfg_path, weights = build_tiny_open_clip(root, seed=0)
    torch.manual_seed(0)
    loaded = load_open_clip(str(cfg_path), str(weights), device="cpu")
    model = loaded.model.train().requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    tokens = loaded.tokenizer(PROMPTS)
    gen = torch.Generator().manual_seed(0)
    for step in range(300):   # converges in tens of steps (the classes are trivially separable): stop early
        x, y = _batch(16, gen)
        img = model.encode_image(preprocess_differentiable(x, loaded))
        txt = model.encode_text(tokens)
        img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * img @ txt.T           # [B, 2]: image -> caption contrastive
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 20 and float(loss.detach()) < 0.02:
            break
    trained = root / "trained.pt"
    torch.save(model.state_dict(), trained)
    return str(cfg_path), str(trained), float(loss.detach())


def test_clip_score_ranks_matching_prompt_higher(trained_clip, tmp_path):
    cfg_path, weights, final_loss = trained_clip
    assert final_loss < 0.3
    gen = torch.Generator().manual_seed(123)
    x, y = _batch(64, gen)
    red = _write(tmp_path / "red", x[y == 0][:24])
    blue = _write(tmp_path / "blue", x[y == 1][:24])
    s = {(f, p): clip_score_folder(folder, p, cfg_path, weights, device="cpu")
         for f, folder in (("red", red), ("blue", blue)) for p in PROMPTS}
    assert s["red", "red"] > s["red", "blue"]
    assert s["blue", "blue"] > s["blue", "red"]
    assert all(-100.0 <= v <= 100.0 for v in s.values())
    # num_images takes the first images in name order; the mean is over images
    one = clip_score_folder(red, "red", cfg_path, weights, device="cpu", num_images=1)
    assert one != pytest.approx(s["red", "red"])


def test_clip_scores_records_every_model(trained_clip, tmp_path):
    cfg_path, weights, _ = trained_clip
    x, y = _batch(16, torch.Generator().manual_seed(5))
    folder = _write(tmp_path / "imgs", x)
    cfg = EvalConfig(device="cpu", clip=dict(models=[dict(name=cfg_path, pretrained=weights),
                                                     dict(name=cfg_path, pretrained="none")]))
    out = clip_scores(folder, "red", cfg)
    assert set(out) == {"eval/clip_score", "eval/clip_score/TinyCLIP-test-trained", "eval/clip_score/TinyCLIP-test-random"}
    assert out["eval/clip_score"] == out["eval/clip_score/TinyCLIP-test-trained"]
    params = cfg.as_params()
    assert params["eval.clip.model"] == cfg_path and params["eval.clip.pretrained"] == weights
    assert "eval.clip.models" in params
    assert metric_suffix("ViT-B-32", "openai") == "ViT-B-32-openai"
