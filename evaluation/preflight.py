"""Check what an evaluation needs before any trial trains: all problems at once, each with its fix.

`evaluation_problems(cfg, prompts)` never loads a network and never downloads. It asks every enabled metric
(`Metric.problems`: its weights and references, each problem naming its field and the fix) and whether it
accepts every prompt of the sweep (`Metric.check_prompts`), then checks what the evaluation as a whole needs:
    fid.reference              set and present (when FID is on)                           (metrics/fid.py)
    Inception                  clean-fid's file (`/tmp/inception-2015-12-05.pt` or `fid.inception_path`), when
                               FID or feature diversity uses the default extractor        (metrics/fid.py)
    fid.feature_extractor      a custom extractor imports (and accepts the prompts)        (metrics/fid.py)
    clip.models.<i>            every open_clip (name, pretrained) of the CLIP score resolves here
                               (trainables.preflight.resolve_open_clip_ref)              (metrics/clip_score.py)
    diversity.lpips            the LPIPS backbone file                                    (metrics/lpips_diversity.py)
    extra_metrics.<i>          every plugin imports, its own problems, and it accepts every prompt
    batch_size                 the resource sanity bound of trainables.preflight (per evaluated batch)

A metric says which prompts it can score with `check_prompts(prompts) -> None` (raise ValueError naming the
prompt and what is accepted; a plain-function plugin may carry it as an attribute), e.g. `pocket.metrics`,
whose metrics only score prompts in the pocket vocabulary. The sweep launcher (`sweeps.spec.check_models`)
and `python -m evaluation run` call this before any work.
"""
from __future__ import annotations

from typing import Iterable

from trainables.preflight import MissingModelsError, batch_problem

from .config import EvalConfig
from .metrics.base import error_reason


class EvaluationPreflightError(MissingModelsError):
    """The evaluation cannot run as configured here; the message lists each problem with its fix."""


def evaluation_problems(cfg: EvalConfig, prompts: Iterable[str] | None = None) -> list[str]:
    """Human-readable problems (field: what is wrong, the fix); empty when the evaluation can run here."""
    prompts = sorted(set(prompts)) if prompts is not None else None
    problems: list[str] = []
    for unit in cfg.metric_units():
        plugin = unit in cfg.extra_metrics
        field = f"extra_metrics.{cfg.extra_metrics.index(unit)}" if plugin else None
        try:
            metric, settings = cfg.metric(unit)
        except Exception as exc:  # noqa: BLE001 - any import failure is reported with the field
            problems.append(f"{field}: plugin {unit!r} cannot be imported ({error_reason(exc)}); give an importable "
                            "'package.module:Name' (the module must be on PYTHONPATH of every trial) or remove it")
            continue
        field = field or ".".join(metric.settings_address())
        problems += metric.problems(settings, cfg, prompts)
        if prompts:
            try:
                metric.check_prompts(list(prompts))
            except Exception as exc:  # noqa: BLE001 - every problem is listed, none stops the others' checks
                what = f"plugin {unit!r}" if plugin else f"metric {unit!r}"
                problems.append(f"{field}: {what} cannot score the sweep's prompts: {error_reason(exc)} "
                                "(change the prompts, or drop this metric from the evaluation)")
    # one evaluated batch holds min(batch_size, num_samples) images (sampling and feature passes)
    if cfg.image_size is not None:
        batch = min(cfg.batch_size, cfg.num_samples)
        if (p := batch_problem("batch_size", batch, cfg.image_size, 1, f" (at image_size {cfg.image_size})")):
            problems.append(p)
    return list(dict.fromkeys(problems))   # FID and feature diversity share the extractor: one line per problem


def check_evaluation(cfg: EvalConfig, prompts: Iterable[str] | None = None, source: str = "evaluation") -> None:
    problems = evaluation_problems(cfg, prompts)
    if problems:
        raise EvaluationPreflightError(f"{source}: {len(problems)} evaluation problem(s) on this machine:\n"
                                       + "\n".join(f"- {p}" for p in problems))
