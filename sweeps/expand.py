"""A sweep file expanded into trials: env expansion, the base config, axes checks, the grid points.

    sweep = load_sweep("sweeps/pocket/quick.yaml")     # Sweep: spec, base, axes, trials (each a valid AdaptConfig)

`${VAR}` and `${VAR:-default}` are expanded in paths (base, model references, storage_path, tracking_uri and
the evaluation's paths). Every error is a SweepError naming the file, the line and the fix.
"""
from __future__ import annotations

import copy
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainables.config import AdaptConfig
from trainables.config_io import (PATH_FIELDS, ConfigError, expand_references, get_dotted, read_yaml, set_dotted,
                                  validation_problems)
from trainables.config_io import expand_env as _expand_env
from trainables.resources import resource_problems

from .errors import SweepError
from .schema import EVAL_PREFIX, AshaSearch, OptunaSearch, SweepSpec, config_field, format_spec_error
from .yaml_marks import Marks, load_yaml_with_marks

# Model references and paths of an AdaptConfig: the fields where ${VAR} is expanded (trainables.config_io)
REF_FIELDS = PATH_FIELDS
# ... and in `evaluation:` (EvalConfig paths), so preflight and the trials see the same real paths
EVAL_PATH_FIELDS = ("fid.reference", "fid.inception_path", "fid.cache_dir", "latents.path", "cache_dir",
                    "output_dir", "diversity.lpips.backbone_path")


def expand_env(value: str, where: str = "") -> str:
    """`${VAR}`, `${VAR:-default}`, `$VAR` (trainables.config_io.expand_env), as a SweepError when unset."""
    try:
        return _expand_env(value, where)
    except ConfigError as exc:
        raise SweepError(str(exc)) from None


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
            parts.append(f"{short}={str(value)[:24]}")
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
        return [path for group in self.axes for path in group
                if len({repr(t.overrides.get(path)) for t in self.trials}) > 1]

    @property
    def storage_path(self) -> str:
        return self.spec.storage_path

    def point(self, overrides: dict[str, Any]) -> AdaptConfig:
        """The config of an arbitrary point (used for optuna samples)."""
        return build_config(self.base, overrides, self.spec.checkpoint_every)


def build_config(base: dict[str, Any], overrides: dict[str, Any], checkpoint_every: int | None) -> AdaptConfig:
    """`base` with every axis value set at its dotted path (references env-expanded), validated."""
    data = copy.deepcopy(base)
    try:
        for path, value in overrides.items():
            if path in REF_FIELDS and isinstance(value, str):
                value = expand_env(value, where=path)
            set_dotted(data, path, copy.deepcopy(value))
        if checkpoint_every is not None:
            set_dotted(data, "train.checkpoint_every", checkpoint_every)
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    return AdaptConfig.model_validate(data)


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
            where = f"{marks.where(('evaluation', *path.split('.')))}: evaluation.{path}"
            try:
                set_dotted(data, path, expand_env(value, where=where))
            except ConfigError:   # a path through a non-mapping: left for the schema to report
                pass
    models = get_dotted(data, "clip.models")
    for i, m in enumerate(models if isinstance(models, list) else []):
        for key in ("name", "pretrained"):
            if isinstance(m, dict) and isinstance(m.get(key), str):
                m[key] = expand_env(m[key], where=f"{marks.where(('evaluation', 'clip', 'models', i))}: "
                                                  f"evaluation.clip.models.{i}.{key}")
    return data


def _check_axis_path(path: str, where: str, base: dict[str, Any] | None = None) -> None:
    ok, suggestions = config_field(path, data=base)
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


class _Axes:
    """The sweep's axes, checked as they are added: names, values, no axis twice, no overlapping axes."""

    def __init__(self, marks: Marks, base: dict[str, Any] | None = None):
        self.marks = marks
        self.base = base                           # which components of one's own the base selects
        self.groups: list[list[str]] = []          # [path] per grid axis, [paths] per zip group
        self.values: dict[str, list[Any]] = {}
        self.where_of: dict[str, tuple] = {}       # axis path -> its key path in the file

    def _add(self, path: str, vals: list[Any], key: tuple, unique: bool = True) -> None:
        where = self.marks.where(key)
        if path in self.values:
            raise SweepError(
                f"{where}: axis '{path}' is given twice (also at {self.marks.where(self.where_of[path])}): "
                f"an axis belongs to the grid or to one zip group, not both"
            )
        for other in self.values:
            if path.startswith(other + ".") or other.startswith(path + "."):
                raise SweepError(
                    f"{where}: axis '{path}' overlaps axis '{other}' (at {self.marks.where(self.where_of[other])}): "
                    f"set either the whole section or its fields, not both"
                )
        _check_axis_path(path, where, self.base)
        _check_values(path, vals, self.marks, key, unique)
        self.values[path] = vals
        self.where_of[path] = key

    def add_grid(self, grid: dict[str, list[Any]]) -> None:
        for path, vals in grid.items():
            self._add(path, vals, ("grid", path))
            self.groups.append([path])

    def add_zip(self, gi: int, group: dict[str, list[Any]]) -> None:
        """Zip group `gi` (0-based): equal lengths, no repeated row."""
        marks = self.marks
        if not group:
            raise SweepError(f"{marks.where(('zip', gi))}: zip group {gi + 1} is empty: remove it or add axes")
        lengths = {p: len(v) if isinstance(v, list) else -1 for p, v in group.items()}
        for path, vals in group.items():
            self._add(path, vals, ("zip", gi, path), unique=False)
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
        self.groups.append(list(group))

    def points(self) -> list[dict[str, Any]]:
        """The grid points: the product over groups; a zip group contributes its i-th values together."""
        choices = [[{p: self.values[p][i] for p in group} for i in range(len(self.values[group[0]]))]
                   for group in self.groups]
        return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*choices)]


def _trial(index: int, overrides: dict[str, Any], base: dict[str, Any], spec: SweepSpec, axes: _Axes) -> Trial:
    marks = axes.marks
    try:
        return Trial(index=index, overrides=overrides, config=build_config(base, overrides, spec.checkpoint_every))
    except ValidationError as exc:
        # point at the axis that produced the bad field, else at the base
        culprit = None
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            culprit = next((p for p in overrides if loc == p or loc.startswith(p + ".") or p.startswith(loc + ".")),
                           culprit)
        where = marks.where(axes.where_of[culprit]) if culprit else marks.where(("base",))
        point = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "(no axes)"
        raise SweepError(
            f"{where}: grid point trial_{index:03d} ({point}) gives an invalid AdaptConfig: "
            f"{'; '.join(validation_problems(exc))} (fix the {'axis values' if culprit else 'base config'})"
        ) from None


def _check_resources(trials: list[Trial], marks: Marks, where_of: dict[str, tuple]) -> None:
    """Refuse batch sizes no device holds (trainables.resources.resource_problems: the one bound)."""
    for trial in trials:
        problems = resource_problems(trial.config)
        if problems:
            field_ = problems[0].split(":", 1)[0]
            key = where_of.get(field_) or ("base", *field_.split("."))
            raise SweepError(f"{marks.where(key)}: trial_{trial.index:03d}: " + "; ".join(problems))


def _read_spec(file: Path) -> tuple[SweepSpec, str, Marks]:
    """The validated schema of a sweep file (its `evaluation:` paths env-expanded first), its text and marks."""
    if not file.is_file():
        raise SweepError(f"{file}: sweep file not found (give the path to a YAML sweep file, e.g. "
                         "sweeps/pocket/quick.yaml)")
    text = file.read_text()
    data, marks = load_yaml_with_marks(text, str(file))
    if not isinstance(data, dict):
        raise SweepError(f"{file}: the top level of a sweep file must be a mapping (name, base, grid, ...)")
    if isinstance(data.get("evaluation"), dict):
        data["evaluation"] = _expand_evaluation(data["evaluation"], marks)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SweepError(format_spec_error(exc, marks)) from None
    spec.storage_path = expand_env(spec.storage_path, where=f"{marks.where(('storage_path',))}: storage_path")
    if spec.tracking_uri:
        spec.tracking_uri = expand_env(spec.tracking_uri, where=f"{marks.where(('tracking_uri',))}: tracking_uri")
    return spec, text, marks


def _check_search_metric(spec: SweepSpec, marks: Marks) -> None:
    """An `eval/...` search metric exists only once a trial's evaluation ran (sweeps/trial.py reports it with the
    final result): ASHA, which compares trials at every step, cannot use one; Optuna needs the `evaluation` block."""
    if isinstance(spec.search, OptunaSearch) and spec.search.objectives is not None:
        for i, obj in enumerate(spec.search.objectives):
            if not obj.metric.startswith(EVAL_PREFIX):
                raise SweepError(f"{marks.where(('search', 'objectives', i, 'metric'))}: objective {obj.metric!r} is "
                                 f"not an evaluation metric: a multi-objective search ranks trials by their final "
                                 f"eval/... metrics (e.g. eval/clip_score, eval/preservation/clip)")
        if spec.evaluation is None:
            raise SweepError(f"{marks.where(('search', 'objectives'))}: a multi-objective search reads evaluation "
                             f"metrics but the sweep has no evaluation block: add one (docs/evaluation.md)")
    if isinstance(spec.search, OptunaSearch) and spec.search.pick is not None:
        for metric in spec.search.pick.subject_to:
            if not metric.startswith(EVAL_PREFIX):
                raise SweepError(f"{marks.where(('search', 'pick', 'subject_to', metric))}: bound on {metric!r}: "
                                 f"the pick reads final eval/... metrics")
    metric = getattr(spec.search, "metric", None)
    if not (metric and metric.startswith(EVAL_PREFIX)):
        return
    where = marks.where(("search", "metric"))
    if isinstance(spec.search, AshaSearch):
        raise SweepError(f"{where}: search.metric {metric!r} is an evaluation metric, reported once after training; "
                         f"ASHA compares trials at every step: use a step metric (e.g. loss/sds_mse) or type optuna")
    if spec.evaluation is None:
        raise SweepError(f"{where}: search.metric {metric!r} is an evaluation metric but the sweep has no "
                         f"evaluation block: add one (docs/evaluation.md) or search on a step metric")


def load_sweep(file: str | Path) -> Sweep:
    """Parse, validate and expand a sweep file. Raises SweepError naming the file, line and fix."""
    file = Path(file)
    spec, text, marks = _read_spec(file)
    base = _load_base(spec, file, marks)
    axes = _Axes(marks, base)
    axes.add_grid(spec.grid)
    for gi, group in enumerate(spec.zip):
        axes.add_zip(gi, group)
    if isinstance(spec.search, OptunaSearch):
        if axes.values:
            raise SweepError(
                f"{marks.where(('search',))}: search type 'optuna' samples search.params; grid/zip axes cannot be "
                f"combined with it: move them into search.params as 'choice' distributions or use type 'grid'"
            )
        for path in spec.search.params:
            _check_axis_path(path, marks.where(("search", "params", path)), base)
    _check_search_metric(spec, marks)
    trials = [_trial(i, overrides, base, spec, axes) for i, overrides in enumerate(axes.points())]
    _check_resources(trials, marks, axes.where_of)
    if isinstance(spec.search, OptunaSearch):
        trials = trials[:1]  # the base point; samples are drawn at run time
    return Sweep(spec=spec, file=file, text=text, base=base, axes=axes.groups, trials=trials, marks=marks)
