"""Before any trial starts: every model a sweep's trials need resolves here, and its evaluation can run.

    check_models(sweep)      # raises MissingModelError listing every problem at once, with the trials that need it
"""
from __future__ import annotations

from evaluation.preflight import evaluation_problems as eval_problems
from trainables.config import AdaptConfig
from trainables.preflight import model_problems

from .errors import MissingModelError
from .expand import Sweep
from .schema import OptunaSearch


def _idx(indices: list[int]) -> str:
    shown = ", ".join(f"trial_{i:03d}" for i in indices[:6])
    return shown + (", ..." if len(indices) > 6 else "")


def _reference_key(c: AdaptConfig) -> tuple:
    """The model references of a config: trials with equal keys need the same models."""
    return (c.generator.checkpoint, c.method, c.guidance.model, c.guidance.text_encoder,
            c.reg.lpips.net if c.reg.lpips.weight > 0 else None,
            tuple((m.name, m.pretrained) for m in c.nada.clip_models))


def sweep_prompts(sweep: Sweep) -> list[str]:
    """Every prompt the sweep's trials can use (grid points, and optuna's `prompt` choices)."""
    prompts = {t.config.prompt for t in sweep.trials}
    if isinstance(sweep.spec.search, OptunaSearch) and "prompt" in sweep.spec.search.params:
        prompts |= {str(v) for v in sweep.spec.search.params["prompt"].values or []}
    return sorted(prompts)


def evaluation_problems(sweep: Sweep) -> list[str]:
    """The sweep's `evaluation:` checked before training (evaluation.preflight): Inception, CLIP models, LPIPS
    weights, plugins importing and accepting every prompt of the sweep. Each line names the field."""
    if sweep.spec.evaluation is None:
        return []
    where = sweep.marks.where(("evaluation",))
    return [f"evaluation.{p} ({where})" for p in eval_problems(sweep.spec.evaluation, sweep_prompts(sweep))]


def check_models(sweep: Sweep) -> None:
    """Resolve every model reference the trials need (trainables.preflight, never downloading) and check the
    evaluation (evaluation.preflight); raise MissingModelError listing every problem at once, each with the
    trials that need it and the fix."""
    checked: dict[tuple, list[str]] = {}
    missing: dict[str, list[int]] = {}
    for trial in sweep.trials:
        key = _reference_key(trial.config)
        if key not in checked:
            checked[key] = model_problems(trial.config)
        for problem in checked[key]:
            missing.setdefault(problem, []).append(trial.index)
    lines = [f"  - {p} (trials {_idx(idx)})" for p, idx in missing.items()]
    lines += [f"  - {p} (every trial's evaluation)" for p in evaluation_problems(sweep)]
    if lines:
        raise MissingModelError(
            f"{sweep.file}: {len(lines)} problem(s) with model references or the evaluation, so no trial was "
            "started:\n" + "\n".join(lines)
        )
