"""Generator kinds by name or by file: the registry's kinds (trainables/registry.py GENERATOR_KINDS), each living
beside its generator (`stylegan2_kind.py`, `eg3d/kind.py`) and following `trainables.protocols.GeneratorKind`.

    kind = generator_kind(cfg.generator.kind)        # "stylegan2" | "eg3d" | 'package.module:Class'
    g = kind.load(path); inputs = kind.step_inputs(g_frozen, batch, rng, truncation, device)
    x = kind.render(g, inputs, noise_mode, noise_rng)  # [B, 3, H, W] in about [-1, 1]
    kind, g = load_any(path)                          # every registered kind asked whether it recognises the file
"""
from __future__ import annotations

from pathlib import Path

from trainables.components import settings_key
from trainables.protocols import GeneratorKind
from trainables.registry import GENERATOR_KINDS


def generator_kind(name: str) -> GeneratorKind:
    """The generator family `name` names (trainables/registry.py, GENERATOR_KINDS), instantiated."""
    return GENERATOR_KINDS.load(name)()


def _kinds() -> list[GeneratorKind]:
    return [generator_kind(name) for name in GENERATOR_KINDS.names()]


def detect_kind(path: str | Path) -> str:
    """The name of the registered kind that recognises the file (by content), else the fallback kind's
    ('stylegan2': its loader names the precise problem of a file nobody recognises)."""
    kinds = _kinds()
    for kind in kinds:
        if not getattr(kind, "fallback", False) and kind.recognises(Path(path)):
            return kind.name
    return next(k.name for k in kinds if getattr(k, "fallback", False))


def kind_of(g) -> GeneratorKind:
    """The registered kind whose generators `g` is one of."""
    for kind in _kinds():
        if kind.owns(g):
            return kind
    raise TypeError(f"no registered generator kind owns a {type(g).__name__}; register its kind in "
                    f"trainables/registry.py or pass kind=")


def load_any(path: str | Path, kind: str | None = None):
    """(kind, generator) for any supported checkpoint; `kind` names the kind (None: the one that recognises it)."""
    loaded = generator_kind(kind or detect_kind(path))
    return loaded, loaded.load(path)


def kind_for(gen_cfg) -> GeneratorKind:
    """The kind a `generator:` config section names, with its settings (generator.<settings_key>) attached as
    `kind.settings` when it declares any."""
    kind = generator_kind(gen_cfg.kind)
    key = settings_key(kind)
    if key is not None:
        kind.settings = getattr(gen_cfg, key)
    return kind
