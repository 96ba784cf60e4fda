"""Check a LoRA file against the base model it is meant for, from the safetensors headers alone. Torch-free.

    problems = lora_problems("my_lora.safetensors", unet_dir=root / "unet", text_encoder_dir=root / "text_encoder")

Reads only the 8-byte length + JSON header of each .safetensors file (names, shapes, metadata): no tensor is
loaded and no model is built, so `trainables/preflight.py` (and `FrozenDiffusion.from_ref`, before it loads the
base weights) refuse a file that cannot fit before any step. The layout checked is the one diffusers'
`save_lora_weights` writes (peft's keys): `unet.<module>.lora_A.weight` [r, in, (k, k)], `.lora_B.weight`
[out, r, (1, 1)], the same under `text_encoder.`, and the adapter config (`r`, `rank_pattern`) in the header's
`lora_adapter_metadata`. Each problem names the key and what does not fit:
    missing keys     a lora_A without its lora_B (or the reverse)
    unknown keys     a key outside that layout (another trainer's format: convert it with diffusers first)
    another base     a target module the base lacks, or in/out features that differ from the base's weight
    wrong rank       lora_A's rank differs from lora_B's, or from the rank the file's own adapter config declares
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Sequence

from trainables.errors import ConfigError

COMPONENTS = ("unet", "text_encoder")          # StableDiffusionLoraLoaderMixin's loadable modules
METADATA_KEY = "lora_adapter_metadata"         # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
_KEY = re.compile(r"^(?P<comp>unet|text_encoder)\.(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$")
_MAX_HEADER = 100 * 2 ** 20


def read_header(path: str | Path) -> tuple[dict[str, list[int]], dict[str, str]]:
    """(tensor name -> shape, the file's __metadata__) of a .safetensors file, reading its header only."""
    path = Path(path)
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER:
            raise ValueError(f"{path}: not a safetensors file (header length {n} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a safetensors file (unreadable header: {exc})") from exc
    meta = header.pop("__metadata__", None) or {}
    return {k: list(v["shape"]) for k, v in header.items()}, meta


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lora_key(loras: Sequence[tuple]) -> tuple[tuple, ...]:
    """(sha256, scale, components...) of each adapter in order: what the frozen-model cache keys a LoRA'd critic
    by; each entry is (path, scale) or (path, scale, components)."""
    return tuple((sha256_file(path) if Path(path).is_file() else f"missing:{path}", float(scale), *rest)
                 for path, scale, *rest in loras)


def base_shapes(folder: str | Path) -> dict[str, list[int]]:
    """Parameter name -> shape of a diffusers/transformers weights folder (its .safetensors headers).

    A sharded checkpoint's shards are all read; variant files (`*.fp16.safetensors`) only when nothing else is
    there. Raises ValueError when the folder holds no safetensors weights (the shapes cannot be checked)."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.safetensors") if p.name.count(".") == 1)
    files = files or sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder} holds no .safetensors weights, so a LoRA's shapes cannot be checked against "
                         f"it; save the base model with safe_serialization=True (diffusers' default)")
    shapes: dict[str, list[int]] = {}
    for f in files:
        shapes.update(read_header(f)[0])
    return shapes


def _declared_ranks(meta: dict[str, str], comp: str) -> tuple[int | None, dict[str, int]]:
    """(r, rank_pattern) the file's adapter config declares for a component (None, {} without metadata)."""
    raw = meta.get(METADATA_KEY)
    if not raw:
        return None, {}
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError:
        return None, {}
    r = cfg.get(f"{comp}.r")
    return (int(r) if r is not None else None), dict(cfg.get(f"{comp}.rank_pattern") or {})


def _pattern_rank(module: str, r: int | None, pattern: dict[str, int]) -> int | None:
    """peft's rank_pattern: the first pattern the module name ends with overrides r."""
    for key, rank in pattern.items():
        if module == key or module.endswith("." + key) or re.fullmatch(key, module):
            return int(rank)
    return r


def lora_problems(lora: str | Path, unet_dir: str | Path, text_encoder_dir: str | Path | None) -> list[str]:
    """Every reason `lora` cannot be loaded onto the base whose weights are in these folders ([] = it fits)."""
    lora = Path(lora)
    if lora.suffix != ".safetensors":
        return [f"{lora} is not a .safetensors file; save the LoRA with diffusers' save_lora_weights "
                f"(safe_serialization=True)"]
    if not lora.is_file():
        return [f"file not found: {lora} (i.e. {lora.resolve()}); train one (python -m pocket lora) or "
                f"point the path at a LoRA saved by diffusers' save_lora_weights"]
    try:
        shapes, meta = read_header(lora)
    except (OSError, ValueError) as exc:
        return [f"{exc}"]
    pairs: dict[tuple[str, str], dict[str, list[int]]] = {}
    unknown = []
    for key, shape in shapes.items():
        m = _KEY.match(key)
        if m is None:
            unknown.append(key)
        else:
            pairs.setdefault((m["comp"], m["module"]), {})[m["part"]] = shape
    problems = []
    if unknown:
        problems.append(f"{lora.name}: {len(unknown)} unknown key(s), e.g. {unknown[:3]}: this check reads "
                        f"the layout diffusers' save_lora_weights writes ('unet.<module>.lora_A.weight' / "
                        f"'lora_B.weight', 'text_encoder.<module>...'); convert the file with diffusers first")
    if not pairs and not unknown:
        problems.append(f"{lora.name} holds no LoRA weights")
    bases = {"unet": unet_dir, "text_encoder": text_encoder_dir}
    base_cache: dict[str, dict[str, list[int]]] = {}
    for (comp, module), parts in sorted(pairs.items()):
        where = f"{lora.name}: {comp}.{module}"
        if set(parts) != {"lora_A", "lora_B"}:
            have, lack = next(iter(parts)), ({"lora_A", "lora_B"} - set(parts)).pop()
            problems.append(f"{where}: missing key {comp}.{module}.{lack}.weight (the file has its {have}); "
                            f"the file is incomplete: save it again with save_lora_weights")
            continue
        a, b = parts["lora_A"], parts["lora_B"]
        if len(a) < 2 or len(b) < 2 or a[0] != b[1]:
            problems.append(f"{where}: wrong rank: lora_A {a} has rank {a[0] if a else '?'} but lora_B {b} has "
                            f"rank {b[1] if len(b) > 1 else '?'}; the two halves of one adapter must agree")
            continue
        declared = _pattern_rank(module, *_declared_ranks(meta, comp))
        if declared is not None and declared != a[0]:
            problems.append(f"{where}: wrong rank: its weights have rank {a[0]} but the file's adapter config "
                            f"({METADATA_KEY}) declares r={declared}; the file is inconsistent: save it again")
            continue
        if bases[comp] is None:
            problems.append(f"{where}: the critic has no {comp} folder to load it into")
            continue
        if comp not in base_cache:
            try:
                base_cache[comp] = base_shapes(bases[comp])
            except (OSError, ValueError) as exc:
                problems.append(f"{exc}")
                base_cache[comp] = {}
        weight = base_cache[comp].get(f"{module}.weight", base_cache[comp].get(f"text_model.{module}.weight"))
        if not base_cache[comp]:
            continue
        if weight is None:
            problems.append(f"{where}: made for another base: the base {comp} ({bases[comp]}) has no module "
                            f"{module}; use a LoRA trained on this model (guidance.model)")
            continue
        if a[1] != weight[1] or b[0] != weight[0] or a[2:] != weight[2:]:
            problems.append(f"{where}: made for another base: it maps {a[1]} -> {b[0]} features"
                            f"{' with kernel ' + str(a[2:]) if a[2:] else ''}, the base module's weight is "
                            f"{weight} ({weight[1]} -> {weight[0]}); use a LoRA trained on this model "
                            f"(guidance.model)")
    return problems


def check_loras(paths: Sequence[str | Path], unet_dir: str | Path, text_encoder_dir: str | Path | None) -> None:
    """Raise ConfigError listing every problem of every file (`guidance.lora[i]: ...`); nothing when all fit."""
    problems = [f"guidance.lora[{i}]: {p}" for i, path in enumerate(paths)
                for p in lora_problems(path, unet_dir, text_encoder_dir)]
    if problems:
        raise ConfigError(f"{len(problems)} LoRA problem(s), refused before loading the critic:\n"
                          + "\n".join(f"- {p}" for p in problems))
