"""Components are looked up in registries, not chosen by if/elif: a new guidance is one file plus a registration."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO, StubGuidance, tiny_adapt_dict
from trainables.config_io import ConfigError, validate_config
from trainables.generators import load_generator
from trainables.guidance import FusionGuidance, NadaGuidance, build_guidance
from trainables.adaptation.loop import adapt
from trainables.registry import GENERATOR_KINDS, GUIDANCE, Registry, UnknownComponentError


class ShrinkGuidance(StubGuidance):
    """A trivial guidance, as a researcher would add one: it pulls the image toward 0 (d mean(x^2)/dx). The rest of
    trainables.protocols.Guidance (default_lr 0.01, trainable_set 'fusion', from_config, ...) from StubGuidance."""

    needs_frozen = False

    def prepare(self, prompt, source_prompt=None):
        self.prompt = prompt

    def sample_timestep(self, rng=None):
        return 0

    def backward(self, x_train, x_frozen, t, rng=None):
        assert x_frozen is None            # needs_frozen = False: the loop skips the frozen render
        loss = x_train.square().mean()
        loss.backward()
        return {"loss/shrink": loss.detach()}

    def selection_backward(self, x_train, x_frozen=None, t=0, rng=None):
        return self.backward(x_train, None, t, rng)


@pytest.fixture
def shrink_registered():
    GUIDANCE.add("shrink", "test_registry:ShrinkGuidance")
    yield "shrink"
    GUIDANCE._paths.pop("shrink")


def test_a_new_guidance_is_one_class_plus_a_registration(tiny_models, tmp_path, shrink_registered):
    cfg = validate_config(tiny_adapt_dict(tiny_models, tmp_path, method="shrink", train__sample_every=0,
                                          train__iterations=3))
    assert cfg.learning_rate == 0.01                      # the component's own default
    result = adapt(cfg, progress=False)
    g0, g1 = load_generator(tiny_models["generator"]), load_generator(result.generator_path)
    z = torch.randn(4, g0.cfg.style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before, after = g0(z).square().mean(), g1(z).square().mean()
    assert after < before                                  # it did what the guidance asks


def test_module_path_needs_no_registration(tiny_models, tmp_path):
    cfg = validate_config(tiny_adapt_dict(tiny_models, tmp_path, method="test_registry:ShrinkGuidance"))
    assert isinstance(build_guidance(cfg), ShrinkGuidance)


def test_builtins_are_lookups(tiny_models, tmp_path):
    assert GUIDANCE.names() == ("fusion", "nada") and GENERATOR_KINDS.names() == ("stylegan2", "eg3d", "stylegan3")
    assert GUIDANCE.load("fusion") is FusionGuidance and GUIDANCE.load("nada") is NadaGuidance
    nada = validate_config(tiny_adapt_dict(tiny_models, tmp_path, method="nada"))
    assert isinstance(build_guidance(nada), NadaGuidance)


def test_unknown_names_are_refused_with_the_choices(tiny_models, tmp_path):
    with pytest.raises(ConfigError, match=r"method.*'fusion' or 'nada'"):
        validate_config(tiny_adapt_dict(tiny_models, tmp_path, method="dreamfusion"))
    with pytest.raises(ConfigError, match=r"generator.kind.*'stylegan2' or 'eg3d' or 'stylegan3'"):
        validate_config(tiny_adapt_dict(tiny_models, tmp_path, generator__kind="stylegan-xl"))
    with pytest.raises(UnknownComponentError, match="cannot import"):
        Registry("x", "thing").load("no_such_module_here:Thing")
    with pytest.raises(ValueError, match="package.module:Name"):
        Registry("x", "thing").add("bad", "no-colon")


def test_validating_a_config_does_not_import_torch(tiny_models, tmp_path):
    code = ("import sys; from trainables.config import AdaptConfig; "
            "AdaptConfig.model_validate({'prompt': 'p', 'method': 'nada', 'generator': {'checkpoint': 'g.pt'}}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
