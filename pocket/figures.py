"""`python -m pocket figures`: one comparison figure per prompt of a pocket sweep (issue #15 item 6).

Each figure shows the trials' fixed grid latents (`train.sample_seed`):
    row 1     the frozen generator's samples: the top row of the trials' final grids (same latents, same
              unadapted generator, so the same pixels in every trial's grid; a trial whose top row differs is
              named in a note)
    row 2..   one row per configuration: the bottom row (the adapted generator) of the final grid of that
              configuration's trial at `seed` (default 0)
Rows are labelled on the left with the configuration and its headline metrics for the prompt: prompt accuracy
and preservation of the shown seed, and their mean over seeds when the sweep has several.

A configuration is `method`, then for score distillation `guidance.variant` (a run logged before the field
existed has no such param: sds), then each regularizer with weight > 0 and layer selection, then any other param
that varies among the trials sharing that label (e.g. `cfg_scale=20`):
`nada`, `fusion sds`, `fusion csd + recon 0.1`. Row order: nada first, then the variants in the registry's
order (trainables.registry.SCORE_VARIANTS), fewer regularizers first.

Grids come from the run's MLflow artifact `samples/final.png`, else from the trial's output folder (beside the
generator named by the tag `artifact.generator_path`). A row whose grid is missing or unreadable, or whose trial
drew other grid latents, is skipped with a printed note; the figure is still written. `index.png` puts every
prompt on one strip: the first few samples of the frozen row and of each configuration.
"""
from __future__ import annotations

import inspect
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel, ConfigDict, Field

from tracking import TrackingTarget, experiment_runs, retry, slug
from trainables.adaptation.grids import save_rows
from trainables.registry import SCORE_VARIANTS

from . import world as W
from .summary import frozen_baseline

GRID_ARTIFACT = "samples/final.png"            # the loop's final grid, logged by trainables.adaptation.tune under samples/
GRID_PAD = inspect.signature(save_rows).parameters["pad"].default    # the loop writes grids with this pad
ACCURACY, PRESERVATION = "eval/pocket/prompt_accuracy", "eval/pocket/preservation"
REGULARIZERS = {"directional": "dir", "reconstruction": "recon", "lpips": "lpips"}   # label names, in order;
# any other `reg.<name>.weight` param (a regularizer added later) follows them under its own name
NAMED = {"method", "guidance.variant", "layers.k"}   # in the label by name (with every reg.<name>.weight)
PER_TRIAL = {"prompt", "seed", "name", "output_dir", "sweep.trial_index"}   # select a figure/row or name a trial
PER_TRIAL_PREFIXES = ("eval.",                 # evaluation settings: one per sweep, not a configuration axis
                      "guidance.lora.")         # a LoRA file's sha256: follows the file guidance.lora names
SAME_LATENTS = ("generator.checkpoint", "generator.kind", "train.sample_seed", "train.sample_count",
                "train.sample_truncation")     # rows on one figure must agree on these (the grid latents)
GAP, MARGIN, ROW_GAP, BLOCK_GAP = 2, 6, 6, 10  # pixels: cells, figure edge, rows, index.png's column blocks
BACKGROUND, EMPTY = (255, 255, 255), (225, 225, 225)


class FigureConfig(BaseModel):
    """What `python -m pocket figures` draws; every knob a field."""
    model_config = ConfigDict(extra="forbid")

    experiment: str = "pocket-table"
    tracking_uri: str | None = None            # None: the project's local store (./mlruns/mlflow.db)
    parent: str | None = None                  # sweep run id; None: the newest sweep of the experiment
    seed: int = 0                              # which trial seed each configuration row shows
    out: Path | None = None                    # None: docs/figures/pocket/<experiment>
    min_cell: int = Field(64, ge=1)            # cells are enlarged (nearest neighbour) to at least this many px
    label_width: int = Field(250, ge=40)       # px of the label column on the left
    frozen_metrics: bool = True                # label row 1 with the unadapted generator's accuracy (pocket judge)
    index: bool = True                         # also write index.png (all prompts, one strip each)
    index_cells: int = Field(3, ge=1)          # samples per configuration on the index strips
    index_min_cell: int = Field(32, ge=1)


@dataclass(frozen=True)
class Trial:
    run_id: str
    prompt: str
    seed: str
    status: str
    start_time: int
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]


@dataclass
class Row:
    label: list[str]                           # the label's lines
    cells: np.ndarray | None                   # uint8 [n, h, w, 3] at native size; None: nothing to show


@dataclass
class Figure:
    image: Image.Image
    labels: list[list[str]]                    # each drawn row's label lines, top to bottom


@dataclass
class Result:
    paths: list[Path]
    notes: list[str]
    labels: dict[str, list[list[str]]]         # prompt -> each drawn row's label lines, top to bottom


class GridError(ValueError):
    """A grid image that is not save_rows' two-row layout."""


# ---- runs -----------------------------------------------------------------------------------------------
def read_trials(experiment: str, tracking: TrackingTarget, parent: str | None) -> tuple[str | None, list[Trial]]:
    """The trial runs of one sweep of `experiment`: `parent`, else the newest (parent of the newest trial),
    the same choice as `python -m pocket summary`."""
    client = tracking.client()
    _, runs = experiment_runs(client, experiment)
    trials = [Trial(r.info.run_id, r.data.params.get("prompt") or r.data.tags.get("prompt") or "?",
                    str(r.data.params.get("seed", "?")), r.info.status, r.info.start_time or 0,
                    dict(r.data.params), dict(r.data.tags), dict(r.data.metrics)) for r in runs]
    if not trials:
        raise SystemExit(f"experiment {experiment!r} has no trial runs; run its sweep first (or pass --tracking-uri)")
    parents = [t for t in trials if t.tags.get("mlflow.parentRunId")]
    if parent is None and parents:
        parent = max(parents, key=lambda t: t.start_time).tags["mlflow.parentRunId"]
    if parent is not None:
        known = sorted({t.tags.get("mlflow.parentRunId") for t in parents})
        trials = [t for t in trials if t.tags.get("mlflow.parentRunId") == parent]
        if not trials:
            raise SystemExit(f"--parent {parent}: no trial runs of experiment {experiment!r} belong to that sweep "
                             f"run; its sweep runs are: {', '.join(known) or 'none'}")
    return parent, trials


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def method_of(t: Trial) -> str:
    return (t.params.get("method") or t.tags.get("method") or "fusion").lower()


def base_label(t: Trial) -> str:
    """method [variant] [+ reg weight ...] [+ layers k=K]; a run without `guidance.variant` predates it: sds."""
    method = method_of(t)
    parts = [method if method == "nada" else f"{method} {t.params.get('guidance.variant') or 'sds'}"]
    known = list(REGULARIZERS)
    regs = sorted((k.split(".")[1] for k in t.params if _is_reg_weight(k)),
                  key=lambda name: (known.index(name) if name in known else len(known), name))
    parts += [f"+ {REGULARIZERS.get(name, name)} {_float(t.params[f'reg.{name}.weight']):g}" for name in regs
              if _float(t.params[f"reg.{name}.weight"]) > 0]
    k = int(_float(t.params.get("layers.k")))
    if k > 0:
        parts.append(f"+ layers k={k}")
    return " ".join(parts)


def _is_reg_weight(key: str) -> bool:
    parts = key.split(".")
    return len(parts) == 3 and parts[0] == "reg" and parts[2] == "weight"


def _is_axis_key(key: str) -> bool:
    return (key not in NAMED and not _is_reg_weight(key) and key not in PER_TRIAL and key not in SAME_LATENTS
            and not key.startswith(PER_TRIAL_PREFIXES))


def config_labels(trials: list[Trial]) -> dict[str, str]:
    """run id -> configuration label: the base label plus the params that vary among the trials sharing it
    (over all prompts and seeds of the sweep), as `name=value` (the key's last segment unless two clash)."""
    base = {t.run_id: base_label(t) for t in trials}
    axes: dict[str, list[str]] = {}
    for label in set(base.values()):
        group = [t for t in trials if base[t.run_id] == label]
        keys = {k for t in group for k in t.params if _is_axis_key(k)}
        axes[label] = sorted(k for k in keys if len({t.params.get(k) for t in group}) > 1)
    every = {k for ks in axes.values() for k in ks}
    lasts = [k.rpartition(".")[2] for k in every]
    short = {k: k.rpartition(".")[2] if lasts.count(k.rpartition(".")[2]) == 1 else k for k in every}
    return {t.run_id: ", ".join([base[t.run_id]] + [f"{short[k]}={t.params.get(k, '-')}" for k in axes[base[t.run_id]]])
            for t in trials}


def config_order(label: str, trial: Trial) -> tuple:
    """nada first, then the score variants in the registry's order, fewer regularizers first, then by label."""
    method = method_of(trial)
    variants = list(SCORE_VARIANTS.names())
    variant = trial.params.get("guidance.variant") or "sds"
    rank = variants.index(variant) if variant in variants else len(variants)
    return (method != "nada", method, rank, label.count("+"), label)


def prompt_order(prompts: set[str]) -> list[str]:
    """The catalogue's order (as the summary table), other prompts after it alphabetically."""
    order = {p.text: i for i, p in enumerate(W.CATALOGUE)}
    return sorted(prompts, key=lambda p: (order.get(p, len(order)), p))


# ---- grids ----------------------------------------------------------------------------------------------
def split_grid(grid: np.ndarray, n_cols: int | None = None, pad: int = GRID_PAD) -> tuple[np.ndarray, np.ndarray]:
    """(frozen row, adapted row) as uint8 [n, h, w, 3] from a final grid in save_rows' layout: two rows of n
    cells, canvas (2 (h + pad) + pad) x (n (w + pad) + pad); n from `train.sample_count`, else square cells."""
    height, width = grid.shape[:2]
    h = (height - pad) / 2 - pad
    n = n_cols if n_cols else (width - pad) / (h + pad) if h > 0 else 0
    w = (width - pad) / n - pad if n else 0
    if not (h >= 1 and w >= 1 and float(h).is_integer() and float(w).is_integer() and float(n).is_integer()):
        raise GridError(f"a {height}x{width} image is not two rows of {n_cols or 'square'} cells with {pad} px "
                        f"padding (trainables.adaptation.grids.save_rows' layout)")
    h, w, n = int(h), int(w), int(n)
    rows = [np.stack([grid[pad + i * (h + pad): pad + i * (h + pad) + h, pad + j * (w + pad): pad + j * (w + pad) + w]
                      for j in range(n)]) for i in range(2)]
    return rows[0], rows[1]


def fetch_grid(client: Any, trial: Trial, tmp: Path) -> Path | None:
    """The trial's final grid: its MLflow artifact (downloaded into tmp), else its output folder; None if neither."""
    listed = {a.path for a in retry(lambda: client.list_artifacts(trial.run_id, "samples"), what="list samples")}
    if GRID_ARTIFACT in listed:
        dst = tmp / trial.run_id
        dst.mkdir(parents=True, exist_ok=True)
        return Path(retry(lambda: client.download_artifacts(trial.run_id, GRID_ARTIFACT, str(dst)),
                          what="download grid"))
    generator = trial.tags.get("artifact.generator_path")
    local = Path(generator).parent / GRID_ARTIFACT if generator else None
    return local if local is not None and local.is_file() else None


def load_rows(client: Any, trial: Trial, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    path = fetch_grid(client, trial, tmp)
    if path is None:
        raise FileNotFoundError(f"no {GRID_ARTIFACT} artifact and none in the trial's output folder")
    with Image.open(path) as im:
        grid = np.asarray(im.convert("RGB"))
    count = trial.params.get("train.sample_count")
    return split_grid(grid, int(count) if count and count.isdigit() else None)


# ---- drawing --------------------------------------------------------------------------------------------
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _wrap(text: str, font: Any, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels (a word longer than the width is cut)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
            continue
        while len(word) > 1 and font.getlength(word) > width:
            cut = max([i for i in range(1, len(word)) if font.getlength(word[:i]) <= width] or [1])
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines or [""]


def _line_height(font: Any) -> int:
    return font.getbbox("Hgy")[3] + 2


def _scale(cells: np.ndarray, factor: int) -> np.ndarray:
    return cells.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else cells


def _factor(h: int, min_cell: int) -> int:
    return max(1, math.ceil(min_cell / h))


def compose(title: list[str], rows: list[Row], cfg: FigureConfig) -> Figure:
    """Title lines on top, then each row: its label (left column) and its cells enlarged to min_cell."""
    font, line = _font(), _line_height(_font())
    shown = [r for r in rows if r.cells is not None]
    h, w = shown[0].cells.shape[1:3]
    f = _factor(h, cfg.min_cell)
    cw, ch = w * f, h * f
    width = MARGIN + cfg.label_width + max(len(r.cells) for r in shown) * (cw + GAP) - GAP + MARGIN
    title_lines = [piece for t in title for piece in _wrap(t, font, width - 2 * MARGIN)]
    labels = [[piece for t in r.label for piece in _wrap(t, font, cfg.label_width - MARGIN)] for r in shown]
    heights = [max(ch, len(lab) * line) for lab in labels]
    height = MARGIN + len(title_lines) * line + ROW_GAP + sum(heights) + ROW_GAP * (len(shown) - 1) + MARGIN
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = MARGIN
    for text in title_lines:
        draw.text((MARGIN, y), text, fill=(0, 0, 0), font=font)
        y += line
    y += ROW_GAP
    for row, lab, rh in zip(shown, labels, heights):
        for i, text in enumerate(lab):
            draw.text((MARGIN, y + i * line), text, fill=(0, 0, 0) if i == 0 else (70, 70, 70), font=font)
        for j, cell in enumerate(_scale(row.cells, f)):
            canvas.paste(Image.fromarray(cell), (MARGIN + cfg.label_width + j * (cw + GAP), y))
        y += rh + ROW_GAP
    return Figure(canvas, [r.label for r in shown])


def compose_index(strips: list[tuple[str, list[np.ndarray | None]]], columns: list[str],
                  cfg: FigureConfig) -> Image.Image:
    """One strip per prompt: its label, then per column (frozen G, each configuration) the first index_cells
    samples (a grey block where the prompt has no such row)."""
    font, line = _font(), _line_height(_font())
    some = next(c for _, blocks in strips for c in blocks if c is not None)
    f = _factor(some.shape[1], cfg.index_min_cell)
    cw, ch = some.shape[2] * f, some.shape[1] * f
    block = cfg.index_cells * (cw + GAP) - GAP
    left = MARGIN + cfg.label_width
    heads = [_wrap(c, font, block) for c in columns]
    head_h = max(len(hd) for hd in heads) * line
    labels = [_wrap(p, font, cfg.label_width - MARGIN) for p, _ in strips]
    heights = [max(ch, len(lab) * line) for lab in labels]
    width = left + len(columns) * (block + BLOCK_GAP) - BLOCK_GAP + MARGIN
    height = MARGIN + head_h + ROW_GAP + sum(heights) + ROW_GAP * (len(strips) - 1) + MARGIN
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for c, hd in enumerate(heads):
        for i, text in enumerate(hd):
            draw.text((left + c * (block + BLOCK_GAP), MARGIN + i * line), text, fill=(0, 0, 0), font=font)
    y = MARGIN + head_h + ROW_GAP
    for (_, blocks), lab, rh in zip(strips, labels, heights):
        for i, text in enumerate(lab):
            draw.text((MARGIN, y + i * line), text, fill=(0, 0, 0), font=font)
        for c, cells in enumerate(blocks):
            x = left + c * (block + BLOCK_GAP)
            if cells is None:
                draw.rectangle((x, y, x + block - 1, y + ch - 1), fill=EMPTY)
                continue
            for j, cell in enumerate(_scale(cells[: cfg.index_cells], f)):
                canvas.paste(Image.fromarray(cell), (x + j * (cw + GAP), y))
        y += rh + ROW_GAP
    return canvas


def _metrics_line(t: Trial) -> str:
    def fmt(key: str) -> str:
        return f"{t.metrics[key]:.2f}" if key in t.metrics else "-"
    return f"seed {t.seed}: acc {fmt(ACCURACY)}  pres {fmt(PRESERVATION)}"


def _mean_line(group: list[Trial]) -> str | None:
    """Mean over the seeds that have each metric (a running trial has none yet); None below two seeds."""
    vals = {key: [t.metrics[key] for t in group if key in t.metrics] for key in (ACCURACY, PRESERVATION)}
    if len(vals[ACCURACY]) < 2:
        return None
    acc, pres = (f"{sum(v) / len(v):.2f}" if v else "-" for v in vals.values())
    return f"mean of {len(vals[ACCURACY])} seeds: acc {acc}  pres {pres}"


def _pick(candidates: list[Trial]) -> Trial:
    """A finished run before others, then the newest."""
    return max(candidates, key=lambda t: (t.status == "FINISHED", t.start_time))


# ---- the figures ----------------------------------------------------------------------------------------
def choose_trials(trials: list[Trial], labels: dict[str, str], columns: list[str], seed: int,
                  note: Callable[[str], None]) -> list[tuple[str, Trial, list[Trial]]]:
    """(label, the trial shown at `seed`, one trial per seed for the mean) per configuration of one prompt."""
    chosen = []
    for label in columns:
        group = [t for t in trials if labels[t.run_id] == label]
        at_seed = [t for t in group if t.seed == str(seed)]
        if not group:
            continue
        if not at_seed:
            note(f"{trials[0].prompt!r} / {label}: no trial at seed {seed} (seeds: "
                 f"{', '.join(sorted({t.seed for t in group}))}); row skipped")
            continue
        if len(at_seed) > 1:
            note(f"{trials[0].prompt!r} / {label} / seed {seed}: {len(at_seed)} runs; showing run "
                 f"{_pick(at_seed).run_id} (finished first, then newest)")
        per_seed = [_pick([t for t in group if t.seed == s]) for s in sorted({t.seed for t in group})]
        chosen.append((label, _pick(at_seed), per_seed))
    return chosen


def prompt_rows(chosen: list[tuple[str, Trial, list[Trial]]], client: Any, tmp: Path,
                frozen: tuple[float, float] | None, note: Callable[[str], None]) -> list[Row]:
    """Row 1 = the frozen row of the first usable grid, then one row per configuration on the same latents."""
    rows: list[Row] = []
    reference: tuple[Trial, np.ndarray] | None = None
    for label, trial, group in chosen:
        where = f"{trial.prompt!r} / {label}: run {trial.run_id}"
        try:   # one row's failure (missing artifact, unreadable PNG, store error) never ends the figure
            top, bottom = load_rows(client, trial, tmp)
        except Exception as exc:
            state = "" if trial.status == "FINISHED" else f" ({trial.status})"   # e.g. still running
            note(f"{where}{state}: {type(exc).__name__}: {exc}; row skipped")
            continue
        if reference is None:
            reference = (trial, top)
            rows.append(Row(["frozen G (unadapted)",
                             f"grid latents: train.sample_seed={trial.params.get('train.sample_seed', '?')}"]
                            + ([f"acc {frozen[0]:.2f}  pres 1.00"] if frozen else []), top))
        ref_trial, ref_top = reference
        differ = [k for k in SAME_LATENTS if trial.params.get(k) != ref_trial.params.get(k)]
        if differ or bottom.shape != ref_top.shape:
            note(f"{where} drew other grid latents than row 1 ("
                 + (", ".join(f"{k}={trial.params.get(k)} vs {ref_trial.params.get(k)}" for k in differ)
                    or f"cells {bottom.shape} vs {ref_top.shape}") + "); row skipped")
            continue
        if not np.array_equal(top, ref_top):
            note(f"{where}: its frozen row differs from row 1 in {np.mean(np.any(top != ref_top, axis=-1)):.1%} "
                 f"of pixels (same latent params; another machine's arithmetic?); row kept")
        rows.append(Row([label, _metrics_line(trial)] + [m for m in [_mean_line(group)] if m], bottom))
    return rows


def write_figures(cfg: FigureConfig, emit: Callable[[str], None] = print) -> Result:
    """One PNG per prompt (and index.png) under cfg.out; every skipped row is a note, emitted and returned."""
    tracking = TrackingTarget.of(cfg.tracking_uri)      # None: the local store ./mlruns
    parent, trials = read_trials(cfg.experiment, tracking, cfg.parent)
    out = cfg.out or Path("docs/figures/pocket") / cfg.experiment
    out.mkdir(parents=True, exist_ok=True)
    labels = config_labels(trials)
    order = {labels[t.run_id]: config_order(labels[t.run_id], t) for t in trials}
    columns = sorted(order, key=order.get)
    prompts = prompt_order({t.prompt for t in trials})
    frozen = frozen_baseline(prompts) if cfg.frozen_metrics else {}
    client = tracking.client()
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        emit(f"note: {text}")

    paths, strips, drawn = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for pi, prompt in enumerate(prompts, 1):
            chosen = choose_trials([t for t in trials if t.prompt == prompt], labels, columns, cfg.seed, note)
            rows = prompt_rows(chosen, client, Path(tmp), frozen.get(prompt), note)
            if not rows:
                note(f"{prompt!r}: no row to show (no trial at seed {cfg.seed} with a usable final grid); no figure")
                continue
            title = [f"\"{prompt}\"", f"{cfg.experiment}, sweep run {parent or '-'}; adapted rows at seed {cfg.seed}"]
            path = out / f"{pi:02d}-{slug(prompt, 60)}.png"
            figure = compose(title, rows, cfg)
            figure.image.save(path, optimize=True)
            paths.append(path)
            drawn[prompt] = figure.labels
            cells = {"frozen G": rows[0].cells} | {r.label[0]: r.cells for r in rows[1:]}
            strips.append((prompt, [cells.get(c) for c in ["frozen G"] + columns]))
        if cfg.index and strips:
            path = out / "index.png"
            compose_index(strips, ["frozen G"] + columns, cfg).save(path, optimize=True)
            paths.append(path)
    return Result(paths, notes, drawn)
