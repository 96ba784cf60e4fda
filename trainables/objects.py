"""'package.module:attr.path' -> the object (entrypoints, feature extractors, metric plugins)."""
from __future__ import annotations

import importlib
from typing import Any


def import_object(path: str) -> Any:
    """Import `module` and walk `attr.path` on it; a malformed path or a missing name is a clear error."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"{path!r} must be 'package.module:name' (e.g. trainables.adaptation.loop:adapt)")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
