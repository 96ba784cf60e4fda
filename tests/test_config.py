"""Adaptation config: validation errors name the field; overrides; flattening for MLflow params."""
from __future__ import annotations

import pytest

from trainables.config import AdaptConfig, flatten
from trainables.config_io import ConfigError, apply_overrides, load_config, validate_config

BASE = {"prompt": "photo of a dog", "generator": {"checkpoint": "g.pt"}}


def test_paper_defaults():
    cfg = validate_config(BASE)
    assert cfg.guidance.cfg_scale == 100 and (cfg.guidance.t_min, cfg.guidance.t_max) == (10, 500)
    assert cfg.optim.beta1 == 0 and cfg.optim.beta2 == pytest.approx(0.99 ** 0.8)
    assert cfg.learning_rate == pytest.approx(0.0008)
    assert validate_config({**BASE, "method": "nada"}).learning_rate == pytest.approx(0.0016)
    assert cfg.guidance.image_clamp_quantile == 0.95 and cfg.optim.freeze_bias and cfg.seed == 42


@pytest.mark.parametrize(
    "patch, field, words",
    [
        ({"guidance": {"cfg_scal": 7}}, "guidance.cfg_scal", "unknown field"),
        ({"guidance": {"cfg_scale": "high"}}, "guidance.cfg_scale", "number"),
        ({"train": {"iterations": 0}}, "train.iterations", "greater than or equal to 1"),
        ({"method": "dreamfusion"}, "method", "'fusion' or 'nada'"),
        ({"guidance": {"t_min": 600, "t_max": 500}}, "guidance", "t_min (600) must be <= t_max (500)"),
    ],
)
def test_errors_name_the_field(patch, field, words):
    with pytest.raises(ConfigError) as err:
        validate_config({**BASE, **patch}, source="cfg.yaml")
    msg = str(err.value)
    assert "cfg.yaml" in msg and f"- {field}" in msg and words in msg


def test_missing_required_fields():
    with pytest.raises(ConfigError, match=r"- prompt: required field is missing"):
        validate_config({"generator": {"checkpoint": "g.pt"}})


def test_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("prompt: a cat\ngenerator: {checkpoint: g.pt}\n")
    cfg = load_config(path, ["guidance.cfg_scale=7.5", "reg.directional.rescale=true", "prompt=a dog", "seed=3"])
    assert cfg.guidance.cfg_scale == 7.5 and cfg.reg.directional.rescale is True
    assert cfg.prompt == "a dog" and cfg.seed == 3
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["guidance.cfg_scale"])
    with pytest.raises(ConfigError, match="reg.nope"):
        load_config(path, ["reg.nope=1"])


def test_relative_checkpoint_resolved_against_config_dir(tmp_path):
    (tmp_path / "g.pt").write_bytes(b"x")
    path = tmp_path / "c.yaml"
    path.write_text("prompt: a cat\ngenerator: {checkpoint: g.pt}\n")
    assert load_config(path).generator.checkpoint == str((tmp_path / "g.pt").resolve())


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompt: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_flatten_gives_dotted_keys():
    flat = flatten(validate_config(BASE))
    assert flat["guidance.cfg_scale"] == 100 and flat["reg.directional.weight"] == 0
    assert flat["nada.clip_models"][0]["name"] == "ViT-B-32"
    assert set(flatten(AdaptConfig.model_validate(BASE))) == set(flat)


def test_env_expansion_in_references(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("prompt: a cat\ngenerator: {checkpoint: '${MODELS_DIR:-models}/g.pt'}\n"
                    "guidance: {model: '${SD_DIR}/sd'}\n")
    monkeypatch.delenv("MODELS_DIR", raising=False)
    monkeypatch.setenv("SD_DIR", "/data")
    cfg = load_config(path)
    assert cfg.generator.checkpoint == "models/g.pt" and cfg.guidance.model == "/data/sd"
    monkeypatch.setenv("MODELS_DIR", "/weights")
    assert load_config(path).generator.checkpoint == "/weights/g.pt"
    monkeypatch.delenv("SD_DIR")
    with pytest.raises(ConfigError, match=r"guidance.model: environment variable SD_DIR is not set"):
        load_config(path)
