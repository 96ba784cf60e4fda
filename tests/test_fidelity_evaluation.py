"""The evaluation follows the Fusion authors' runs (docs/fidelity.md, "Evaluation"), each point against an
independent computation: the images written for metrics (resize, quantization), the AFHQ FID pipeline, the AFHQ
generator without NVlabs' activation clamp, NADA's CLIP precision on a GPU, the truncation centre."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.config import EvalConfig
from evaluation.sampling import list_images, sample_checkpoint, to_uint8
from sweeps.spec import load_sweep
from trainables.generators import StyleGAN2, StyleGAN2Config, load_generator, save_rosinality

from conftest import REPO

pytestmark = pytest.mark.numeric   # float64 references: `make test-numeric` reruns them on other BLAS paths


# ---- float64 references, written out ----------------------------------------------------------------
def bilinear_f64(x: np.ndarray, out: int) -> np.ndarray:
    """[N, C, H, W] -> [N, C, out, out]: bilinear with half-pixel centres, no antialias (PyTorch's
    align_corners=False): source coordinate (i + 0.5) * H / out - 0.5, clamped at 0, neighbours clamped at H-1."""
    n, c, h, w = x.shape

    def axis(size_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(out) + 0.5) * size_in / out - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, size_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    rows = x[:, :, y0, :] * (1 - fy)[None, None, :, None] + x[:, :, y1, :] * fy[None, None, :, None]
    return rows[:, :, :, x0] * (1 - fx) + rows[:, :, :, x1] * fx


def save_image_quantize_f64(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """torchvision save_image(normalize=True, value_range=(-1, 1)): clamp, (x + 1) / 2, floor(255 y + 0.5).
    Also the distance of 255 y + 0.5 to the nearest integer (a pixel that close to a step may round either way
    in float32)."""
    v = (np.clip(x, -1, 1) + 1) / 2 * 255 + 0.5
    return np.floor(v).astype(np.uint8), np.abs(v - np.round(v))


def _random_images(seed: int, n: int = 2, side: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=g, dtype=torch.float64) * 2.2 - 1.1   # some pixels clamp


def test_eval_images_are_the_authors_bilinear_resize_and_save_image_quantization():
    """Point 1: 64 -> 32 (the 1024 -> 512 halving) without antialias, quantized as save_image, equals the
    float64 reference on every pixel not within 1e-3 of a rounding step; antialias and round-half-even differ."""
    x = _random_images(0)
    got = to_uint8(x.float(), 32)                                 # the defaults: the authors' choices
    ref, edge = save_image_quantize_f64(bilinear_f64(x.numpy(), 32))
    ref, edge = ref.transpose(0, 2, 3, 1), edge.transpose(0, 2, 3, 1)
    safe = edge > 1e-3
    assert safe.mean() > 0.99
    mismatch = np.abs(got.astype(int) - ref.astype(int))[safe]
    print(f"pixels compared {safe.sum()}, max abs error {mismatch.max()}")
    assert mismatch.max() == 0
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1    # near a step: one level at most
    smooth = to_uint8(x.float(), 32, resize="bilinear_antialias")
    assert np.abs(smooth.astype(int) - got.astype(int)).mean() > 5  # a triangle filter over 4x4, not 2x2
    # quantization alone: round-half-even of 127.5 (x + 1) differs from floor(.. + 0.5) exactly at .5 steps
    halves = torch.tensor([[-1 + 2 * (k + 0.5) / 255 for k in range(0, 254, 2)]], dtype=torch.float64)
    img = halves.reshape(1, 1, 1, -1).expand(1, 3, 1, -1).float()
    assert (to_uint8(img, None, quantize="save_image") != to_uint8(img, None, quantize="round")).any()


def _tiny(path, seed: int, conv_clamp: float | None = None) -> StyleGAN2:
    torch.manual_seed(seed)
    g = StyleGAN2(StyleGAN2Config(size=16, style_dim=16, n_mlp=2, channels={4: 16, 8: 16, 16: 8},
                                  conv_clamp=conv_clamp))
    with torch.no_grad():
        g.latent_avg.copy_(torch.randn(16) * 0.5)   # a stored centre far from the fresh mean
    save_rosinality(g, path)
    return g


def test_sampled_eval_images_use_the_authors_resize(tmp_path):
    """Point 1 through the sampler: a 16 px generator evaluated at 8 px writes the reference's pixels."""
    g = _tiny(tmp_path / "g.pt", 1)
    m = sample_checkpoint(tmp_path / "g.pt", tmp_path / "s", num_samples=4, truncation=1.0, image_size=8,
                          cache_dir=tmp_path / "c", device="cpu", progress=False)
    z = torch.load(m["latents"], weights_only=True)["z"][:4]
    with torch.no_grad():
        x = g.synthesis(g.broadcast(g.mapping(z)), noise_mode="const").double().numpy()
    ref, edge = save_image_quantize_f64(bilinear_f64(x, 8))
    got = np.stack([np.asarray(Image.open(p)) for p in list_images(tmp_path / "s")]).transpose(0, 3, 1, 2)
    safe = edge > 1e-3
    assert np.abs(got.astype(int) - ref.astype(int))[safe].max() == 0
    assert m["resize"] == "bilinear" and m["quantize"] == "save_image"


def test_truncation_centre_is_a_fresh_seeded_mean_latent(tmp_path):
    """Point 5: psi = 0.5 around the mean of 4096 mapped z drawn from torch.Generator('cpu').manual_seed(0)
    (computed here in float64 from the mapping's own layers), not around the checkpoint's stored latent_avg."""
    g = _tiny(tmp_path / "g.pt", 2)
    kw = dict(num_samples=3, truncation=0.5, image_size=None, cache_dir=tmp_path / "c", device="cpu", progress=False)
    m = sample_checkpoint(tmp_path / "g.pt", tmp_path / "fresh", **kw)
    ckpt = sample_checkpoint(tmp_path / "g.pt", tmp_path / "stored", truncation_center="checkpoint", **kw)
    assert m["truncation_center"] == "mean_latent:4096:seed0" and ckpt["truncation_center"] == "checkpoint"
    z = torch.load(m["latents"], weights_only=True)["z"][:3]
    zc = torch.randn(4096, 16, generator=torch.Generator("cpu").manual_seed(0))
    g64 = load_generator(str(tmp_path / "g.pt")).double()
    with torch.no_grad():
        center = g64.mapping(zc.double()).mean(0)
        w = g64.mapping(z.double())
        ws = g64.broadcast(center + 0.5 * (w - center))
        x = g64.synthesis(ws, noise_mode="const").numpy()
    ref, edge = save_image_quantize_f64(x)
    got = np.stack([np.asarray(Image.open(p)) for p in list_images(tmp_path / "fresh")]).transpose(0, 3, 1, 2)
    safe = edge > 1e-3
    print(f"max abs error {np.abs(got.astype(int) - ref.astype(int))[safe].max()}")
    assert np.abs(got.astype(int) - ref.astype(int))[safe].max() == 0
    stored = np.stack([np.asarray(Image.open(p)) for p in list_images(tmp_path / "stored")]).transpose(0, 3, 1, 2)
    assert np.abs(stored.astype(int) - got.astype(int)).mean() > 1
    cfg = EvalConfig()
    assert (cfg.truncation_center, cfg.truncation_center_samples, cfg.image_resize, cfg.image_quantize) == (
        "mean_latent", 4096, "bilinear", "save_image")


def test_afhq_fid_is_studiogans_legacy_pytorch_pipeline():
    """Point 2: the AFHQ sweep's FID runs clean-fid's legacy_pytorch mode, whose resizer is torch bilinear to
    299 without antialias (StudioGAN's `legacy`), equal to the float64 reference within float32 rounding."""
    from cleanfid.resize import build_resizer

    sweep = load_sweep(REPO / "sweeps/paper/afhq_cat2dog.yaml")
    assert sweep.spec.evaluation is not None and sweep.spec.evaluation.fid.mode == "legacy_pytorch"
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(512, 512, 3), dtype=np.uint8)   # an AFHQ image's size
    got = build_resizer("legacy_pytorch")(img)
    ref = bilinear_f64(img.astype(np.float64).transpose(2, 0, 1)[None], 299)[0].transpose(1, 2, 0)
    err = np.abs(got.astype(np.float64) - ref).max()
    # rounding model: float32 source coordinates (< 512) carry <= 2 x 512 x 2^-24 px of error, times a pixel
    # step of <= 255, plus float32 rounding of the blend (a few ulps of 255)
    bound = 255 * (2 * 512 + 4) * 2.0 ** -24
    print(f"max abs error {err:.2e} (0..255 scale), bound {bound:.2e}")
    assert got.shape == (299, 299, 3) and err < bound
    smooth = torch.nn.functional.interpolate(torch.from_numpy(img).double().permute(2, 0, 1)[None], size=(299, 299),
                                             mode="bilinear", align_corners=False, antialias=True)
    assert np.abs(smooth[0].permute(1, 2, 0).numpy() - ref).mean() > 5   # an antialiased resize is far off


def test_legacy_pytorch_needs_the_pytorch_fid_inception_and_says_where(tmp_path, monkeypatch):
    from evaluation.metrics.fid import FidConfig, feature_problems

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    problems = feature_problems(FidConfig(mode="legacy_pytorch"), None)
    assert len(problems) == 1 and "pt_inception-2015-12-05-6726825d.pth" in problems[0]
    assert str(tmp_path / "torch") in problems[0] and "fid.pt_inception_path" in problems[0]
    staged = tmp_path / "pt.pth"
    staged.write_bytes(b"x")
    assert feature_problems(FidConfig(mode="legacy_pytorch", pt_inception_path=str(staged)), None) == []


def test_convert_drops_the_activation_clamp_as_a_rosinality_conversion(tmp_path):
    """Point 3: `convert --conv-clamp none` keeps the weights and removes the clamp: its output equals a
    generator built without a clamp from the same state dict, and differs from the clamped pickle's."""
    from trainables.generators.__main__ import main
    from trainables.generators.formats import save_nvlabs_state_dict

    g = _tiny(tmp_path / "unused.pt", 3, conv_clamp=0.3)   # a clamp small enough to bite
    save_nvlabs_state_dict(g, tmp_path / "cat.pt")
    assert load_generator(str(tmp_path / "cat.pt")).cfg.conv_clamp == 0.3
    assert main(["convert", "--checkpoint", str(tmp_path / "cat.pt"), "--to", "rosinality", "--conv-clamp", "none",
                 "--out", str(tmp_path / "cat_rosinality.pt")]) == 0
    conv = load_generator(str(tmp_path / "cat_rosinality.pt"))
    free = StyleGAN2(StyleGAN2Config(size=16, style_dim=16, n_mlp=2, channels={4: 16, 8: 16, 16: 8}))
    free.load_state_dict(g.state_dict())
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        def render(gen):
            return gen.synthesis(gen.broadcast(gen.mapping(z)), noise_mode="const")
        assert conv.cfg.conv_clamp is None
        assert torch.equal(render(conv), render(free))
        assert (render(conv) - render(g)).abs().max() > 1e-2
        assert torch.equal(conv.latent_avg, g.latent_avg)


def test_afhq_paper_sweeps_name_the_converted_generator_and_say_how_to_make_it(tmp_path, monkeypatch):
    from trainables.preflight import model_problems

    monkeypatch.setenv("MODELS_DIR", str(tmp_path))
    for name in ("afhq_cat2dog", "afhq_animals", "nada_afhq"):
        cfg = load_sweep(REPO / f"sweeps/paper/{name}.yaml").trials[0].config
        assert cfg.generator.checkpoint == f"{tmp_path}/afhqcat_rosinality.pt"
        problem = model_problems(cfg)[0]
        assert f"--checkpoint {tmp_path}/afhqcat.pkl --to rosinality --conv-clamp none" in problem


def test_nada_clip_runs_in_fp16_on_cuda_like_openai_clip_load(monkeypatch):
    """Point 4: precision "auto" (the default) loads NADA's CLIP models in fp16 on a CUDA device and fp32 on the
    CPU, as OpenAI's `clip.load` does for the authors. No GPU here: the loader is replaced by a recorder (the
    dtype it is asked for is what is tested), so nothing touches CUDA."""
    import trainables.guidance.nada as nada_mod
    from trainables.config import NadaConfig

    asked = []

    def record(name, pretrained, device, dtype, **kw):
        asked.append((torch.device(device).type, dtype))
        raise RuntimeError("recorded")

    monkeypatch.setattr(nada_mod, "cached_open_clip", record)
    for device, want in (("cuda", torch.float16), ("cuda:0", torch.float16), ("cpu", torch.float32)):
        with pytest.raises(RuntimeError, match="recorded"):
            nada_mod.NadaGuidance(NadaConfig(), device)
        assert asked[-1][1] == want, (device, asked[-1])
    with pytest.raises(RuntimeError, match="recorded"):
        nada_mod.NadaGuidance(NadaConfig(precision="fp32"), "cuda")
    assert asked[-1][1] == torch.float32
    assert NadaConfig().precision == "auto"
    assert nada_mod.clip_dtype(NadaConfig().precision, "cuda") == torch.float16
