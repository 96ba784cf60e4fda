"""Check what an evaluation needs before any trial trains: all problems at once, each with its fix.

`evaluation_problems(cfg, prompts)` never loads a network and never downloads. It checks:
    fid.reference              set and present (when FID is on)
    Inception                  clean-fid's file (`/tmp/inception-2015-12-05.pt` or `fid.inception_path`), when
                               FID or feature diversity uses the default extractor
    fid.feature_extractor      a custom extractor imports (and accepts the prompts, see below)
    clip.models.<i>            every open_clip (name, pretrained) of the CLIP score resolves here
                               (trainables.preflight.resolve_open_clip_ref, as the training preflight does)
    diversity.lpips            the LPIPS backbone file
    extra_metrics.<i>          every plugin imports and accepts every prompt of the sweep
    batch_size                 the resource sanity bound of trainables.preflight (per evaluated batch)

Plugins say which prompts they can score with an optional attribute on the plugin function:
    plugin.check_prompts(prompts: list[str]) -> None    # raise ValueError naming the prompt and what is accepted
(e.g. `pocket.metrics`, whose metrics only score catalogue prompts). The sweep launcher (`sweeps.spec.
check_models`) and `python -m evaluation run` call this before any work.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from trainables.preflight import MissingModelsError, batch_problem, resolve_open_clip_ref

from .config import EvalConfig
from .diversity import check_lpips_backbone
from .fid import check_inception, import_object


class EvaluationPreflightError(MissingModelsError):
    """The evaluation cannot run as configured here; the message lists each problem with its fix."""


def error_reason(exc: BaseException) -> str:
    """One line: 'Type: message' (a KeyError's message without repr quotes, whitespace runs collapsed)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str) else str(exc)
    return " ".join(f"{type(exc).__name__}: {text}".split())


def check_plugin_prompts(obj: Any, prompts: Iterable[str]) -> None:
    """Call the plugin's optional `check_prompts(prompts)`; nothing when it has none."""
    check = getattr(obj, "check_prompts", None)
    if check is not None:
        check(list(prompts))


def _import_problem(field: str, path: str, prompts: list[str] | None, what: str) -> str | None:
    try:
        obj = import_object(path)
    except Exception as exc:  # noqa: BLE001 - any import failure is reported with the field
        return (f"{field}: {what} {path!r} cannot be imported ({error_reason(exc)}); give an importable "
                "'module:function' (the module must be on PYTHONPATH of every trial) or remove it")
    if prompts:
        try:
            check_plugin_prompts(obj, prompts)
        except Exception as exc:  # noqa: BLE001
            return (f"{field}: {what} {path!r} cannot score the sweep's prompts: {error_reason(exc)} "
                    "(change the prompts, or drop this metric from the evaluation)")
    return None


def evaluation_problems(cfg: EvalConfig, prompts: Iterable[str] | None = None) -> list[str]:
    """Human-readable problems (field: what is wrong, the fix); empty when the evaluation can run here."""
    prompts = sorted(set(prompts)) if prompts is not None else None
    problems: list[str] = []

    def attempt(field: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - every problem is listed, none stops the others' checks
            problems.append(f"{field}: {exc}")

    if cfg.fid.enabled:
        if not cfg.fid.reference:
            problems.append("fid.reference: not set; FID needs a folder / .zip of real target images or an .npz of "
                            "statistics (python -m evaluation reference), or set fid.enabled: false")
        elif not Path(cfg.fid.reference).expanduser().exists():
            problems.append(f"fid.reference: not found: {Path(cfg.fid.reference).expanduser()}; put the reference "
                            "images (or .npz) there or fix the path")
    if cfg.fid.enabled or cfg.diversity.feature.enabled:
        if cfg.fid.feature_extractor == "inception":
            attempt("fid.inception_path", check_inception, cfg.fid.inception_path)
        elif (p := _import_problem("fid.feature_extractor", cfg.fid.feature_extractor, prompts, "extractor")):
            problems.append(p)
    if cfg.clip.enabled:
        for i, m in enumerate(cfg.clip.models):
            attempt(f"clip.models.{i}", resolve_open_clip_ref, m.name, m.pretrained)
    if cfg.diversity.lpips.enabled:
        attempt("diversity.lpips", check_lpips_backbone, cfg.diversity.lpips.net, cfg.diversity.lpips.backbone_path)
    for i, path in enumerate(cfg.extra_metrics):
        if (p := _import_problem(f"extra_metrics.{i}", path, prompts, "plugin")):
            problems.append(p)
    # one evaluated batch holds min(batch_size, num_samples) images (sampling and feature passes)
    if cfg.image_size is not None:
        batch = min(cfg.batch_size, cfg.num_samples)
        if (p := batch_problem("batch_size", batch, cfg.image_size, 1, f" (at image_size {cfg.image_size})")):
            problems.append(p)
    return problems


def check_evaluation(cfg: EvalConfig, prompts: Iterable[str] | None = None, source: str = "evaluation") -> None:
    problems = evaluation_problems(cfg, prompts)
    if problems:
        raise EvaluationPreflightError(f"{source}: {len(problems)} evaluation problem(s) on this machine:\n"
                                       + "\n".join(f"- {p}" for p in problems))
