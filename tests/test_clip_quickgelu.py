"""The activation open_clip models are built with: QuickGELU where the weights were trained with it.

open_clip 3.3 builds 'ViT-B-32' / 'ViT-B-16' with nn.GELU even for pretrained='openai' (it only warns);
`trainables.frozen.clip_models.resolve_quick_gelu` makes the build follow the weights. OpenAI's weights
cannot be downloaded here: the architecture checks build on the meta device without weights, and the one
test that goes through `load_open_clip` with the 'openai' tag replaces only open_clip's weight download and
checkpoint read (mocked: no network, no weights here); everything else is the real open_clip factory.
"""
from __future__ import annotations

import json
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import open_clip  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from open_clip.transformer import QuickGELU  # noqa: E402

from evaluation.clip_score import load_clip  # noqa: E402
from evaluation.config import EvalConfig  # noqa: E402
from trainables.config import NadaConfig  # noqa: E402
from trainables.frozen import clip_models as CM  # noqa: E402
from trainables.frozen.clip_models import (  # noqa: E402
    QuickGeluMismatchError,
    QuickGeluMismatchWarning,
    build_open_clip_architecture,
    load_open_clip,
    resolve_quick_gelu,
)
from trainables.guidance.nada import NadaGuidance  # noqa: E402
from trainables.testing import tiny_open_clip_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mlp_acts(model) -> tuple[type, type]:
    """The activation module classes of the first vision and text transformer blocks."""
    return type(model.visual.transformer.resblocks[0].mlp.gelu), type(model.transformer.resblocks[0].mlp.gelu)


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-16"])
def test_openai_tag_builds_quickgelu_architecture_without_weights(name):
    with torch.device("meta"):   # architecture only: no weights, no memory, no init cost
        plain = open_clip.create_model(name, pretrained=None, device="meta")
    # the trap this rule exists for: open_clip's own build of the plain name is nn.GELU
    assert _mlp_acts(plain) == (torch.nn.GELU, torch.nn.GELU)
    model, reason = build_open_clip_architecture(name, "openai", device="meta")
    assert _mlp_acts(model) == (QuickGELU, QuickGELU), reason
    assert "QuickGELU" in reason and f"{name}:openai" in reason
    # per tag, not blanket: LAION-2B weights of the same architecture were trained with nn.GELU
    gelu_tag = {"ViT-B-32": "laion2b_s34b_b79k", "ViT-B-16": "laion2b_s34b_b88k"}[name]
    model, _ = build_open_clip_architecture(name, gelu_tag, device="meta")
    assert _mlp_acts(model) == (torch.nn.GELU, torch.nn.GELU)


def test_default_guidance_and_evaluation_models_resolve_to_quickgelu():
    refs = [(r.name, r.pretrained) for r in NadaConfig().clip_models] + \
           [(m.name, m.pretrained) for m in EvalConfig().clip.models]
    assert ("ViT-B-32", "openai") in refs and ("ViT-B-16", "openai") in refs
    for name, tag in refs:
        assert resolve_quick_gelu(name, tag)[0] is True, (name, tag)


def test_guidance_and_evaluation_load_openai_with_quickgelu(monkeypatch):
    """NADA's critic and the CLIP score go through `load_open_clip`: with the weight download and the
    checkpoint read mocked (no weights here), open_clip's real factory builds QuickGELU and does not warn."""
    asked = []
    monkeypatch.setattr(CM, "_tag_cached", lambda model, tag: True)
    monkeypatch.setattr(open_clip.factory, "download_pretrained",
                        lambda cfg, cache_dir=None: asked.append(cfg["hf_hub"]) or "/nonexistent/weights.bin")
    monkeypatch.setattr(open_clip.factory, "load_checkpoint", lambda model, path, **kw: None)
    with warnings.catch_warnings(record=True) as caught, torch.device("meta"):
        warnings.simplefilter("always")
        guide = NadaGuidance(NadaConfig(), device="meta")
        scorer = load_clip("ViT-B-32", "openai", device="meta")
    assert not [w for w in caught if "QuickGELU" in str(w.message)], [str(w.message) for w in caught]
    assert asked == ["timm/vit_base_patch32_clip_224.openai/", "timm/vit_base_patch16_clip_224.openai/",
                     "timm/vit_base_patch32_clip_224.openai/"]
    for loaded in [m for m, _ in guide.models] + [scorer]:
        assert loaded.quick_gelu and _mlp_acts(loaded.model) == (QuickGELU, QuickGELU), loaded.name


@pytest.fixture(scope="module")
def quickgelu_clip(tmp_path_factory):
    """A tiny custom open_clip config with quick_gelu: true, random weights saved from a QuickGELU build."""
    root = tmp_path_factory.mktemp("qg")
    cfg = dict(tiny_open_clip_config(), quick_gelu=True)
    cfg_path = root / "TinyCLIP-qg-test.json"
    cfg_path.write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(3)
    model = open_clip.create_model("TinyCLIP-qg-test", pretrained=None, pretrained_text=False).eval()
    assert _mlp_acts(model) == (QuickGELU, QuickGELU)
    weights = root / "qg.pt"
    torch.save(model.state_dict(), weights)
    return cfg_path, weights, model


def _embeddings(model, images, tokens):
    model = model.double()
    with torch.no_grad():
        return model.encode_image(images.double()), model.encode_text(tokens)


def test_quickgelu_weights_load_into_quickgelu_build_and_gelu_differs(quickgelu_clip):
    cfg_path, weights, saved = quickgelu_clip
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 32, 32, generator=gen)
    tokens = open_clip.get_tokenizer("TinyCLIP-qg-test")(["a red dog", "a photo", "x"])
    ref_img, ref_txt = _embeddings(saved, images, tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuickGeluMismatchWarning)   # a custom architecture: nothing to warn about
        loaded = load_open_clip(str(cfg_path), str(weights))
    assert loaded.quick_gelu and _mlp_acts(loaded.model) == (QuickGELU, QuickGELU)
    img, txt = _embeddings(loaded.model, images, tokens)
    torch.testing.assert_close(img, ref_img, rtol=0, atol=1e-12)
    torch.testing.assert_close(txt, ref_txt, rtol=0, atol=1e-12)
    # the same weights in a GELU build (an explicit choice, allowed for a file) give other embeddings
    gelu = load_open_clip(str(cfg_path), str(weights), quick_gelu=False)
    assert not gelu.quick_gelu and _mlp_acts(gelu.model) == (torch.nn.GELU, torch.nn.GELU)
    g_img, g_txt = _embeddings(gelu.model, images, tokens)
    rel = lambda a, b: float((a - b).norm() / b.norm())   # noqa: E731
    print(f"GELU vs QuickGELU build, relative embedding change: image {rel(g_img, ref_img):.2e}, "
          f"text {rel(g_txt, ref_txt):.2e}")
    # float64 round-off is ~1e-15; measured 1.8e-3 (image) and 8.8e-3 (text) with these seeded weights
    assert rel(g_img, ref_img) > 1e-5 and rel(g_txt, ref_txt) > 1e-5
    # evaluation passes its per-model override through
    assert load_clip(str(cfg_path), str(weights), quick_gelu=False).quick_gelu is False


def test_explicit_activation_contradicting_a_tag_is_an_error():
    with pytest.raises(QuickGeluMismatchError, match="ViT-B-32-quickgelu"):
        build_open_clip_architecture("ViT-B-32", "openai", quick_gelu=False, device="meta")
    with pytest.raises(QuickGeluMismatchError, match="nn.GELU"):
        resolve_quick_gelu("ViT-B-32", "laion2b_s34b_b79k", quick_gelu=True)
    assert resolve_quick_gelu("ViT-B-32", "openai", quick_gelu=True)[0] is True   # agreeing is fine


def test_weights_file_of_unknown_origin_warns_and_hf_cache_file_resolves(tmp_path):
    f = str(tmp_path / "my_vit_b32.pt")
    with pytest.warns(QuickGeluMismatchWarning, match="ViT-B-32-quickgelu") as rec:
        assert resolve_quick_gelu("ViT-B-32", f) == (False, "nn.GELU: model config 'ViT-B-32' quick_gelu=False")
    assert "ViT-B-32:openai" in str(rec[0].message) and "quick_gelu=False" in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuickGeluMismatchWarning)
        assert resolve_quick_gelu("ViT-B-32", f, quick_gelu=False)[0] is False   # confirmed by the user
        assert resolve_quick_gelu("ViT-B-32-quickgelu", f)[0] is True              # the name says it
        # a file inside the HF-cache snapshot of the 'openai' tag's hub repo counts as that tag
        hub = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "0a1b"
        qg, reason = resolve_quick_gelu("ViT-B-32", str(hub / "open_clip_model.safetensors"))
        assert qg is True and "timm/vit_base_patch32_clip_224.openai" in reason
    # a custom config that copies ViT-B-32's architecture is recognised too
    copy = tmp_path / "MyB32.json"
    copy.write_text(json.dumps({k: v for k, v in open_clip.get_model_config("ViT-B-32").items() if k != "quick_gelu"}))
    open_clip.add_model_config(copy)
    with pytest.warns(QuickGeluMismatchWarning, match="MyB32"):
        resolve_quick_gelu("MyB32", f)
