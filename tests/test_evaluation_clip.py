"""CLIP score through the real open_clip path with a tiny model trained here for the test.

`build_tiny_open_clip` gives a random tiny open_clip ViT (32 px, 1 layer); it is trained contrastively for a
few hundred steps on two visually distinct synthetic classes (reddish vs bluish images, captions "red" /
"blue"), saved, and loaded back through `load_open_clip` -- the code path the real ViT-B-32/openai takes.
The scores are checked against a hand computation with the raw open_clip model (its own
`create_model_and_transforms` preprocessing, float64): 100 * max(cos, 0) and 100 * cos, averaged.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import open_clip  # noqa: E402

from evaluation.clip_score import clip_score_folder, clip_score_folder_stats, clip_scores, metric_suffix  # noqa: E402
from evaluation.config import EvalConfig  # noqa: E402

PROMPTS = ["red", "blue"]


def _batch(n: int, gen: torch.Generator, size: int | tuple[int, int] = 32):
    """Images in [-1,1]: class 0 reddish, class 1 bluish, random texture on top; labels."""
    h, w = (size, size) if isinstance(size, int) else size
    labels = torch.randint(0, 2, (n,), generator=gen)
    base = torch.rand(n, 3, 1, 1, generator=gen) * 0.3
    main = 0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    colour = base.clone()
    colour[labels == 0, 0:1] = main[labels == 0]
    colour[labels == 1, 2:3] = main[labels == 1]
    x = colour + 0.15 * torch.randn(n, 3, h, w, generator=gen)
    return x.clamp(0, 1) * 2 - 1, labels


def _write(folder, x_m11):
    folder.mkdir(parents=True, exist_ok=True)
    arr = ((x_m11 + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, a in enumerate(arr):
        Image.fromarray(a).save(folder / f"{i:05d}.png")
    return folder


def _hand_cosines(cfg_path: str, weights: str, folder: Path, prompt: str) -> torch.Tensor:
    """cos(image, prompt) per PNG with the raw open_clip model in float64: open_clip's own eval transform
    (from create_model_and_transforms) on the PIL images, encode_image / encode_text, normalise, dot."""
    open_clip.add_model_config(cfg_path)
    name = Path(cfg_path).stem
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights)
    model = model.double().eval()
    paths = sorted(folder.glob("*.png"))
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths]).double()
        img = model.encode_image(x)
        txt = model.encode_text(open_clip.get_tokenizer(name)([prompt]))
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return (img @ txt.T).squeeze(-1)


@pytest.fixture(scope="module")
def trained_clip(tmp_path_factory):
    from trainables.frozen.clip_models import load_open_clip, preprocess_differentiable
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
    for (f, p), v in s.items():   # each equals the hand computation, not only its ranking
        hand = 100.0 * _hand_cosines(cfg_path, weights, tmp_path / f, p).clamp(min=0).mean()
        assert v == pytest.approx(float(hand), abs=2e-3), (f, p)
    # num_images takes the first images in name order; the mean is over images
    one = clip_score_folder(red, "red", cfg_path, weights, device="cpu", num_images=1)
    assert one != pytest.approx(s["red", "red"])


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Red and blue images, 80x96 (non-square: the eval transform's resize + centre crop both act)."""
    x, _ = _batch(24, torch.Generator().manual_seed(77), size=(80, 96))
    return _write(tmp_path_factory.mktemp("mixed"), x)


@pytest.mark.numeric
def test_clip_score_equals_hand_computed_clipscore(trained_clip, mixed_folder):
    """eval/clip_score = mean 100 max(cos, 0) and the raw score = mean 100 cos, against the raw open_clip
    model in float64; the folder mixes matching and non-matching images so the clamp is exercised."""
    cfg_path, weights, _ = trained_clip
    cos = _hand_cosines(cfg_path, weights, mixed_folder, "red")
    n_pos, n_neg = int((cos > 0.05).sum()), int((cos < -0.05).sum())
    print(f"cosines: {n_pos} > 0.05, {n_neg} < -0.05, range [{float(cos.min()):.3f}, {float(cos.max()):.3f}]")
    assert n_pos >= 3 and n_neg >= 3, f"need clearly positive and negative cosines to test the clamp: {cos}"
    got = clip_score_folder_stats(mixed_folder, "red", cfg_path, weights, device="cpu", batch_size=5)
    assert got.num_images == len(cos)
    assert got.score == pytest.approx(float(100.0 * cos.clamp(min=0).mean()), abs=2e-3)
    assert got.raw == pytest.approx(float(100.0 * cos.mean()), abs=2e-3)
    assert got.score > got.raw + 1.0          # the clamp changed the number
    # another batch size: the same number up to fp32 batching noise
    assert clip_score_folder(mixed_folder, "red", cfg_path, weights, device="cpu") == pytest.approx(got.score, abs=1e-3)


def test_clip_score_uses_open_clips_eval_transform_not_the_training_path(trained_clip, mixed_folder):
    from trainables.frozen.clip_models import load_open_clip, preprocess_differentiable

    cfg_path, weights, _ = trained_clip
    loaded = load_open_clip(cfg_path, weights)
    _, _, preprocess = open_clip.create_model_and_transforms(loaded.name, pretrained=weights)
    img = Image.open(sorted(mixed_folder.glob("*.png"))[0]).convert("RGB")
    torch.testing.assert_close(loaded.eval_transform()(img), preprocess(img), rtol=0, atol=0)
    # NADA's differentiable path (no antialiasing) gives other inputs on these 80x96 images
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 127.5 - 1
    diff = (preprocess_differentiable(x, loaded) - preprocess(img)[None]).abs().mean()
    print(f"mean |eval transform - training path| = {float(diff):.4f}")
    assert diff > 0.05, float(diff)


def test_clip_scores_records_every_model(trained_clip, tmp_path):
    cfg_path, weights, _ = trained_clip
    x, y = _batch(16, torch.Generator().manual_seed(5))
    folder = _write(tmp_path / "imgs", x)
    cfg = EvalConfig(device="cpu", clip=dict(models=[dict(name=cfg_path, pretrained=weights),
                                                     dict(name=cfg_path, pretrained="none", quick_gelu=True)]))
    out = clip_scores(folder, "red", cfg)
    assert set(out) == {"eval/clip_score", "eval/clip_score_raw",
                        "eval/clip_score/TinyCLIP-test-trained", "eval/clip_score/TinyCLIP-test-random",
                        "eval/clip_score_raw/TinyCLIP-test-trained", "eval/clip_score_raw/TinyCLIP-test-random"}
    cos = _hand_cosines(cfg_path, weights, folder, "red")
    assert out["eval/clip_score"] == pytest.approx(float(100 * cos.clamp(min=0).mean()), abs=2e-3)
    assert out["eval/clip_score_raw"] == pytest.approx(float(100 * cos.mean()), abs=2e-3)
    assert out["eval/clip_score"] == out["eval/clip_score/TinyCLIP-test-trained"]
    assert out["eval/clip_score_raw"] == out["eval/clip_score_raw/TinyCLIP-test-trained"]
    params = cfg.as_params()
    assert params["eval.clip.model"] == cfg_path and params["eval.clip.pretrained"] == weights
    assert params["eval.clip.score"] == "100*max(cos,0)" and params["eval.clip.preprocess"] == "open_clip_eval"
    assert params["eval.clip.quick_gelu"] == "auto"
    assert params["eval.clip.models"] == f"{cfg_path}/{weights},{cfg_path}/none/quick_gelu=True"
    assert metric_suffix("ViT-B-32", "openai") == "ViT-B-32-openai"
