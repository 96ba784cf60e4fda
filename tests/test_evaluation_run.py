"""evaluate_run against a real local MLflow store, `run --only-missing` idempotence.

A tiny StyleGAN2 (32 px, random weights) saved with `save_rosinality`; FID features from the fixed random
conv net `evaluation.testing:random_conv_features`; CLIP score with the random tiny open_clip model
(plumbing only); LPIPS with a random AlexNet backbone file (plumbing only); a test plugin metric.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from evaluation.config import EvalConfig  # noqa: E402
from evaluation.sampling import sample_checkpoint, sha256_file  # noqa: E402


def _tiny_generator(path, seed):
    from trainables.generators import StyleGAN2, StyleGAN2Config, save_rosinality

    torch.manual_seed(seed)
    g = StyleGAN2(StyleGAN2Config(size=32, style_dim=32, n_mlp=2, channels={4: 32, 8: 32, 16: 16, 32: 16}))
    save_rosinality(g, path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from evaluation.testing import save_random_lpips_backbone
    from trainables.testing import build_tiny_open_clip

    root = tmp_path_factory.mktemp("world")
    src = _tiny_generator(root / "source.pt", 0)
    adapted = _tiny_generator(root / "adapted.pt", 1)
    clip_cfg, clip_w = build_tiny_open_clip(root / "clip", seed=0)
    ref = root / "ref"
    sample_checkpoint(_tiny_generator(root / "refgen.pt", 2), ref, num_samples=16, truncation=1.0,
                      latents_seed=99, cache_dir=root / "cache", image_size=None, device="cpu", progress=False)
    (ref / "manifest.json").unlink()
    cfg = EvalConfig(
        num_samples=16, batch_size=16, image_size=None, device="cpu", progress=False,
        cache_dir=str(root / "cache"), latents=dict(path=str(root / "latents.pt"), seed=7),
        fid=dict(reference=str(ref), feature_extractor="evaluation.testing:random_conv_features",
                 kid_subset_size=8, kid_subsets=10),
        clip=dict(models=[dict(name=str(clip_cfg), pretrained=str(clip_w))]),
        diversity=dict(lpips=dict(num_images=16, groups=2, group_size=6,
                                  backbone_path=str(save_random_lpips_backbone(root / "alex.pth")))),
        extra_metrics=["evaluation.testing:brightness_plugin"],
    )
    return dict(root=root, src=src, adapted=adapted, cfg=cfg)


def _trial_run(client, exp_id, parent_id, generator, prompt, source):
    run = client.create_run(exp_id, tags={"mlflow.parentRunId": parent_id, "sweep.role": "trial"})
    rid = run.info.run_id
    client.log_param(rid, "method", "fusion")
    client.log_param(rid, "prompt", prompt)
    client.log_param(rid, "generator.checkpoint", str(source))
    client.log_param(rid, "artifact.generator_path", str(generator))
    client.set_terminated(rid, "FINISHED")
    return rid


def test_evaluate_run_and_only_missing(world, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from evaluation.__main__ import main
    from evaluation.runner import evaluate_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("sweep", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp_id, tags={"sweep.role": "parent"}).info.run_id
    cfg = world["cfg"].model_copy(update={"output_dir": str(tmp_path / "evals")})
    rid = _trial_run(client, exp_id, parent, world["adapted"], "a red thing", world["src"])
    metrics = evaluate_run(rid, None, cfg, uri)
    want = {"eval/fid", "eval/kid", "eval/clip_score", "eval/lpips_diversity", "eval/feature_diversity",
            "eval/test/brightness", "eval/test/source_change"}
    assert want <= set(metrics)
    assert metrics["eval/fid"] >= 0 and metrics["eval/test/source_change"] > 0
    run = client.get_run(rid)
    assert want <= set(run.data.metrics)
    assert run.data.params["eval.clip.model"] == cfg.clip.models[0].name
    assert run.data.params["eval.fid.feature_extractor"] == "evaluation.testing:random_conv_features"
    assert run.data.params["eval.latents.sha256"] == sha256_file(world["root"] / "latents.pt")
    arts = {a.path for a in client.list_artifacts(rid, "eval")}
    assert {"eval/manifest.json", "eval/strip.png"} <= arts
    # the source generator was sampled with the same latents for the plugin (once, in the shared cache folder)
    shared = list((world["root"] / "cache" / "source_samples").glob("*/manifest.json"))
    assert len(shared) == 1
    src_manifest = json.loads(shared[0].read_text())
    assert src_manifest["latents_sha256"] == json.loads(
        (tmp_path / "evals" / rid / "samples" / "manifest.json").read_text())["latents_sha256"]

    # a second trial, evaluated by the CLI; the first is skipped; a second invocation does nothing
    rid2 = _trial_run(client, exp_id, parent, world["src"], "a blue thing", world["src"])
    cfg_file = tmp_path / "eval.json"
    cfg_file.write_text(cfg.model_dump_json())   # JSON is YAML
    args = ["run", "--experiment", "sweep", "--tracking-uri", uri, "--only-missing", "--config", str(cfg_file)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "already evaluated" in out and "evaluated" in out.replace("already evaluated", "")
    assert want <= set(client.get_run(rid2).data.metrics)
    before = {r: client.get_metric_history(r, "eval/fid") for r in (rid, rid2)}
    samples = tmp_path / "evals" / rid2 / "samples"
    mtimes = {p: p.stat().st_mtime_ns for p in samples.iterdir()}
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("already evaluated") == 2 and "evaluated " not in out.replace("already evaluated", "")
    assert {r: client.get_metric_history(r, "eval/fid") for r in (rid, rid2)} == before
    assert {p: p.stat().st_mtime_ns for p in samples.iterdir()} == mtimes
    # other settings on an evaluated run are refused (params are immutable), naming the setting
    from evaluation.runner import EvalSettingsConflict

    with pytest.raises(EvalSettingsConflict, match="eval.truncation"):
        evaluate_run(rid, None, cfg.model_copy(update={"truncation": 0.5}), uri)


def test_preservation_pairs_source_and_adapted_images_of_the_same_z(world, tmp_path):
    """eval/preservation/* equal independent float64 computations over the written PNG pairs: LPIPS from a
    fresh `lpips.LPIPS` with the same backbone file, CLIP cosine from the open_clip model called directly,
    feature cosine from the extractor called directly; the source against itself preserves everything."""
    from pathlib import Path

    import lpips
    import numpy as np
    import open_clip
    from mlflow.tracking import MlflowClient
    from PIL import Image

    from evaluation.runner import evaluate_run
    from evaluation.sampling import list_images
    from evaluation.testing import random_conv_features

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("pres", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp_id, tags={"sweep.role": "parent"}).info.run_id
    cfg = world["cfg"].model_copy(update={"output_dir": str(tmp_path / "evals"), "extra_metrics": []})
    cfg.preservation.lpips = True
    cfg.preservation.num_images = 12
    rid = _trial_run(client, exp_id, parent, world["adapted"], "a red thing", world["src"])
    got = evaluate_run(rid, None, cfg, uri)
    same = evaluate_run(_trial_run(client, exp_id, parent, world["src"], "a red thing", world["src"]), None, cfg, uri)

    ada_paths = list_images(tmp_path / "evals" / rid / "samples")[:12]
    src_dir = next((world["root"] / "cache" / "source_samples").glob("*/manifest.json")).parent
    src_paths = list_images(src_dir)[:12]

    def pixels(paths):   # uint8 PNG -> float64 [N, 3, H, W] in [0, 1]
        return torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
                                ).permute(0, 3, 1, 2).double() / 255

    a, b = pixels(src_paths), pixels(ada_paths)
    net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).double()
    state = torch.load(cfg.diversity.lpips.backbone_path, weights_only=True)
    own = net.net.state_dict()
    for k in own:   # slice{s}.{i}.X <- features.{i}.X
        own[k] = state[f"features.{k.split('.', 1)[1]}"].double()
    net.net.load_state_dict(own)
    with torch.no_grad():
        ref_lpips = float(net(a * 2 - 1, b * 2 - 1).mean())

    spec = cfg.clip.models[0]
    model, _, preprocess = open_clip.create_model_and_transforms(Path(spec.name).stem, pretrained=spec.pretrained)
    model = model.double().eval()
    with torch.no_grad():
        def emb(paths):
            e = model.encode_image(torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths]).double())
            return e / e.norm(dim=-1, keepdim=True)
        ref_clip = float((emb(src_paths) * emb(ada_paths)).sum(-1).mean())
    fx = random_conv_features("cpu")
    fa, fb = (fx((x * 255).float()).double() for x in (a, b))
    ref_feat = float(torch.nn.functional.cosine_similarity(fa, fb, dim=1).mean())

    print({k: v for k, v in got.items() if "preservation" in k}, ref_lpips, ref_clip, ref_feat)
    assert abs(got["eval/preservation/lpips"] - ref_lpips) < 1e-4
    assert abs(got["eval/preservation/clip"] - ref_clip) < 1e-4
    assert abs(got["eval/preservation/features"] - ref_feat) < 1e-4
    assert got["eval/preservation/lpips"] > 1e-3 and got["eval/preservation/clip"] < 1 - 1e-4
    assert abs(same["eval/preservation/lpips"]) < 1e-6 and abs(same["eval/preservation/clip"] - 1) < 1e-6
    assert abs(same["eval/preservation/features"] - 1) < 1e-6
    run = client.get_run(rid)
    assert run.data.params["eval.preservation.parts"] == "lpips,clip,features"
