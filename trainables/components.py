"""Configs composed from the registries: every component's own settings become fields of the config. Torch-free.

A component (a guidance method, a score variant, a generator kind) declares its settings beside its code:

    class MyVariant(ScoreVariant):
        Settings = MyVariantSettings       # a trainables.settings.StrictModel
        settings_key = "mine"              # where they live: guidance.mine.<field> (default: the name)

`builtin_settings_fields(registry)` turns the declarations of the registered (built-in) components into pydantic
fields of the config that hosts them (`guidance.nfsd`, `nada`, ...). A component named as 'package.module:Class'
(from outside the repo) gets exactly the same: `ComponentHost` validates its settings under its key with the same
errors (the field path, so a sweep file's line), fills its defaults when the key is absent, dumps them with the
config (MLflow params, checkpoints' config guard) and refuses every other unknown key as a typo.
"""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails

from trainables.registry import Registry, UnknownComponentError
from trainables.settings import StrictModel


def settings_key(declaration: Any) -> str | None:
    """The config key of a declaration's settings (None when it declares none)."""
    if getattr(declaration, "Settings", None) is None:
        return None
    key = getattr(declaration, "settings_key", None) or getattr(declaration, "name", None)
    if not key:
        raise TypeError(f"{declaration!r} declares Settings but neither settings_key nor name")
    return key


def builtin_settings_fields(registry: Registry) -> dict[str, Any]:
    """{key: (Settings, Field(default_factory=Settings))} for every registered component that has settings."""
    fields: dict[str, Any] = {}
    for name, decl in registry.declarations().items():
        key = settings_key(decl)
        if key is None:
            continue
        if key in fields and fields[key][0] is not decl.Settings:
            raise TypeError(f"{registry.kind}s {name!r} and another both put settings at {key!r}")
        fields[key] = (decl.Settings, Field(default_factory=decl.Settings))
    return fields


def _error(loc: tuple, kind: str, value: Any, ctx: dict | None = None) -> InitErrorDetails:
    detail: InitErrorDetails = {"type": kind, "loc": loc, "input": value}
    if ctx:
        detail["ctx"] = ctx
    return detail


class ComponentHost(StrictModel):
    """A settings model whose `component_field` selects from `component_registry`; a 'package.module:Class'
    component's settings live beside the built-ins' at `<its settings_key>` (see the module docstring)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    component_field: ClassVar[str]
    component_registry: ClassVar[Registry]

    @model_validator(mode="wrap")
    @classmethod
    def _component_settings(cls, data: Any, handler: Any) -> Any:
        if not isinstance(data, dict):
            return handler(data)
        extras = {k: v for k, v in data.items() if k not in cls.model_fields}
        name = data.get(cls.component_field)
        if name is None:
            name = cls.model_fields[cls.component_field].default
        decl, key = None, None
        if isinstance(name, str) and not cls.component_registry.is_builtin(name):
            try:
                decl = cls.component_registry.declaration(name)
            except UnknownComponentError:
                decl = None                   # the selecting field's own validator reports it
            key = settings_key(decl) if decl is not None else None
        errors = [_error((k,), "extra_forbidden", v) for k, v in extras.items() if k != key]
        parsed = None
        if key is not None:
            try:
                parsed = decl.Settings.model_validate(extras.get(key, {}) or {})
            except ValidationError as exc:
                errors += [_error((key, *e["loc"]), e["type"], e.get("input"), e.get("ctx")) for e in exc.errors()]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        model = handler({k: v for k, v in data.items() if k not in extras})
        if parsed is not None:
            model.__pydantic_extra__[key] = parsed
        return model
