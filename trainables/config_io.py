"""Reading adaptation configs: YAML files, `key=value` overrides, and errors that name the field."""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from trainables.config import AdaptConfig
from trainables.errors import ConfigError


def validation_problems(err: ValidationError, fields_of: str = "trainables/config.py") -> list[str]:
    """One `field.path: message (got value)` per problem of a pydantic error (the one formatter: configs,
    sweeps and evaluation settings all use it). `fields_of` names the file that lists the fields."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown field (check the spelling; see {fields_of} for the fields)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        got = "" if e["type"] in ("missing", "extra_forbidden") else f" (got {e.get('input')!r})"
        lines.append(f"{path}: {msg}{got}")
    return lines


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: `source: field.path: message (got value)`."""
    lines = [f"{source}: invalid config ({err.error_count()} problem{'s' * (err.error_count() > 1)})"]
    lines += [f"  - {line}" for line in validation_problems(err)]
    return "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value); the value is parsed as YAML (numbers, bools, lists)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE with a dotted key, e.g. guidance.cfg_scale=7.5")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key segment in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_dotted(data: dict[str, Any], path: str | list[str], value: Any) -> None:
    """Set data[a][b][c] = value for the path "a.b.c" (or ["a", "b", "c"]), creating missing (or null)
    intermediate mappings; an intermediate that is a value, not a mapping, is a ConfigError."""
    path = path.split(".") if isinstance(path, str) else list(path)
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {part!r} is a {type(child).__name__}, not a mapping")
        node = child
    node[path[-1]] = value


def get_dotted(data: dict[str, Any], path: str, default: Any = None) -> Any:
    """data[a][b][c] for the path "a.b.c", or `default` when any step is missing or not a mapping."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of `data` with every `key=value` override applied."""
    out = copy.deepcopy(data)
    for item in overrides or []:
        path, value = parse_override(item)
        set_dotted(out, path, value)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (give a path to a YAML file, e.g. configs/tiny.yaml)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config fields, got {type(data).__name__}")
    return data


def validate_config(data: dict[str, Any], source: str = "<config>") -> AdaptConfig:
    try:
        return AdaptConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")

# Model references in an AdaptConfig: where ${VAR} / ${VAR:-default} are expanded (and relative paths resolved)
REFERENCE_FIELDS = ("generator.checkpoint", "guidance.model", "guidance.text_encoder")
# ... and every path field (the references plus where the run writes): what a sweep expands and resolves
PATH_FIELDS = (*REFERENCE_FIELDS, "output_dir")


def expand_env(value: str, where: str = "") -> str:
    """Expand `${VAR}`, `${VAR:-default}` and `$VAR` (and `~`); an unset variable without default is an error."""

    def sub(m: re.Match) -> str:
        name, default = m.group(1) or m.group(3), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set (used in {value!r}): "
                          f"export {name}=... before running, or write ${{{name}:-default}}")

    return os.path.expanduser(_ENV.sub(sub, value))


def expand_references(data: dict[str, Any], source: str, base: Path | None = None) -> dict[str, Any]:
    """Expand env vars in the reference fields; a relative path that exists beside the config is made absolute."""
    out = copy.deepcopy(data)
    for field in REFERENCE_FIELDS:
        section, key = field.split(".")
        node = out.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            value = expand_env(node[key], where=f"{source}: {section}.{key}")
            if base is not None and not os.path.isabs(value) and (base / value).exists() and not Path(value).exists():
                value = str((base / value).resolve())
            node[key] = value
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> AdaptConfig:
    """Read YAML, apply overrides, expand env vars in references (relative paths resolve against the file's
    folder), validate."""
    data = apply_overrides(read_yaml(path), overrides)
    return validate_config(expand_references(data, str(path), Path(path).parent), source=str(path))


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
