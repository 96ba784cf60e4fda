"""'package.module:attr.path' -> the object (entrypoints, feature extractors, metric plugins)."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def import_object(path: str) -> Any:
    """Import `module` and walk `attr.path` on it; a malformed path or a missing name is a clear error."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"{path!r} must be 'package.module:name' (e.g. trainables.adaptation.loop:adapt)")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A package's module `__getattr__` (PEP 562) for `{module path: names}`: a name is imported from its module on
    first use, so a package can export heavy names while its torch-free submodules import without them."""
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
