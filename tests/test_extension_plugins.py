"""Extensions from OUTSIDE the repo (issue 20): a score variant and a generator kind that a researcher writes in
their own package (tests/plugin_sources.py, written into a temporary folder on PYTHONPATH) get the powers of the
built-ins without an edit of any repo file: their own settings, validated with the sweep file's line; trained by
both engines; costed by `sweeps validate`; a generator kind adapted in a sweep and sampled by the evaluation.
Tiny random models: plumbing and exact arithmetic, not image quality."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, tiny_adapt_dict, tiny_eval_block
from plugin_sources import write_plugin_package
from sweeps.spec import SweepError, load_sweep
from trainables.config import RegularizerConfig
from trainables.config_io import ConfigError, validate_config
from trainables.frozen.diffusion_model import FrozenDiffusion
from trainables.guidance.fusion import FusionGuidance

VARIANT = "labplugins.variant:GainSds"
KIND = "labplugins.kind:ToyKind"


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    root = write_plugin_package(tmp_path_factory.mktemp("outside_the_repo"))
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m.startswith("labplugins")]:
        del sys.modules[name]


def _env(plugins: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(plugins)])}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


# ---- (b) a score variant with a setting of its own -----------------------------------------------------------
def test_plugin_variant_settings_are_validated_and_carried(plugins, tiny_models, tmp_path):
    cfg = validate_config(tiny_adapt_dict(tiny_models, tmp_path, guidance__variant=VARIANT,
                                          guidance__half={"gain": 0.25}))
    assert cfg.guidance.half.gain == 0.25
    assert validate_config(tiny_adapt_dict(tiny_models, tmp_path, guidance__variant=VARIANT)).guidance.half.gain == 0.5
    dumped = cfg.model_dump()                                # MLflow params and the resume guard see it
    assert dumped["guidance"]["half"] == {"gain": 0.25}
    assert validate_config(dumped) == cfg                    # and it round-trips
    with pytest.raises(ConfigError, match=r"guidance\.half\.gain: Input should be greater than 0"):
        validate_config(tiny_adapt_dict(tiny_models, tmp_path, guidance__variant=VARIANT, guidance__half={"gain": -1}))
    with pytest.raises(ConfigError, match=r"guidance\.half\.gian: unknown field"):
        validate_config(tiny_adapt_dict(tiny_models, tmp_path, guidance__variant=VARIANT, guidance__half={"gian": 1}))
    # its settings key is unknown while another variant is chosen: a typo is never silently kept
    with pytest.raises(ConfigError, match=r"guidance\.half: unknown field"):
        validate_config(tiny_adapt_dict(tiny_models, tmp_path, guidance__half={"gain": 1.0}))


def test_plugin_variant_bad_value_names_the_sweep_file_line(plugins, tiny_models, tmp_path):
    base = tiny_adapt_dict(tiny_models, tmp_path / "out", guidance__variant=VARIANT)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "base": base}, sort_keys=False)
                     + "grid:\n  guidance.half.gain: [0.5, -2.0]\n")
    line = sweep.read_text().splitlines().index("  guidance.half.gain: [0.5, -2.0]") + 1
    with pytest.raises(SweepError) as info:
        load_sweep(sweep)
    message = str(info.value)
    assert f"sweep.yaml:{line}" in message and "guidance.half.gain" in message and "greater than 0" in message
    sweep.write_text(sweep.read_text().replace("-2.0", "2.0"))
    assert [t.config.guidance.half.gain for t in load_sweep(sweep).trials] == [0.5, 2.0]


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_plugin_variant_gradient_is_its_formula_in_both_engines(plugins, sd_dir, engine):
    """GainSds is gain x SDS's direction; a power-of-two gain scales every float exactly, so the injected
    gradient equals gain x the built-in SDS gradient bit for bit (SDS itself is checked against float64 in
    tests/test_guidance_variants.py)."""
    from trainables.config import DiffusionGuidanceConfig

    model = FrozenDiffusion.from_ref(str(sd_dir), None, image_size=16)
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(2, 3, 24, 24, generator=gen)

    def grad(**kw):
        cfg = DiffusionGuidanceConfig(model=str(sd_dir), text_encoder=None, image_size=16, cfg_scale=7.5,
                                      latent_grad_clamp=None, image_clamp_quantile=None, engine=engine, **kw)
        guide = FusionGuidance(cfg, RegularizerConfig(), "cpu", model=model)
        guide.prepare("a red square", "a circle")
        w = w0.clone().requires_grad_(True)
        guide.backward(torch.tanh(w), None, t=300, rng=torch.Generator().manual_seed(1))
        return w.grad

    sds = grad(variant="sds")
    plugin = grad(variant=VARIANT, half={"gain": 0.25})
    assert sds.abs().max() > 0
    assert torch.equal(plugin, 0.25 * sds)


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_plugin_variant_trains(plugins, tiny_models, tmp_path, engine):
    from trainables.adaptation.loop import adapt
    from trainables.generators import load_generator

    cfg = validate_config(tiny_adapt_dict(tiny_models, tmp_path, guidance__variant=VARIANT, guidance__engine=engine,
                                          train__iterations=3, train__sample_every=0))
    result = adapt(cfg, progress=False)
    g0, g1 = load_generator(tiny_models["generator"]), load_generator(result.generator_path)
    moved = [n for (n, a), (_, b) in zip(g0.named_parameters(), g1.named_parameters()) if not torch.equal(a, b)]
    assert moved and all(torch.isfinite(p).all() for p in g1.parameters())


def test_sweeps_validate_costs_a_plugin_variant(plugins, tiny_models, tmp_path):
    base = tiny_adapt_dict(tiny_models, tmp_path / "out", guidance__variant=VARIANT)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "base": base, "resources": {"gpu": 1}}, sort_keys=False))
    out = subprocess.run([sys.executable, "-m", "sweeps", "validate", str(sweep)], cwd=tmp_path, env=_env(plugins),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "cost: unknown" not in out.stdout and "FLOP" in out.stdout, out.stdout


# ---- (c) a generator kind of one's own -------------------------------------------------------------------------
def _toy_checkpoint(plugins: Path, path: Path) -> Path:
    from labplugins.kind import ToyGenerator, ToyKind

    torch.manual_seed(0)
    return ToyKind().save(ToyGenerator(z_dim=8, size=16), path)


def test_plugin_kind_settings_validated(plugins, tiny_models, tmp_path):
    ckpt = _toy_checkpoint(plugins, tmp_path / "toy.pt")
    cfg = validate_config(tiny_adapt_dict(tiny_models, tmp_path, generator={"kind": KIND, "checkpoint": str(ckpt),
                                                                             "toy": {"out_gain": 2.0}}))
    assert cfg.generator.toy.out_gain == 2.0
    with pytest.raises(ConfigError, match=r"generator\.toy\.out_gain"):
        validate_config(tiny_adapt_dict(tiny_models, tmp_path, generator={"kind": KIND, "checkpoint": str(ckpt),
                                                                           "toy": {"out_gain": 0}}))
    with pytest.raises(ConfigError, match=r"layers\.k > 0.*does not offer"):   # it declares no W+
        validate_config(tiny_adapt_dict(tiny_models, tmp_path, generator={"kind": KIND, "checkpoint": str(ckpt)},
                                        layers={"k": 2}))


@pytest.mark.slow
def test_plugin_kind_adapts_in_a_sweep_and_is_sampled_by_the_evaluation(plugins, tiny_models, tmp_path):
    ckpt = _toy_checkpoint(plugins, tmp_path / "toy.pt")
    base = tiny_adapt_dict(tiny_models, tmp_path / "unused")
    base["generator"] = {"kind": KIND, "checkpoint": str(ckpt), "toy": {"out_gain": 2.0}}
    base["train"].update(iterations=3, sample_every=0, threads=1)
    evaluation = tiny_eval_block(tiny_models, tmp_path / "eval_cache")
    spec = {"name": "toy-kind", "base": base, "grid": {"method": ["fusion", "nada"]},
            "resources": {"cpu": 1}, "max_concurrent_trials": 2, "storage_path": str(tmp_path / "storage"),
            "evaluation": evaluation}
    sweep = tmp_path / "toy.yaml"
    sweep.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "sweeps", "run", str(sweep)], cwd=tmp_path, env=_env(plugins),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    from labplugins.kind import ToyKind
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("toy-kind").experiment_id])
    children = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    assert len(children) == 2
    source = ToyKind().load(ckpt)
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags
        assert child.data.params["generator.kind"] == KIND and child.data.params["generator.toy.out_gain"] == "2.0"
        assert "eval/clip_score" in child.data.metrics
        adapted = ToyKind().load(child.data.params.get("artifact.generator_path")
                                 or child.data.tags["artifact.generator_path"])
        assert not torch.equal(adapted.fc.weight, source.fc.weight)           # it adapted
        manifest = client.download_artifacts(child.info.run_id, "eval/manifest.json", str(tmp_path))
        assert '"generator_kind": "labplugins.kind:ToyKind"' in Path(manifest).read_text()   # sampled by its kind


def test_a_component_that_misses_part_of_its_protocol_is_named_before_any_step(tiny_models, tmp_path):
    from trainables.adaptation.loop import adapt

    class HalfWritten:                      # a critic with backward but without the rest of the protocol
        needs_frozen = False

        def backward(self, x_train, x_frozen, t, rng=None):
            raise AssertionError("never reached")

    cfg = validate_config(tiny_adapt_dict(tiny_models, tmp_path, train__iterations=2))
    with pytest.raises(TypeError, match=r"does not follow trainables.protocols.Guidance: it lacks default_lr, "
                                        r"from_config, prepare, sample_timestep, selection_backward, "
                                        r"selection_needs_frozen, trainable_set"):
        adapt(cfg, guidance=HalfWritten(), progress=False)
    assert not (tmp_path / "generator.pt").exists()
