"""Shared test setup: offline hub, fixture paths, tiny models built from config."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
# traced costs are cached on disk (trainables/cost/cache.py): the suite (and the processes it starts) use a fresh
# folder of their own, so every test traces what it asserts on and leaves the user's cache alone
os.environ["SGF_COST_CACHE"] = tempfile.mkdtemp(prefix="sgf-cost-tests-")
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny ops: 2 intra-op threads on a loaded 2-core machine are 10-50x slower than one."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def require_fixtures(sub: str = "") -> Path:
    """../shared/fixtures[/sub], or FAIL the calling test (never skip: CI has the fixtures, and a skipped
    reference comparison would pass silently)."""
    path = FIXTURES / sub if sub else FIXTURES
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the reference fixtures must sit beside the checkout as ../shared/fixtures "
                    f"(CI has them); copy the shared fixtures folder there")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return require_fixtures()


@pytest.fixture(scope="session")
def stylegan2_fixtures() -> Path:
    return require_fixtures("stylegan2")


@pytest.fixture(scope="session")
def eg3d_fixtures() -> Path:
    return require_fixtures("eg3d")


@pytest.fixture
def empty_model_caches(tmp_path_factory, monkeypatch) -> Path:
    """Point every model-weight cache at a fresh empty directory for one test, so a test that needs weights
    to be ABSENT (Stable Diffusion, CLIP-L, OpenAI CLIP, torchvision/LPIPS backbones) holds on a machine that
    has them cached: the HF hub cache (env and the constant huggingface_hub reads at call time), XDG_CACHE_HOME,
    TORCH_HOME and torch.hub's directory. Offline mode is forced too, so nothing is fetched."""
    import huggingface_hub.constants as hf_constants
    import torch

    root = tmp_path_factory.mktemp("empty_caches")
    hf_home, hf_hub, torch_home = root / "hf", root / "hf" / "hub", root / "torch"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_hub))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg"))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(hf_constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hf_hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(torch_home / "hub"))   # what torch.hub.set_dir sets
    return root


@pytest.fixture
def network_attempts(monkeypatch) -> list:
    """Records and refuses every outgoing network look-up and connection of one test. A 'fails fast offline'
    test asserts this stays empty (no retry loop can start) instead of timing itself: wall-clock asserts break
    on a loaded or slower machine."""
    import socket

    attempts: list = []

    def refuse_lookup(host, *args, **kwargs):
        attempts.append(("getaddrinfo", host))
        raise OSError(f"this test forbids network access (name lookup of {host!r})")

    def refuse_connect(sock, address, *args, **kwargs):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(("connect", address))
            raise OSError(f"this test forbids network access (connect to {address!r})")
        return real_connect(sock, address, *args, **kwargs)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    return attempts


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Random-weight models built from config: a 16x16 StyleGAN2 (rosinality .pt), a tiny SD-layout
    directory and a tiny open_clip model. They test plumbing and arithmetic, not image quality."""
    import torch

    from trainables.generators import StyleGAN2, StyleGAN2Config, save_rosinality
    from trainables.testing import build_tiny_open_clip, build_tiny_sd

    root = tmp_path_factory.mktemp("tiny_models")
    torch.manual_seed(0)
    g = StyleGAN2(StyleGAN2Config(size=16, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16}))
    save_rosinality(g, root / "stylegan2_16.pt")
    clip_cfg, clip_weights = build_tiny_open_clip(root / "clip")
    return {
        "generator": root / "stylegan2_16.pt",
        "sd": build_tiny_sd(root / "sd", seed=0),
        "clip_config": clip_cfg,
        "clip_weights": clip_weights,
    }


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> Path:
    """A tiny random SD-layout pipeline directory (trainables.testing.build_tiny_sd, seed 0), one per test module
    (the guidance, fidelity and variant tests load it with their own options)."""
    from trainables.testing import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "sd", seed=0)


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory) -> Path:
    """A tiny random SDXL-layout pipeline directory (trainables.testing.build_tiny_sdxl, seed 0), one per module."""
    from trainables.testing import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "sdxl", seed=0)


@pytest.fixture
def model_cache_on():
    """The frozen-model cache on (bound 4, as in a sweep worker) for one test, off and empty afterwards: the rest
    of the suite loads fresh models."""
    from trainables.frozen import model_cache

    model_cache.disable()
    model_cache.enable(4)
    yield model_cache
    model_cache.disable()


def tiny_adapt_dict(models: dict[str, Path], out: Path, **over) -> dict:
    """An AdaptConfig mapping for the tiny models (CPU, a few steps)."""
    cfg = {
        "prompt": "a red square",
        "source_prompt": "a circle",
        "generator": {"checkpoint": str(models["generator"])},
        "guidance": {"model": str(models["sd"]), "text_encoder": None, "image_size": 16, "cfg_scale": 7.5,
                     "t_min": 20, "t_max": 980},
        "nada": {"clip_models": [{"name": str(models["clip_config"]), "pretrained": str(models["clip_weights"])}]},
        "train": {"iterations": 4, "sample_every": 2, "sample_count": 3, "device": "cpu"},
        "output_dir": str(out),
    }
    for dotted, value in over.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def tiny_eval_block(models: dict[str, Path], cache_dir: Path) -> dict:
    """An `evaluation:` block for sweeps on the tiny models: 6 samples at native size, the CLIP score alone."""
    return {"num_samples": 6, "batch_size": 6, "image_size": None, "device": "cpu", "progress": False,
            "cache_dir": str(cache_dir), "fid": {"enabled": False},
            "clip": {"models": [{"name": str(models["clip_config"]), "pretrained": str(models["clip_weights"])}]},
            "diversity": {"lpips": {"enabled": False}, "feature": {"enabled": False}}}


class StubGuidance:
    """Defaults of every member of trainables.protocols.Guidance, for test critics that override only what the
    test is about (the loop checks that a guidance follows the protocol before its first step)."""

    default_lr = 0.01
    trainable_set = "fusion"
    needs_frozen = True
    selection_needs_frozen = False

    @classmethod
    def from_config(cls, cfg, device="cpu"):
        return cls()

    def prepare(self, prompt, source_prompt=None):
        pass

    def sample_timestep(self, rng=None):
        return 100

    def backward(self, x_train, x_frozen, t, rng=None):
        raise NotImplementedError

    def selection_backward(self, x_train, x_frozen=None, t=0, rng=None):
        return self.backward(x_train, x_frozen, t, rng)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real lean MLflow server on loopback over a fresh SQLite store, one per test module."""
    from tracking import LocalMlflowServer   # late: conftest loads for every test; most need no server

    srv = LocalMlflowServer(tmp_path_factory.mktemp("store")).start(timeout=240)
    try:
        yield srv
    finally:
        srv.stop()
