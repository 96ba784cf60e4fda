"""Model references resolve offline from local paths and the HF cache, or fail fast and clearly."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from trainables.frozen.refs import ModelNotFoundError, resolve_diffusers_ref, resolve_file_ref


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _fake_cache(root, repo="someorg/some-model", subfolders=("unet", "vae")):
    """A minimal HF cache entry: models--org--name/{refs/main, snapshots/<sha>/<sub>/...}."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    base = root / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(sha)
    snap = base / "snapshots" / sha
    for sf in subfolders:
        (snap / sf).mkdir(parents=True)
        (snap / sf / "config.json").write_text("{}")
        (snap / sf / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    (snap / "model_index.json").write_text("{}")
    return snap


def test_local_directory(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "vae").mkdir()
    assert resolve_diffusers_ref(str(tmp_path), subfolders=("unet", "vae")) == tmp_path


def test_local_directory_missing_subfolder(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"lacks subfolder\(s\) \['vae'\]"):
        resolve_diffusers_ref(str(tmp_path), subfolders=("unet", "vae"))


def test_missing_local_path_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_diffusers_ref(str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(err.value)


def test_missing_hub_id_offline_fails_fast_with_command(empty_model_caches, network_attempts):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_diffusers_ref("CompVis/stable-diffusion-v1-4", subfolders=("unet", "vae"))
    assert network_attempts == []          # offline: no look-up, so no retry loop (fails fast)
    msg = str(err.value)
    assert "CompVis/stable-diffusion-v1-4" in msg
    assert "hf download CompVis/stable-diffusion-v1-4" in msg
    assert "huggingface-cli download" in msg
    assert "HF_HUB_OFFLINE=1" in msg
    assert "Hugging Face cache" in msg


def test_hub_id_from_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    snap = _fake_cache(tmp_path)
    assert resolve_diffusers_ref("someorg/some-model", subfolders=("unet", "vae")) == snap
    with pytest.raises(ModelNotFoundError, match="text_encoder"):
        resolve_diffusers_ref("someorg/some-model", subfolders=("unet", "text_encoder"))


def test_file_refs(tmp_path, monkeypatch):
    f = tmp_path / "g.pt"
    f.write_bytes(b"0")
    assert resolve_file_ref(str(f)) == f
    with pytest.raises(ModelNotFoundError, match="no such local file"):
        resolve_file_ref(str(tmp_path / "missing.pt"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="hf download someorg/gan"):
        resolve_file_ref("someorg/gan", "ffhq.pt")


def test_open_clip_and_lpips_checks(tmp_path, empty_model_caches, network_attempts):
    from trainables.preflight import check_lpips_ref, resolve_open_clip_ref
    from trainables.frozen.refs import resolve_text_encoder_ref
    from trainables.testing import build_tiny_open_clip

    cfg, weights = build_tiny_open_clip(tmp_path / "clip")
    assert resolve_open_clip_ref(str(cfg), str(weights)) == "TinyCLIP-test"
    with pytest.raises(ModelNotFoundError, match="ViT-B-16"):       # ClipWeightsNotFoundError is one
        resolve_open_clip_ref("ViT-B-16", "openai")
    with pytest.raises(ModelNotFoundError, match="hf download openai/clip-vit-large-patch14"):
        resolve_text_encoder_ref("openai/clip-vit-large-patch14")
    with pytest.raises(ModelNotFoundError, match="alexnet-owt-7be5be79.pth"):
        check_lpips_ref("alex")
    assert network_attempts == []
