"""A metric from a package outside the repo (written into a temporary folder put on sys.path / PYTHONPATH, no
repo file touched) has the built-ins' powers: its own settings validated with the sweep file (file:line), its
preflight, its declared keys logged to a real MLflow store by the evaluation runner (and used by
--only-missing), and its own columns in the table. Also: the built-ins' `eval.*` params are byte-identical to
the protocol's params before metrics were objects (the fingerprint of existing runs does not change)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from test_evaluation_run import _trial_run, world  # noqa: E402,F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "sharpmetric.metric:Sharpness"
PLUGIN_SRC = '''
from evaluation.metrics import Metric, MetricKey
from pydantic import Field
from trainables.settings import StrictModel


class SharpnessSettings(StrictModel):
    threshold: float = Field(0.5, ge=0, le=1)    # pixels brighter than this count as lit


class Sharpness(Metric):
    name = "sharpness"
    Settings = SharpnessSettings
    keys = (MetricKey("eval/sharp/lit", "lit fraction", "max", ".3f"),
            MetricKey("eval/sharp/mean", "mean level", "min", ".2f"))

    def problems(self, settings, cfg, prompts):
        return [] if settings.threshold < 0.99 else [
            "sharpness.threshold: 0.99 or more counts no pixel; lower it"]

    def compute(self, ctx, settings):
        from evaluation.sampling import list_images, load_images   # late: torch

        x = load_images(list_images(ctx.samples_dir))
        return {"eval/sharp/lit": float((x > settings.threshold).float().mean()), "sharp/mean": float(x.mean())}
'''


@pytest.fixture()
def plugin_pkg(tmp_path, monkeypatch):
    root = tmp_path / "plugins"
    (root / "sharpmetric").mkdir(parents=True)
    (root / "sharpmetric" / "__init__.py").write_text("")
    (root / "sharpmetric" / "metric.py").write_text(textwrap.dedent(PLUGIN_SRC))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), str(REPO), os.environ.get("PYTHONPATH", "")]))
    yield root
    for mod in [m for m in sys.modules if m.startswith("sharpmetric")]:
        del sys.modules[mod]


def _sweep(tmp_path: Path, threshold) -> Path:
    base = {"method": "nada", "prompt": "a red circle", "source_prompt": "a circle",
            "generator": {"checkpoint": str(REPO / "pocket/models/stylegan2/pocket-circles-32.pt")},
            "guidance": {"model": str(REPO / "pocket/models/sd"), "text_encoder": None, "image_size": 32},
            "train": {"iterations": 2, "device": "cpu"}}
    evaluation = {"num_samples": 16, "image_size": None, "device": "cpu",
                  "fid": {"enabled": False}, "clip": {"enabled": False},
                  "diversity": {"lpips": {"enabled": False}, "feature": {"enabled": False}},
                  "extra_metrics": [PLUGIN], "sharpness": {"threshold": threshold}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "plug", "base": base, "evaluation": evaluation,
                                    "storage_path": str(tmp_path / "st")}, sort_keys=False))
    return path


def test_plugin_settings_validated_with_file_and_line(plugin_pkg, tmp_path):
    from sweeps.expand import load_sweep
    from sweeps.spec import SweepError

    sweep = load_sweep(_sweep(tmp_path, 0.25))
    cfg = sweep.spec.evaluation
    metric, settings = cfg.metric(PLUGIN)
    assert metric.name == "sharpness" and settings.threshold == 0.25
    assert cfg.as_params()["eval.sharpness.threshold"] == "0.25"          # its own params: in the fingerprint
    assert type(cfg).model_validate(cfg.model_dump()).as_params() == cfg.as_params()   # a dump keeps its block

    path = _sweep(tmp_path, 7)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "threshold" in text)
    with pytest.raises(SweepError) as err:
        load_sweep(path)
    assert f"sweep.yaml:{line}" in str(err.value) and "evaluation.sharpness.threshold" in str(err.value)
    assert "less than or equal to 1" in str(err.value)

    # the CLI says the same (file:line, the field)
    out = subprocess.run([sys.executable, "-m", "sweeps", "validate", str(path), "--skip-model-check"],
                         cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and f"sweep.yaml:{line}" in out.stderr + out.stdout
    assert "evaluation.sharpness.threshold" in out.stderr + out.stdout

    # an unknown key that names no listed plugin stays an unknown field
    from evaluation.config import EvalConfig
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as bad:
        EvalConfig.model_validate({"extra_metrics": [PLUGIN], "sharpnes": {"threshold": 0.1}})
    assert [e["loc"] for e in bad.value.errors()] == [("sharpnes",)]
    assert bad.value.errors()[0]["type"] == "extra_forbidden"


def test_plugin_preflight(plugin_pkg):
    from evaluation.config import EvalConfig
    from evaluation.preflight import evaluation_problems

    off = {"fid": {"enabled": False}, "clip": {"enabled": False}, "image_size": None,
           "diversity": {"lpips": {"enabled": False}, "feature": {"enabled": False}}}
    assert evaluation_problems(EvalConfig.model_validate({**off, "extra_metrics": [PLUGIN]})) == []
    cfg = EvalConfig.model_validate({**off, "extra_metrics": [PLUGIN], "sharpness": {"threshold": 0.995}})
    assert evaluation_problems(cfg) == ["sharpness.threshold: 0.99 or more counts no pixel; lower it"]
    missing = EvalConfig.model_validate({**off, "extra_metrics": ["sharpmetric.nothere:Sharpness"]})
    (problem,) = evaluation_problems(missing)
    assert problem.startswith("extra_metrics.0: plugin 'sharpmetric.nothere:Sharpness' cannot be imported")


def test_plugin_logged_under_declared_keys_and_shown_in_table(plugin_pkg, world, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from evaluation.__main__ import main
    from evaluation.config import EvalConfig
    from evaluation.runner import evaluate_run, missing_metrics
    from evaluation.table import render, table_dataframe

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("plug", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp_id, tags={"sweep.role": "parent"}).info.run_id
    data = world["cfg"].model_dump()
    data.update(output_dir=str(tmp_path / "evals"), extra_metrics=[PLUGIN], sharpness={"threshold": 0.1})
    data["clip"]["enabled"] = False
    data["diversity"]["lpips"]["enabled"] = False
    cfg = EvalConfig.model_validate(data)
    rids = [_trial_run(client, exp_id, parent, world[g], "a red thing", world["src"]) for g in ("adapted", "src")]
    client.log_param(rids[1], "reg.lpips.weight", "1")      # two rows of one (source, prompt) group: best marks
    for rid in rids:
        metrics = evaluate_run(rid, None, cfg, uri)
        assert not metrics.errors
    run = client.get_run(rids[0])
    lit, level = run.data.metrics["eval/sharp/lit"], run.data.metrics["eval/sharp/mean"]
    assert 0 < lit < 1 and 0 < level < 1
    assert run.data.params["eval.sharpness.threshold"] == "0.1"
    assert missing_metrics(run, cfg) == []                    # done by its declared keys
    assert "eval/sharp/lit" in metrics and "eval/sharp/mean" in metrics    # a key without eval/ gets it

    # a run lacking one declared key is missing exactly this metric
    run_dict = client.get_run(rids[1])
    run_dict.data.metrics.pop("eval/sharp/mean")
    assert missing_metrics(run_dict, cfg) == [PLUGIN]

    df = table_dataframe("plug", uri)
    labels = {m.key: m.label for m in df.attrs["metrics"]}
    assert labels["eval/sharp/lit"] == "lit fraction" and labels["eval/sharp/mean"] == "mean level"
    md = render(df, "md")
    header = md.splitlines()[0]
    assert "| lit fraction |" in header and "| mean level |" in header
    assert header.index("FID") < header.index("lit fraction")
    row_lit = df["sharp_lit_mean"].tolist()
    best = df.loc[df["sharp_lit_best"], "sharp_lit_mean"].tolist()
    assert best == [max(row_lit)]                              # declared direction: higher is better
    best_mean = df.loc[df["sharp_mean_best"], "sharp_mean_mean"].tolist()
    assert best_mean == [min(df["sharp_mean_mean"])]           # lower is better
    assert format(max(row_lit), ".3f") in md


def _params_before_metric_objects(cfg) -> dict[str, str]:
    """EvalConfig.as_params as it was written before metrics were objects (commit f8380b6), for the built-ins."""
    p = {"eval.num_samples": cfg.num_samples, "eval.truncation": cfg.truncation, "eval.noise_mode": "const",
         "eval.image_size": cfg.image_size if cfg.image_size is not None else "native",
         "eval.latents.seed": cfg.latents.seed}
    if cfg.fid.enabled or cfg.diversity.feature.enabled:
        p["eval.fid.feature_extractor"] = cfg.fid.feature_extractor
        p["eval.fid.mode"] = cfg.fid.mode
        if cfg.fid.feature_extractor != "inception":
            p["eval.fid.custom_resize"] = cfg.fid.custom_resize
    if cfg.fid.enabled:
        p["eval.fid.reference"] = cfg.fid.reference
        p["eval.fid.kid"] = cfg.fid.kid
    if cfg.clip.enabled:
        first = cfg.clip.models[0]
        p["eval.clip.model"] = first.name
        p["eval.clip.pretrained"] = first.pretrained
        p["eval.clip.quick_gelu"] = "auto" if first.quick_gelu is None else first.quick_gelu
        p["eval.clip.score"] = "100*max(cos,0)"
        p["eval.clip.preprocess"] = "open_clip_eval"
        if len(cfg.clip.models) > 1:
            p["eval.clip.models"] = ",".join(
                f"{m.name}/{m.pretrained}" + ("" if m.quick_gelu is None else f"/quick_gelu={m.quick_gelu}")
                for m in cfg.clip.models)
        if cfg.clip.num_images is not None:
            p["eval.clip.num_images"] = cfg.clip.num_images
    lp = cfg.diversity.lpips
    if lp.enabled:
        p["eval.lpips.net"] = lp.net
        p["eval.lpips.protocol"] = f"{lp.num_images}img/{lp.groups}x{lp.group_size}"
        if lp.resize is not None:
            p["eval.lpips.resize"] = lp.resize
    if cfg.diversity.feature.enabled:
        p["eval.feature_diversity"] = "mean_pairwise_cosine_distance"
        if cfg.diversity.feature.num_images is not None:
            p["eval.feature_diversity.num_images"] = cfg.diversity.feature.num_images
    if cfg.extra_metrics:
        p["eval.extra_metrics"] = ",".join(cfg.extra_metrics)
    return {k: str(v) for k, v in p.items()}


def _params_now(cfg) -> dict[str, str]:
    """The params above plus what issue 22 added on purpose (they change numbers, so they must change the
    fingerprint): the authors' image export and truncation centre, and source preservation's parts."""
    p = dict(_params_before_metric_objects(cfg))
    p["eval.image_resize"] = cfg.image_resize
    p["eval.image_quantize"] = cfg.image_quantize
    p["eval.truncation_center"] = ("none" if cfg.truncation == 1 else "checkpoint" if cfg.truncation_center ==
                                   "checkpoint" else f"mean_latent:{cfg.truncation_center_samples}:"
                                                     f"seed{cfg.truncation_center_seed}")
    pres = cfg.preservation
    if pres.enabled:
        p["eval.preservation.parts"] = ",".join(x for x in ("lpips", "clip", "features") if getattr(pres, x))
        p["eval.preservation.num_images"] = str(min(pres.num_images or cfg.num_samples, cfg.num_samples))
        if pres.features:
            p["eval.fid.feature_extractor"] = cfg.fid.feature_extractor
            p["eval.fid.mode"] = cfg.fid.mode
            if cfg.fid.feature_extractor != "inception":
                p["eval.fid.custom_resize"] = cfg.fid.custom_resize
    return {k: str(v) for k, v in p.items()}


def _sweep_evaluations() -> list[tuple[str, dict]]:
    out = []
    for path in sorted((REPO / "sweeps").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and isinstance(data.get("evaluation"), dict):
            out.append((str(path.relative_to(REPO)), data["evaluation"]))
    return out


@pytest.mark.parametrize("data", [
    {}, {"fid": {"enabled": False}}, {"fid": {"enabled": False}, "diversity": {"feature": {"enabled": False}}},
    {"fid": {"feature_extractor": "pocket.metrics:judge_features", "custom_resize": "mode", "kid": False,
             "reference": "/x"}, "clip": {"enabled": False}},
    {"clip": {"num_images": 5, "models": [{"name": "a"}, {"name": "b", "pretrained": "c", "quick_gelu": True}]},
     "diversity": {"lpips": {"resize": 64, "net": "vgg"}, "feature": {"num_images": 10}}, "image_size": None},
    {"diversity": {"lpips": {"enabled": False}}, "extra_metrics": ["pocket.metrics:prompt_accuracy"]},
])
def test_builtin_params_and_fingerprint_follow_the_protocol(data):
    from evaluation.config import EvalConfig

    cfg = EvalConfig.model_validate(data)
    want = _params_now(cfg)
    assert cfg.as_params() == want
    assert cfg.fingerprint() == hashlib.sha256(json.dumps(want, sort_keys=True).encode()).hexdigest()[:16]


def test_every_sweep_files_params_follow_the_protocol():
    from evaluation.config import EvalConfig

    evaluations = _sweep_evaluations()
    assert len(evaluations) >= 5
    for name, data in evaluations:
        data = json.loads(json.dumps(data).replace("${", "{"))   # env vars: the params only echo the value
        cfg = EvalConfig.model_validate(data)
        plugin_blocks = tuple(f"eval.{block}." for block in cfg._plugin_names.values())   # a plugin's own settings
        have = {k: v for k, v in cfg.as_params().items() if not k.startswith(plugin_blocks)}
        assert have == _params_now(cfg), name
