"""Named components, registered by import path and resolved when built (no torch import to validate a name).

    GUIDANCE.names()                     # ('fusion', 'nada'): what `method` accepts
    GUIDANCE.check("fusion")             # validates a config value, naming the field and the choices
    cls = GUIDANCE.load(cfg.method)      # imports trainables.guidance.fusion and returns FusionGuidance

Each registry lists its built-in components below, one line each: adding a component is its own file plus one
`add(...)` line here (or a call of `add` from a user's package before the config is validated). A value of
the form 'package.module:Name' is accepted too, so a researcher's own component needs no edit of this file.
Registration by path keeps `AdaptConfig` validation (and so `python -m sweeps validate`) free of torch.
"""
from __future__ import annotations

import importlib
from typing import Any


class UnknownComponentError(ValueError):
    """A config names a component no registry knows."""


class Registry:
    def __init__(self, field: str, kind: str):
        self.field = field          # the config field that selects from this registry ('method')
        self.kind = kind            # what its entries are ('guidance')
        self._paths: dict[str, str] = {}
        self._declarations: dict[str, str] = {}

    def add(self, name: str, target: str, declaration: str | None = None) -> None:
        """Register `name` -> 'package.module:Name' (imported only when built). `declaration`: a torch-free
        'package.module:Name' that declares the component's settings and facts (`Settings`, `settings_key`, ...)
        when the target's own module is heavy; default: the target itself."""
        for path in (target, declaration or target):
            module, _, attr = path.partition(":")
            if not module or not attr:
                raise ValueError(f"{self.kind} {name!r}: target {path!r} must be 'package.module:Name'")
        self._paths[name] = target
        if declaration:
            self._declarations[name] = declaration

    def names(self) -> tuple[str, ...]:
        return tuple(self._paths)

    def check(self, name: str) -> str:
        """`name` if registered or of the form 'module:Name'; otherwise a clear error (for config validators)."""
        if name in self._paths or (":" in name and all(name.partition(":")[::2])):
            return name
        choices = " or ".join(repr(n) for n in self._paths)
        raise UnknownComponentError(
            f"{self.field} {name!r} is not a registered {self.kind}: must be {choices}, or 'package.module:Name' "
            f"of your own (see trainables/registry.py)")

    def is_builtin(self, name: str) -> bool:
        return name in self._paths

    def load(self, name: str) -> Any:
        return self._import(name, self._paths.get(name, self.check(name)))

    def declaration(self, name: str) -> Any:
        """What the component declares about itself without building it (its settings class, config key and
        facts such as a generator kind's config defaults): the registered declaration, else the class itself."""
        return self._import(name, self._declarations.get(name) or self._paths.get(name, self.check(name)))

    def declarations(self) -> dict[str, Any]:
        """{name: declaration} of every registered component, in registration order."""
        return {name: self.declaration(name) for name in self._paths}

    def _import(self, name: str, target: str) -> Any:
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise UnknownComponentError(f"{self.field} {name!r}: cannot import {target} ({exc})") from exc


# What `method` selects: the critic that injects gradients into the generator's output.
GUIDANCE = Registry("method", "guidance")
GUIDANCE.add("fusion", "trainables.guidance.fusion:FusionGuidance", "trainables.guidance.fusion_settings:Fusion")
GUIDANCE.add("nada", "trainables.guidance.nada:NadaGuidance", "trainables.guidance.nada_settings:Nada")

# What `guidance.variant` selects: the score-distillation direction of the Fusion critic (paper SDS or a later
# variant; one file each in trainables/guidance/variants/, docs/variants.md).
SCORE_VARIANTS = Registry("guidance.variant", "score-distillation variant")
SCORE_VARIANTS.add("sds", "trainables.guidance.variants.sds:Sds")
SCORE_VARIANTS.add("nfsd", "trainables.guidance.variants.nfsd:Nfsd")
SCORE_VARIANTS.add("csd", "trainables.guidance.variants.csd:Csd")
SCORE_VARIANTS.add("delta", "trainables.guidance.variants.delta:Delta")
SCORE_VARIANTS.add("dds", "trainables.guidance.variants.dds:Dds")

# What `generator.kind` selects: how a generator family loads, renders, trains and saves.
GENERATOR_KINDS = Registry("generator.kind", "generator kind")
GENERATOR_KINDS.add("stylegan2", "trainables.generators.stylegan2_kind:StyleGAN2Kind",
                    "trainables.generators.stylegan2_info:StyleGAN2Info")
GENERATOR_KINDS.add("eg3d", "trainables.generators.eg3d.kind:EG3DKind", "trainables.generators.eg3d.info:EG3DInfo")
GENERATOR_KINDS.add("stylegan3", "trainables.generators.stylegan3.kind:StyleGAN3Kind",
                    "trainables.generators.stylegan3.info:StyleGAN3Info")

# The frozen diffusion-model layouts the Fusion critic loads `guidance.model` as: each torch-free declaration's
# `recognises(root)` is asked in this order (trainables/frozen/layouts.py); SD 1.x/2.x last, as the fallback.
DIFFUSION_LAYOUTS = Registry("guidance.model", "diffusion-model layout")
DIFFUSION_LAYOUTS.add("sdxl", "trainables.frozen.sdxl:FrozenSDXL", "trainables.frozen.layouts:SdxlLayout")
DIFFUSION_LAYOUTS.add("sd", "trainables.frozen.diffusion_model:FrozenDiffusion", "trainables.frozen.layouts:SdLayout")
