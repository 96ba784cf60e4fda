"""Pocket metrics as evaluation metric objects (the judge reads the world's attributes off generated images).

In an EvalConfig:
    fid:
      feature_extractor: pocket.metrics:judge_features    # FID/KID/feature diversity on judge features
      custom_resize: native
    extra_metrics: [pocket.metrics:prompt_accuracy, pocket.metrics:attribute_preservation]

Each plugin is a `evaluation.metrics.Metric` instance (no settings) that declares the keys it logs (below:
`PromptAccuracy.keys`, ...), so `--only-missing` finds them by key and the table shows them as declared; an
instance is also callable as `prompt_accuracy(ctx)`.

- `judge_features`: clean-fid custom extractor, float32 [B,3,H,W] in [0,255] -> the judge's 128-d penultimate
  features (images are resized to 32x32 with antialiasing first).
- `prompt_accuracy`: fraction of samples on which the judge sees every attribute the prompt states (the
  prompt's attribute spec: `pocket.prompts.resolve`, the catalogue's spec or the parse of any other prompt
  over the pocket vocabulary), and per-attribute fractions.
- `attribute_preservation`: fraction of samples whose non-prompted attributes are the same in
  G_frozen(w) and G_train(w) (same latents), per attribute, and the mean centre shift in pixels.
- `ground_truth_fid`: FID (judge features) of the samples against the prompt's ground-truth reference set
  (pocket.refs, written on first use) and against the source set. evaluation's own `fid.reference` is one
  folder per sweep; a multi-prompt pocket sweep needs one per prompt, which this plugin resolves by prompt.
  A reference set's judge features are computed once per machine and kept in its folder
  (`.judge_features-<weights>-<environment>.npz`), not once per worker and prompt.
The three plugins score every prompt the pocket world can render (pocket/prompts.py: the words of the world's
captions; docs/pocket.md "Any prompt"): each carries `check_prompts(prompts)`, which evaluation's preflight
calls when a sweep is validated, so a sweep with a prompt the world cannot render is refused before training,
naming the prompt, the offending word and the vocabulary by attribute.
The CLIP score uses pocket-CLIP through evaluation's normal open_clip path (`clip.models: [{name:
pocket/models/clip/pocket-clip.json, pretrained: pocket/models/clip/open_clip_model.safetensors}]`).
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from pydantic import field_validator

from evaluation.fid import ReferenceStats, fid_from_features
from evaluation.context import EvalContext
from evaluation.metrics import Metric, MetricKey, NoSettings
from evaluation.sampling import compute_environment, list_images, load_images
from trainables.settings import StrictModel

from . import refs
from . import world as W
from .common import JUDGE_DIR
from .judge import HEADS, load_judge
from .prompts import PromptError, resolve, vocabulary_text


@lru_cache(maxsize=2)
def _judge(path: str = str(JUDGE_DIR)):
    return load_judge(path)


def _weights_id(path: Path = JUDGE_DIR) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:12]


def judge_features(device: torch.device | str = "cpu"):
    """clean-fid custom feature extractor on the judge's penultimate layer."""
    judge = load_judge().to(device)

    @torch.no_grad()
    def extract(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=device, dtype=torch.float32) / 127.5 - 1.0
        return judge.features(x).float()

    extract.cache_id = f"pocket-judge:{_weights_id()}"
    return extract


def judge_images(x01: torch.Tensor) -> dict[str, torch.Tensor]:
    """Judge predictions for [0,1] images of any size (resized to 32x32 inside)."""
    return _judge().predict(x01 * 2 - 1)


def load_folder(folder: Path) -> torch.Tensor:
    return load_images(list_images(folder))


def _folder_key(folder: Path) -> tuple:
    """A folder's identity for the caches below: its path, its PNGs and their modification times (a folder
    rewritten in place gets a new key)."""
    paths = list_images(folder)
    return (str(Path(folder).resolve()), len(paths), max((q.stat().st_mtime_ns for q in paths), default=0))


# A trial's three plugins read the same sample folder, and every trial of a sweep reads the same source samples
# and reference sets; with the sweep's reused workers these caches make each read once per process.
@lru_cache(maxsize=2)
def _cached_pixels(key: tuple) -> torch.Tensor:
    """A folder's decoded PNGs, shared by its predictions and its features (one decode per folder)."""
    return load_folder(Path(key[0]))


@lru_cache(maxsize=8)
def _cached_predictions(key: tuple) -> dict[str, torch.Tensor]:
    return judge_images(_cached_pixels(key))


@lru_cache(maxsize=8)
def _cached_features(key: tuple):
    return judge_feature_array(_cached_pixels(key))


@lru_cache(maxsize=8)
def _cached_reference_features(key: tuple):
    """A reference set's judge features, also kept on disk in the set's folder (`.judge_features-<id>.npz`, id =
    judge weights + `compute_environment()`, with the folder's image count and newest mtime): every worker and
    later sweep here loads the array the first computation saved (np.savez is lossless, and the same kernels
    made it) instead of decoding 2000 PNGs per prompt."""
    env = hashlib.sha256(compute_environment().encode()).hexdigest()[:8]
    cache = Path(key[0]) / f".judge_features-{_weights_id()}-{env}.npz"
    stamp = np.array(key[1:], dtype=np.int64)
    try:
        with np.load(cache) as data:
            if np.array_equal(data["stamp"], stamp):
                return data["feats"]
    except (OSError, KeyError, ValueError):
        pass                                     # absent or unreadable: compute it
    feats = _cached_features(key)
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")   # concurrent workers: unique temp, atomic rename
    try:
        np.savez(tmp, feats=feats, stamp=stamp)
        tmp.replace(cache)
    except OSError:
        pass                                     # a read-only reference folder: the process cache still holds it
    return feats


def folder_predictions(folder: Path) -> dict[str, torch.Tensor]:
    """Judge predictions of a folder's PNGs (cached per folder content)."""
    return _cached_predictions(_folder_key(folder))


def folder_features(folder: Path):
    """Judge features of a folder's PNGs as float64 numpy (cached per folder content)."""
    return _cached_features(_folder_key(folder))


def reference_features(folder: Path):
    """Judge features of a reference set's PNGs (cached per folder content, in the process and on disk)."""
    return _cached_reference_features(_folder_key(folder))


def accuracy_of(pred: dict[str, torch.Tensor], prompt: str) -> dict[str, float]:
    """Per-attribute and all-attribute agreement of judge predictions with a prompt's (parsed) spec."""
    spec = resolve(prompt).spec
    ok = torch.ones(len(pred["shape"]), dtype=torch.bool)
    out = {}
    for attr, value in spec.items():
        hit = pred[attr] == W.VOCAB[attr].index(value)
        out[f"pocket/acc_{attr}"] = hit.float().mean().item()
        ok &= hit
    out["pocket/prompt_accuracy"] = ok.float().mean().item()
    return out


def preservation_of(pred_src: dict[str, torch.Tensor], pred_new: dict[str, torch.Tensor],
                    prompt: str) -> dict[str, float]:
    """Agreement of the non-prompted attributes between paired source and adapted samples."""
    spec = resolve(prompt).spec
    keep = [a for a in HEADS if a not in spec]
    ok = torch.ones(len(pred_src["shape"]), dtype=torch.bool)
    out = {}
    for attr in keep:
        same = pred_src[attr] == pred_new[attr]
        out[f"pocket/keep_{attr}"] = same.float().mean().item()
        ok &= same
    out["pocket/preservation"] = ok.float().mean().item()
    out["pocket/position_shift_px"] = (pred_src["pos"] - pred_new["pos"]).norm(dim=1).mean().item()
    return out


def check_pocket_prompts(prompts) -> None:
    """Plugin `check_prompts`: one-line ValueError naming every prompt the world cannot render, its offending
    words, and the vocabulary by attribute."""
    refused = []
    for prompt in prompts:
        try:
            resolve(prompt)
        except PromptError as exc:
            refused.append(str(exc))
    if refused:
        raise ValueError("pocket metrics score only prompts written in the pocket world's vocabulary (pocket/"
                         "prompts.py: the words of its captions, the only ones pocket-SD and pocket-CLIP can read); "
                         f"cannot score: {' | '.join(refused)}; accepted: {vocabulary_text()}")


def in_domain(pred: dict[str, torch.Tensor]) -> torch.Tensor:
    """Source-domain membership per sample: the judge sees a plain circle."""
    return (pred["shape"] == W.SOURCE_FIXED["shape"]) & (pred["pattern"] == W.SOURCE_FIXED["pattern"])


def judge_fid(f1, f2) -> float:
    """FID between two judge-feature arrays (evaluation's clean-fid Frechet distance; f2 is the reference)."""
    return fid_from_features(f1, ReferenceStats(f2.mean(axis=0), np.cov(f2, rowvar=False), f2, "judge features"))


@torch.no_grad()
def judge_feature_array(x01: torch.Tensor):
    """The judge's 128-d features of [0,1] images as a float64 numpy array (batches of 256)."""
    j = _judge()
    x = x01 * 2 - 1
    return torch.cat([j.features(x[i:i + 256]) for i in range(0, len(x), 256)]).double().numpy()


def _key(stem: str, better, unit: str = "", detail: bool = False) -> MetricKey:
    """A pocket key as the table has always shown it: labelled by its last segment, 4 significant digits, no
    best mark (`better` is its direction; set mark_best to bold the best group mean); a per-attribute breakdown
    goes to the second table (evaluation.table: when three or more of its family are on the runs)."""
    return MetricKey(f"eval/pocket/{stem}", stem, better, ".4g", unit=unit, mark_best=False, detail=detail,
                     required=not detail)


class PromptAccuracy(Metric):
    """Judge accuracy of the run's prompt on its samples (all stated attributes at once, and per attribute)."""

    name = "prompt_accuracy"
    keys = (_key("prompt_accuracy", "max"),
            *(_key(f"acc_{attr}", "max", detail=True) for attr in HEADS))

    def check_prompts(self, prompts: list[str]) -> None:
        check_pocket_prompts(prompts)

    def compute(self, ctx: EvalContext, settings: NoSettings) -> dict[str, float]:
        return accuracy_of(folder_predictions(ctx.samples_dir), ctx.prompt)


class AttributePreservation(Metric):
    """Non-prompted attributes kept from G_frozen(w) to G_train(w), and the mean centre shift."""

    name = "attribute_preservation"
    keys = (_key("preservation", "max"), _key("position_shift_px", "min", unit="px"),
            *(_key(f"keep_{attr}", "max", detail=True) for attr in HEADS))

    def check_prompts(self, prompts: list[str]) -> None:
        check_pocket_prompts(prompts)

    def compute(self, ctx: EvalContext, settings: NoSettings) -> dict[str, float]:
        new = folder_predictions(ctx.samples_dir)
        src = folder_predictions(ctx.source_samples_dir())
        return preservation_of(src, new, ctx.prompt)


class GroundTruthFid(Metric):
    """Judge-feature FID to the prompt's ground truth (lower: closer) and to the source domain."""

    name = "ground_truth_fid"
    keys = (_key("fid_gt", "min"), _key("fid_source", None))

    def check_prompts(self, prompts: list[str]) -> None:
        check_pocket_prompts(prompts)

    def compute(self, ctx: EvalContext, settings: NoSettings) -> dict[str, float]:
        feats = folder_features(ctx.samples_dir)
        target = reference_features(refs.reference_dir(ctx.prompt))
        source = reference_features(refs.reference_dir(None))
        return {"pocket/fid_gt": judge_fid(feats, target), "pocket/fid_source": judge_fid(feats, source)}


class LookSettings(StrictModel):
    look: str          # the look, in pocket words (pocket/prompts.py), e.g. what a LoRA's phrase is bound to

    @field_validator("look")
    @classmethod
    def _renderable(cls, v: str) -> str:
        check_pocket_prompts([v])
        return v


class LookAccuracy(Metric):
    """Judge accuracy of a fixed look (`evaluation.look_accuracy.look`) whatever the run's prompt: a LoRA critic's
    new phrase ("sks shape") names no attribute the judge reads, so both arms of the pocket LoRA experiment are
    scored against the same look (docs/pocket.md, "Personalised critic"); preservation of the attributes the
    look does not state, and the judge-feature FID to the look's ground truth."""

    name = "look_accuracy"
    Settings = LookSettings
    keys = (_key("look_accuracy", "max"), _key("look_preservation", "max"), _key("look_fid_gt", "min"),
            *(_key(f"look_acc_{attr}", "max", detail=True) for attr in HEADS))

    def compute(self, ctx: EvalContext, settings: LookSettings) -> dict[str, float]:
        new = folder_predictions(ctx.samples_dir)
        acc = accuracy_of(new, settings.look)
        keep = preservation_of(folder_predictions(ctx.source_samples_dir()), new, settings.look)
        fid = judge_fid(folder_features(ctx.samples_dir), reference_features(refs.reference_dir(settings.look)))
        out = {"pocket/look_accuracy": acc.pop("pocket/prompt_accuracy"), "pocket/look_preservation":
               keep["pocket/preservation"], "pocket/look_fid_gt": fid}
        out.update({k.replace("pocket/acc_", "pocket/look_acc_"): v for k, v in acc.items()})
        return out


# the paths sweeps name (`pocket.metrics:prompt_accuracy`, ...; their `eval.extra_metrics` param is unchanged)
prompt_accuracy = PromptAccuracy()
attribute_preservation = AttributePreservation()
ground_truth_fid = GroundTruthFid()
look_accuracy = LookAccuracy()
