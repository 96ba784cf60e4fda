"""Sweep files: schema, expansion into trials, and errors that name the file, the line and the fix.

A sweep file is YAML:

    name: ffhq-long-prompt                 # MLflow experiment and Tune experiment name
    base: ../configs/ffhq.yaml             # AdaptConfig: a path (relative to this file) or an inline mapping
    grid:                                  # cartesian product; keys are dotted paths into AdaptConfig
      reg.directional.weight: [0.0, 1.0]
      seed: [42, 43]
    zip:                                   # each group varies together (equal lengths); groups multiply the grid
      - method: [fusion, nada]
        optim.lr: [0.0008, 0.0016]
    resources: {cpu: 4, gpu: 1}            # per trial; fractional allowed
    max_concurrent_trials: 4
    retries: 2                             # Tune FailureConfig(max_failures): resume from the last checkpoint
    storage_path: ${SWEEPS_STORAGE:-runs/sweeps}
    tracking_uri: null                     # null = local SQLite store in ./mlruns served on loopback
    checkpoint_every: 100                  # overrides train.checkpoint_every in every trial
    search: {type: grid}                   # grid | asha | optuna
    evaluation: {...}                      # passed to evaluation.EvalConfig

`${VAR}` and `${VAR:-default}` are expanded in paths (base, model references, storage_path, tracking_uri).
"""
from __future__ import annotations

import copy
import difflib
import itertools
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainables.config import AdaptConfig, flatten
from trainables.config_io import ConfigError, expand_references, read_yaml
from trainables.config_io import expand_env as _expand_env


class SweepError(ValueError):
    """A sweep file problem: the message names the file, the line or field path, and the fix."""


# ----------------------------------------------------------------------------------------------- YAML with marks
Path_ = tuple  # a key path into the YAML document: ("grid", "prompt", 2)


@dataclass
class Marks:
    """1-based line numbers of every key (and list item) in a YAML document."""

    file: str
    lines: dict[tuple, int] = field(default_factory=dict)

    def line(self, path: tuple) -> int | None:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def where(self, path: tuple) -> str:
        line = self.line(path)
        return f"{self.file}:{line}" if line else self.file


def _walk_marks(node: yaml.Node, path: tuple, marks: Marks, dupes: list) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                dupes.append((path + (key,), seen[key], line))
            seen[key] = line
            marks.lines[path + (key,)] = line
            _walk_marks(value_node, path + (key,), marks, dupes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            marks.lines[path + (i,)] = item.start_mark.line + 1
            _walk_marks(item, path + (i,), marks, dupes)


def load_yaml_with_marks(text: str, file: str) -> tuple[Any, Marks]:
    marks = Marks(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        raise SweepError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)} (fix the syntax)") from None
    dupes: list = []
    if node is not None:
        _walk_marks(node, (), marks, dupes)
    if dupes:
        path, first, second = dupes[0]
        what = "axis" if len(path) >= 2 and path[0] in ("grid", "zip") else "key"
        raise SweepError(
            f"{file}:{second}: {what} '{_dotted(path)}' is given twice (first at line {first}); "
            f"YAML would silently keep only the last one: merge the values into one list"
        )
    return data, marks


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


# ----------------------------------------------------------------------------------------------- env expansion
def expand_env(value: str, where: str = "") -> str:
    """`${VAR}`, `${VAR:-default}`, `$VAR` (trainables.config_io.expand_env), as a SweepError when unset."""
    try:
        return _expand_env(value, where)
    except ConfigError as exc:
        raise SweepError(str(exc)) from None


# Model references and paths: the fields where ${VAR} is expanded.
REF_FIELDS = ("generator.checkpoint", "guidance.model", "guidance.text_encoder", "output_dir")
# ... and in `evaluation:` (EvalConfig paths), so preflight and the trials see the same real paths
EVAL_PATH_FIELDS = ("fid.reference", "fid.inception_path", "fid.cache_dir", "latents.path", "cache_dir",
                    "output_dir", "diversity.lpips.backbone_path")


# ----------------------------------------------------------------------------------------------- schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)      # CPUs per trial (fractional allowed)
    gpu: float = Field(0.0, ge=0)      # GPUs per trial (fractional allowed: 0.5 = two trials per GPU)
    custom: dict[str, float] = Field(default_factory=dict)  # Ray custom resources per trial, e.g. {pool_a: 1}


class GridSearch(_Strict):
    type: Literal["grid"] = "grid"


class AshaSearch(_Strict):
    type: Literal["asha"]
    metric: str                                # a step metric reported by the loop, e.g. loss/sds_mse
    mode: Literal["min", "max"] = "min"
    grace_period: int = Field(100, ge=1)       # in loop steps
    reduction_factor: float = Field(4.0, gt=1)
    max_t: int | None = Field(None, ge=1)      # default: the largest train.iterations of the sweep


class Distribution(_Strict):
    dist: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None            # for choice

    @model_validator(mode="after")
    def _check(self) -> "Distribution":
        if self.dist == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty 'values' list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"{self.dist} needs low < high")
        return self


class OptunaSearch(_Strict):
    type: Literal["optuna"]
    num_samples: int = Field(..., ge=1)
    metric: str
    mode: Literal["min", "max"] = "min"
    params: dict[str, Distribution] = Field(..., min_length=1)   # dotted AdaptConfig path -> distribution
    seed: int = 0


class SweepSpec(_Strict):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    base: Union[str, dict[str, Any]]
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: list[dict[str, list[Any]]] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int | None = Field(None, ge=1)
    retries: int = Field(0, ge=0)
    storage_path: str = "runs/sweeps"
    tracking_uri: str | None = None
    checkpoint_every: int | None = Field(None, ge=0)
    search: Union[GridSearch, AshaSearch, OptunaSearch] = Field(default_factory=GridSearch, discriminator="type")
    evaluation: dict[str, Any] | None = None
    entrypoint: str = "trainables.loop:adapt"   # module:function with adapt's signature
    log_generator_max_mb: float = Field(256.0, ge=0)  # log the adapted generator as an artifact below this size


# ----------------------------------------------------------------------------------------------- AdaptConfig paths
def _unwrap(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin in (Union, getattr(__import__("types"), "UnionType", Union)):
        out = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def config_field(path: str, model: type[BaseModel] = AdaptConfig) -> tuple[bool, list[str]]:
    """(exists, suggestions) for a dotted path into `model`."""
    parts = path.split(".")
    current: type[BaseModel] | None = model
    for i, part in enumerate(parts):
        if current is None or part not in current.model_fields:
            names = list(current.model_fields) if current is not None else []
            prefix = ".".join(parts[:i])
            close = difflib.get_close_matches(part, names, n=3, cutoff=0.5)
            full = [f"{prefix}.{c}" if prefix else c for c in (close or names)]
            return False, full
        annotation = current.model_fields[part].annotation
        current = next((a for a in _unwrap(annotation) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return True, []


def set_dotted(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)


def get_dotted(data: dict[str, Any], path: str, default: Any = None) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


# ----------------------------------------------------------------------------------------------- expansion
@dataclass
class Trial:
    index: int
    overrides: dict[str, Any]        # axis path -> value for this grid point
    config: AdaptConfig              # the validated config of this grid point

    @property
    def label(self) -> str:
        parts = []
        for key, value in self.overrides.items():
            short = key.split(".")[-1] if key.count(".") else key
            text = str(value)
            parts.append(f"{short}={text[:24]}")
        return ",".join(parts)


@dataclass
class Sweep:
    spec: SweepSpec
    file: Path
    text: str
    base: dict[str, Any]             # base AdaptConfig mapping (env-expanded)
    axes: list[list[str]]            # groups of axis paths: [path] for grid axes, [paths] for zip groups
    trials: list[Trial]
    marks: Marks

    @property
    def varying(self) -> list[str]:
        """Axis paths whose value differs between trials (the table columns)."""
        out = []
        for group in self.axes:
            for path in group:
                if len({repr(t.overrides.get(path)) for t in self.trials}) > 1:
                    out.append(path)
        return out

    @property
    def storage_path(self) -> str:
        return self.spec.storage_path

    def point(self, overrides: dict[str, Any]) -> AdaptConfig:
        """The config of an arbitrary point (used for optuna samples)."""
        return build_config(self.base, overrides, self.spec.checkpoint_every)


def build_config(base: dict[str, Any], overrides: dict[str, Any], checkpoint_every: int | None) -> AdaptConfig:
    data = copy.deepcopy(base)
    for path, value in overrides.items():
        if path in REF_FIELDS and isinstance(value, str):
            value = expand_env(value, where=path)
        set_dotted(data, path, value)
    if checkpoint_every is not None:
        set_dotted(data, "train.checkpoint_every", checkpoint_every)
    return AdaptConfig.model_validate(data)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<config>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _load_base(spec: SweepSpec, file: Path, marks: Marks) -> dict[str, Any]:
    if isinstance(spec.base, dict):
        data = copy.deepcopy(spec.base)
        source = f"{marks.where(('base',))} (inline base)"
    else:
        rel = expand_env(spec.base, where=f"{marks.where(('base',))}: base")
        path = Path(rel) if os.path.isabs(rel) else (file.parent / rel)
        if not path.is_file():
            raise SweepError(
                f"{marks.where(('base',))}: base config {rel!r} not found (looked at {path}); the path is relative "
                f"to the sweep file: fix the path or give the config inline as a mapping"
            )
        try:
            data = read_yaml(path)
        except ConfigError as exc:
            raise SweepError(str(exc)) from None
        source = str(path)
    try:  # model references: ${VAR} expansion; relative checkpoints beside the base file (config_io's rule)
        data = expand_references(data, source, base=None if isinstance(spec.base, dict) else path.parent)
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    if isinstance(data.get("output_dir"), str):
        data["output_dir"] = expand_env(data["output_dir"], where=f"{source}: output_dir")
    return data


def _expand_evaluation(evaluation: dict[str, Any], marks: Marks) -> dict[str, Any]:
    """`${VAR}` expanded in the evaluation's path fields and CLIP model references (a copy)."""
    data = copy.deepcopy(evaluation)
    for path in EVAL_PATH_FIELDS:
        value = get_dotted(data, path)
        if isinstance(value, str):
            set_dotted(data, path, expand_env(value, where=f"{marks.where(('evaluation', *path.split('.')))}: "
                                                          f"evaluation.{path}"))
    models = get_dotted(data, "clip.models")
    for i, m in enumerate(models if isinstance(models, list) else []):
        for key in ("name", "pretrained"):
            if isinstance(m, dict) and isinstance(m.get(key), str):
                m[key] = expand_env(m[key], where=f"{marks.where(('evaluation', 'clip', 'models', i))}: "
                                                  f"evaluation.clip.models.{i}.{key}")
    return data


def _check_axis_path(path: str, where: str) -> None:
    ok, suggestions = config_field(path)
    if not ok:
        hint = f"did you mean {', '.join(repr(s) for s in suggestions[:3])}?" if suggestions else ""
        raise SweepError(
            f"{where}: axis '{path}' names no AdaptConfig field ({hint} axes are dotted paths into "
            f"trainables/config.py, e.g. guidance.cfg_scale, reg.directional.weight)"
        )


def _check_values(path: str, values: list[Any], marks: Marks, key: tuple, unique: bool = True) -> None:
    where = marks.where(key)
    if not isinstance(values, list):
        raise SweepError(f"{where}: axis '{path}' must be a list of values, e.g. {path}: [a, b]")
    if not values:
        raise SweepError(f"{where}: axis '{path}' is empty: give at least one value or remove the axis")
    if not unique:
        return
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        key_repr = repr(value)
        if key_repr in seen:
            line = marks.line(key + (i,)) or marks.line(key)
            raise SweepError(
                f"{marks.file}:{line}: axis '{path}' repeats the value {value!r} (also item {seen[key_repr] + 1}): "
                f"duplicate grid points would train the same trial twice; remove the repeat"
            )
        seen[key_repr] = i


def _format_spec_error(exc: ValidationError, marks: Marks) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # drop pydantic's discriminator tags from the path ("search", "asha", "metric")
        clean = loc[:1] + loc[2:] if loc[:1] == ("search",) and loc[1:2] and loc[1] in ("grid", "asha", "optuna") else loc
        loc = clean
        if err["type"] == "extra_forbidden":
            names = [n for n in _spec_fields_at(clean[:-1])]
            close = difflib.get_close_matches(str(clean[-1]), names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(names)}"
            lines.append(f"{marks.where(loc)}: unknown field '{_dotted(clean)}' ({hint})")
        elif err["type"] == "missing":
            lines.append(f"{marks.file}: required field '{_dotted(clean)}' is missing: add it")
        else:
            lines.append(
                f"{marks.where(loc)}: field '{_dotted(clean)}': {err['msg']} (got {err.get('input')!r})"
            )
    return "\n".join(lines)


def _spec_fields_at(path: tuple) -> list[str]:
    model: Any = SweepSpec
    for part in path:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return list(fields)
        candidates = [a for a in _unwrap(fields[part].annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = candidates[0] if candidates else None
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def load_sweep(file: str | Path) -> Sweep:
    """Parse, validate and expand a sweep file. Raises SweepError naming the file, line and fix."""
    file = Path(file)
    if not file.is_file():
        raise SweepError(f"{file}: sweep file not found (give the path to a YAML sweep file, e.g. sweeps/pocket/quick.yaml)")
    text = file.read_text()
    data, marks = load_yaml_with_marks(text, str(file))
    if not isinstance(data, dict):
        raise SweepError(f"{file}: the top level of a sweep file must be a mapping (name, base, grid, ...)")
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SweepError(_format_spec_error(exc, marks)) from None

    # paths with ${VAR}
    spec.storage_path = expand_env(spec.storage_path, where=f"{marks.where(('storage_path',))}: storage_path")
    if spec.tracking_uri:
        spec.tracking_uri = expand_env(spec.tracking_uri, where=f"{marks.where(('tracking_uri',))}: tracking_uri")

    base = _load_base(spec, file, marks)
    if spec.evaluation:
        spec.evaluation = _expand_evaluation(spec.evaluation, marks)

    # axes: names, values, no axis twice, no overlapping axes
    groups: list[list[str]] = []
    values: dict[str, list[Any]] = {}
    where_of: dict[str, tuple] = {}

    def add(path: str, vals: list[Any], key: tuple, unique: bool = True) -> None:
        where = marks.where(key)
        if path in values:
            raise SweepError(
                f"{where}: axis '{path}' is given twice (also at {marks.where(where_of[path])}): "
                f"an axis belongs to the grid or to one zip group, not both"
            )
        for other in values:
            if path.startswith(other + ".") or other.startswith(path + "."):
                raise SweepError(
                    f"{where}: axis '{path}' overlaps axis '{other}' (at {marks.where(where_of[other])}): "
                    f"set either the whole section or its fields, not both"
                )
        _check_axis_path(path, where)
        _check_values(path, vals, marks, key, unique)
        values[path] = vals
        where_of[path] = key

    for path, vals in spec.grid.items():
        add(path, vals, ("grid", path))
        groups.append([path])
    for gi, group in enumerate(spec.zip):
        if not group:
            raise SweepError(f"{marks.where(('zip', gi))}: zip group {gi + 1} is empty: remove it or add axes")
        lengths = {p: len(v) if isinstance(v, list) else -1 for p, v in group.items()}
        for path, vals in group.items():
            add(path, vals, ("zip", gi, path), unique=False)
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{p}: {n}" for p, n in lengths.items())
            raise SweepError(
                f"{marks.where(('zip', gi))}: zip group {gi + 1} has lists of different lengths ({detail}): "
                f"zipped axes vary together, so give every list the same length"
            )
        seen_rows: dict[str, int] = {}
        for i in range(next(iter(lengths.values()))):
            row = repr(tuple(group[p][i] for p in group))
            if row in seen_rows:
                first = next(iter(group))
                raise SweepError(
                    f"{marks.file}:{marks.line(('zip', gi, first, i))}: zip group {gi + 1} repeats the combination "
                    f"{dict((p, group[p][i]) for p in group)} (also item {seen_rows[row] + 1}): duplicate grid points "
                    f"would train the same trial twice; remove the repeat"
                )
            seen_rows[row] = i
        groups.append(list(group))

    if isinstance(spec.search, OptunaSearch):
        if values:
            raise SweepError(
                f"{marks.where(('search',))}: search type 'optuna' samples search.params; grid/zip axes cannot be "
                f"combined with it: move them into search.params as 'choice' distributions or use type 'grid'"
            )
        for path in spec.search.params:
            _check_axis_path(path, marks.where(("search", "params", path)))

    # the grid points: product over groups; a zip group contributes its i-th values together
    choices = []
    for group in groups:
        n = len(values[group[0]])
        choices.append([{p: values[p][i] for p in group} for i in range(n)])
    trials: list[Trial] = []
    for index, combo in enumerate(itertools.product(*choices) if choices else [()]):
        overrides: dict[str, Any] = {}
        for part in combo:
            overrides.update(part)
        try:
            cfg = build_config(base, overrides, spec.checkpoint_every)
        except SweepError:
            raise
        except ValidationError as exc:
            # point at the axis that produced the bad field, else at the base
            culprit = None
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                culprit = next((p for p in overrides if loc == p or loc.startswith(p + ".") or p.startswith(loc + ".")), culprit)
            where = marks.where(where_of[culprit]) if culprit else marks.where(("base",))
            point = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "(no axes)"
            raise SweepError(
                f"{where}: grid point trial_{index:03d} ({point}) gives an invalid AdaptConfig: {_validation_message(exc)} "
                f"(fix the {'axis values' if culprit else 'base config'})"
            ) from None
        trials.append(Trial(index=index, overrides=overrides, config=cfg))
    _check_resources(trials, marks, where_of)
    if isinstance(spec.search, OptunaSearch):
        trials = trials[:1]  # the base point; samples are drawn at run time
    return Sweep(spec=spec, file=file, text=text, base=base, axes=groups, trials=trials, marks=marks)


# ----------------------------------------------------------------------------------------------- preflight
def _check_resources(trials: list[Trial], marks: Marks, where_of: dict[str, tuple]) -> None:
    """Refuse batch sizes no device holds (trainables.preflight.resource_problems: the one bound)."""
    from trainables.preflight import resource_problems

    for trial in trials:
        problems = resource_problems(trial.config)
        if problems:
            field_ = problems[0].split(":", 1)[0]
            key = where_of.get(field_) or ("base", *field_.split("."))
            raise SweepError(f"{marks.where(key)}: trial_{trial.index:03d}: " + "; ".join(problems))


class MissingModelError(SweepError):
    """A model a trial needs is not on this machine (or its evaluation cannot run): raised before any trial starts."""


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
    if not sweep.spec.evaluation:
        return []
    from evaluation.config import EvalConfig
    from evaluation.preflight import evaluation_problems as eval_problems

    try:
        cfg = EvalConfig.model_validate(sweep.spec.evaluation)
    except ValidationError as exc:
        raise SweepError(f"{sweep.marks.where(('evaluation',))}: evaluation: {_validation_message(exc)} "
                         "(see evaluation/config.py EvalConfig)") from None
    return [f"evaluation.{p} ({sweep.marks.where(('evaluation',))})" for p in eval_problems(cfg, sweep_prompts(sweep))]


def check_models(sweep: Sweep) -> None:
    """Resolve every model reference the trials need (trainables.preflight, never downloading) and check the
    evaluation (evaluation.preflight); raise MissingModelError listing every problem at once, each with the
    trials that need it and the fix."""
    from trainables.preflight import model_problems

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


# ----------------------------------------------------------------------------------------------- figures
def estimate_gpu_hours(sweep: Sweep, figures_path: Path | None = None) -> tuple[float | None, str]:
    """GPU-hours from benchmarks/figures.yaml rows {method, it_per_s, gpu, [match: {dotted: value}]}."""
    figures_path = figures_path or Path(__file__).resolve().parent.parent / "benchmarks" / "figures.yaml"
    if not figures_path.is_file():
        return None, f"unknown (no benchmark figures table at {figures_path})"
    rows = yaml.safe_load(figures_path.read_text()) or []
    if isinstance(rows, dict):
        rows = rows.get("figures", [])
    total = 0.0
    for trial in sweep.trials:
        flat = flatten(trial.config)
        row = next(
            (r for r in rows if r.get("method") in (None, trial.config.method)
             and all(str(flat.get(k)) == str(v) for k, v in (r.get("match") or {}).items())),
            None,
        )
        if row is None or not row.get("it_per_s"):
            return None, f"unknown (no figure in {figures_path} matches trial {trial.index + 1})"
        gpus = max(sweep.spec.resources.gpu, 0.0) or 1.0
        total += trial.config.train.iterations / float(row["it_per_s"]) / 3600.0 * gpus
    return total, f"{total:.2f} GPU-hours (from {figures_path.name})"
