"""A per-process cache of loaded frozen models, for sweep trials that run one after another in a reused worker.

    model = cached("diffusion", lambda: FrozenDiffusion.from_ref(ref, ...), refs=(ref, te_ref),
                   device=device, dtype=dtype, image_size=32, fast=False, compile=False)

OFF by default: `cached` then just calls `build()`, so plain `adapt()` calls and the test suite (one process
for many tests) load fresh models as before. `sweeps/trial.py` turns it on in each Ray worker
(`enable(ctx.model_cache_entries)`): Tune reuses workers between trials (`reuse_workers`), so a later trial
gets the frozen networks an earlier trial of the same worker loaded (the Fusion guidance's `FrozenDiffusion`,
NADA's open_clip models) instead of reading and building them again.

Key (a hit must be the object a fresh load would build):
    (kind, stamp(ref) for every reference, every other argument that changes the object, by name)
    stamp(local file)      = (resolved path, size, mtime_ns)
    stamp(local directory) = (resolved path, (relative path, size, mtime_ns) of every file beneath it)
    stamp(hub id org/name[@rev]) = (id, the commit its HF-cache refs/<rev or main> file names): a newer
                             snapshot pulled into the cache is a miss; a commit-hash revision is itself the stamp
    stamp(anything else)   = the string (an open_clip model name or weights tag: fixed files)
torch devices and dtypes in the arguments are keyed by their names ("cpu", "torch.float16").

Bound: at most `max_entries` objects (default DEFAULT_MAX_ENTRIES = 4: one SD plus NADA's two CLIP models fit
with room to spare, so a Fusion-vs-NADA sweep alternates without a miss); a miss that would exceed it evicts
the least recently used entry. Memory held by one worker is therefore at most that many frozen models (at
paper scale about 2.6 GB for SD 1.4 in fp16, 0.35-0.6 GB per ViT-B CLIP), on the device they were loaded on.

What may be shared: a cached object is handed to every trial whose key matches, so nothing may change it
after it is built. Frozen networks (eval, requires_grad False) are read only by the guidance; the only state
that changes is FrozenDiffusion's prompt -> embedding cache, whose values depend on the key alone.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import torch

from trainables.frozen.refs import hf_cache_dir, is_hub_id, split_revision

DEFAULT_MAX_ENTRIES = 4

T = TypeVar("T")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class _State:
    def __init__(self) -> None:
        self.max_entries = 0                    # 0: off (every call builds)
        self.entries: OrderedDict[tuple, Any] = OrderedDict()   # least recently used first
        self.stats = CacheStats()
        self.lock = threading.Lock()


_STATE = _State()


def enable(max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
    """Turn the cache on for this process with a bound of `max_entries` objects (0 turns it off)."""
    if max_entries < 0:
        raise ValueError(f"max_entries must be >= 0 (0 = off), got {max_entries}")
    with _STATE.lock:
        _STATE.max_entries = int(max_entries)
        _evict_to(_STATE.max_entries)


def disable() -> None:
    """Turn the cache off and drop every entry (and the counters)."""
    with _STATE.lock:
        _STATE.max_entries = 0
        _STATE.entries.clear()
        _STATE.stats = CacheStats()


def enabled() -> bool:
    return _STATE.max_entries > 0


def stats() -> CacheStats:
    """Hits, misses and evictions since the cache was last disabled (a copy)."""
    with _STATE.lock:
        return CacheStats(**vars(_STATE.stats))


def size() -> int:
    """Entries held now."""
    return len(_STATE.entries)


def cached(kind: str, build: Callable[[], T], *, refs: Sequence[str | os.PathLike | None] = (), **args: Any) -> T:
    """`build()` once per key while the cache is on; `build()` every time while it is off (the default)."""
    if not enabled():
        return build()
    key = make_key(kind, refs, args)
    with _STATE.lock:
        if key in _STATE.entries:
            _STATE.entries.move_to_end(key)
            _STATE.stats.hits += 1
            return _STATE.entries[key]
    obj = build()              # outside the lock: a load takes seconds; a concurrent miss just builds twice
    with _STATE.lock:
        _STATE.stats.misses += 1
        if _STATE.max_entries > 0:
            _STATE.entries[key] = obj
            _STATE.entries.move_to_end(key)
            _evict_to(_STATE.max_entries)
    return obj


def make_key(kind: str, refs: Sequence[str | os.PathLike | None], args: dict[str, Any]) -> tuple:
    """(kind, stamps of the references, sorted (name, value) of the other arguments)."""
    return (kind, tuple(stamp(r) for r in refs), tuple(sorted((k, _plain(k, v)) for k, v in args.items())))


def stamp(ref: str | os.PathLike | None) -> Any:
    """What identifies the content behind a reference (module docstring, "Key")."""
    if ref is None:
        return None
    path = Path(ref).expanduser()
    if path.is_file():
        st = path.stat()
        return (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if path.is_dir():
        files = []
        for dirpath, _, names in os.walk(path, followlinks=True):   # HF snapshots are symlinks to blobs
            for name in names:
                f = Path(dirpath) / name
                st = f.stat()
                files.append((str(f.relative_to(path)), st.st_size, st.st_mtime_ns))
        return (str(path.resolve()), tuple(sorted(files)))
    ref = str(ref)
    if is_hub_id(ref):
        repo, rev = split_revision(ref)
        refs_file = hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "refs" / (rev or "main")
        return (ref, refs_file.read_text().strip() if refs_file.is_file() else None)
    return ref


def _plain(name: str, value: Any) -> Any:
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value)
    try:
        hash(value)
    except TypeError as exc:
        raise TypeError(f"model_cache.cached: argument {name}={value!r} is not hashable; pass a str, number, "
                        f"bool, None, tuple, torch.device or torch.dtype") from exc
    return value


def _evict_to(limit: int) -> None:
    """Drop least recently used entries until at most `limit` remain (caller holds the lock)."""
    while len(_STATE.entries) > limit:
        _STATE.entries.popitem(last=False)
        _STATE.stats.evictions += 1
