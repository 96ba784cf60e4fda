"""The comparison table: runs of an experiment grouped by (source generator, prompt) and method variant.

Each cell is mean ± sample std (ddof=1) over the runs (seeds) of a variant, with the run count; within a
(source, prompt) group the best mean of each metric is marked (bold in Markdown/LaTeX, `*_best` columns in
CSV): lowest FID/KID, highest CLIP score and diversity. The variant label comes from the run's params:

    method=nada                       -> "NADA"
    method=fusion, nothing else on    -> "Fusion"
    reg.directional.weight > 0        -> "+ directional"     (appended in this order, e.g.
    reg.reconstruction.weight > 0     -> "+ reconstruction"   "Fusion + directional + LPIPS")
    reg.lpips.weight > 0              -> "+ LPIPS"
    layers.k > 0                      -> "+ layer selection k=K"

Metrics that failed on some runs (tags `eval.error.<metric>`, see evaluation.runner) are shown as missing
with their reason: a `Missing` column (`<metric> (k/n)`: k of the row's n runs lack it) and one note per
(metric, reason) under the table; `missing` in the DataFrame and the CSV.

Columns come from the metrics of the runs' evaluation (`evaluation.metrics`: the built-ins, and every plugin
named in a run's `eval.extra_metrics` param), each key as its metric declares it (`MetricKey`: label, better,
format, paper column, breakdown): the paper's columns first (FID, CLIP score, diversity), then the built-ins'
other keys (KID, raw cosine), then plugin keys sorted by key. A key no metric declares (a plain-function plugin)
is labelled by its last key segment and never marked. Per-attribute breakdowns (declared `detail`, or any
undeclared key, in a family of three or more keys `<ns>/<stem>_<attr>`, e.g. pocket/acc_colour,
pocket/acc_shape) go to a second table below the first; prompts are cut to PROMPT_WIDTH characters in
Markdown, so both stay readable in a terminal (CSV and LaTeX keep them whole).

`log_table` writes table.md / table.tex / table.csv and comparison.png (rows = variants, columns = the same
fixed latents, from each variant's first run's `eval/strip.png`) as artifacts `table/...` of the sweep's
parent run.
"""
from __future__ import annotations

import math
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from trainables.registry import GUIDANCE, SCORE_VARIANTS
from tracking import TrackingTarget, experiment_runs, mlflow_client, retry

from .metrics import METRICS, Metric, MetricKey, builtin_metrics, load_metric
from .runner import STRIP_ARTIFACT, run_errors


@dataclass(frozen=True)
class MetricSpec:
    """One column of the table (from a metric's declared `MetricKey`, or guessed for an undeclared key)."""

    key: str                                  # MLflow metric key
    name: str                                 # column stem in the DataFrame
    label: str                                # header in md/latex
    better: Literal["min", "max"] | None      # None: no best mark
    fmt: str = ".4g"
    detail: bool = False                      # a per-attribute breakdown: the second table

    @classmethod
    def of(cls, k: MetricKey, detail: bool = False) -> "MetricSpec":
        return cls(k.key, k.name, k.label, k.better if k.mark_best else None, k.fmt, detail)


PROMPT_WIDTH = 40
PLUGINS_COL = "eval_extra_metrics"   # runs_dataframe: the run's `eval.extra_metrics` param (its plugins)
GROUP_COLS = ["source", "prompt"]


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _declared_label(registry, name: str) -> str | None:
    """The `label` a component declares (a Fusion score variant: 'NFSD', ...; a method: 'Fusion', 'NADA'), None
    when it declares none; the name itself when it cannot be imported here (a plugin of another machine)."""
    try:
        return getattr(registry.declaration(name), "label", None)
    except Exception:  # noqa: BLE001 - a table of old runs must render without the plugin's package
        return name


def variant_label(params: dict[str, str], tags: dict[str, str] | None = None,
                  extra_params: Iterable[str] = ()) -> str:
    tags = tags or {}
    method = params.get("method") or tags.get("method") or "fusion"        # runs before methods were recorded
    method = method.lower() if GUIDANCE.is_builtin(method.lower()) else method
    if method == "nada":
        label = _declared_label(GUIDANCE, method) or method
    else:
        parts = [_declared_label(GUIDANCE, method) or method]
        variant = params.get("guidance.variant") or "sds"               # runs before variants existed: sds
        variant = variant.lower() if SCORE_VARIANTS.is_builtin(variant.lower()) else variant
        own = _declared_label(SCORE_VARIANTS, variant)                  # Fusion-NFSD, Fusion-bridge, ...
        if method == "fusion" and own:
            parts[0] = f"{parts[0]}-{own}"
        if _float(params.get("reg.directional.weight")) > 0:
            parts.append("directional")
        if _float(params.get("reg.reconstruction.weight")) > 0:
            parts.append("reconstruction")
        if _float(params.get("reg.lpips.weight")) > 0:
            parts.append("LPIPS")
        k = int(_float(params.get("layers.k")))
        if k > 0:
            parts.append(f"layer selection k={k}")
        label = " + ".join(parts)
    extra = [f"{p}={params[p]}" for p in extra_params if p in params]
    return label + (f" ({', '.join(extra)})" if extra else "")


def _method_order(label: str) -> tuple:
    if label.startswith("NADA"):
        return (0, label)
    if label == "Fusion" or label.startswith("Fusion ("):
        return (1, label)
    return (2, label.count("+"), label)


def runs_dataframe(experiment: str, tracking_uri: "str | TrackingTarget | None" = None,
                   extra_params: Iterable[str] = (), params: Iterable[str] = ()) -> pd.DataFrame:
    """One row per trial run: run_id, parent_run_id, source, prompt, method, seed, every eval/* metric,
    `eval_errors` ({metric slug: one-line reason} of the metrics that failed on the run), and a column
    'param/<name>' (float where it parses) for each of `params`."""
    client = mlflow_client(tracking_uri)
    _, trials = experiment_runs(client, experiment)
    rows = []
    for r in trials:
        p, t = r.data.params, r.data.tags
        row = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name,
            "parent_run_id": t.get("mlflow.parentRunId"),
            "status": r.info.status,
            "start_time": r.info.start_time,
            "source": p.get("generator.checkpoint") or t.get("generator") or "?",
            "prompt": p.get("prompt") or t.get("prompt") or "?",
            "method": variant_label(p, t, extra_params),
            "seed": p.get("seed"),
            "latents_sha256": p.get("eval.latents.sha256"),
            "eval_fingerprint": t.get("eval.fingerprint"),
            "eval_errors": run_errors(t),
            PLUGINS_COL: p.get("eval.extra_metrics"),
        }
        row.update({k: v for k, v in r.data.metrics.items() if k.startswith("eval/")})
        row.update({f"param/{k}": _param_value(p.get(k)) for k in params})
        rows.append(row)
    return pd.DataFrame(rows)


def _param_value(value: str | None) -> float | str | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return value


def _failed_units(runs: pd.DataFrame) -> set[str]:
    if "eval_errors" not in runs:
        return set()
    return {u for errs in runs["eval_errors"] if isinstance(errs, dict) for u in errs}


def _missing(g: pd.DataFrame) -> list[tuple[str, int, str]]:
    """(metric slug, runs of the group that lack it, the most frequent reason) for every failed metric."""
    if "eval_errors" not in g:
        return []
    reasons: dict[str, list[str]] = {}
    for errs in g["eval_errors"]:
        for unit, why in (errs if isinstance(errs, dict) else {}).items():
            reasons.setdefault(unit, []).append(why)
    return [(u, len(w), max(set(w), key=w.count)) for u, w in sorted(reasons.items())]


def table_metrics(runs: pd.DataFrame | None = None) -> list[tuple[str, Metric]]:
    """(unit, metric) of the runs' evaluation: the built-ins by name, then each plugin a run names (param
    `eval.extra_metrics`) by its path, when it imports here (one that does not: its keys are guessed)."""
    metrics = [(m.name, m) for m in builtin_metrics()]
    seen = set()
    if runs is not None and PLUGINS_COL in runs:
        for value in runs[PLUGINS_COL].dropna():
            for path in filter(None, str(value).split(",")):
                if path in seen:
                    continue
                seen.add(path)
                try:
                    metrics.append((path, load_metric(path)))
                except Exception:  # noqa: BLE001 - an unimportable plugin: its columns are guessed from key names
                    continue
    return metrics


def _declared(metrics: Iterable[Metric]) -> list[MetricKey]:
    return [k for m in metrics for k in m.keys]


def _declaration(key: str, declared: list[MetricKey]) -> MetricKey | None:
    return next((k for k in declared if k.matches(key)), None)


def detail_keys(keys: Iterable[str], metrics: Iterable[Metric] | None = None) -> set[str]:
    """Per-attribute keys: `eval/<ns>/<stem>_<attr>` where three or more keys share `<ns>/<stem>_` (a breakdown
    over attributes; a pair such as fid_gt / fid_source stays in the main table), among the keys declared as
    breakdowns (`MetricKey.detail`) and the keys no metric declares."""
    declared = _declared(builtin_metrics() if metrics is None else metrics)
    family: dict[str, list[str]] = {}
    for key in keys:
        k = _declaration(key, declared)
        if key.startswith("eval/") and (k is None or (k.detail and k.column)):
            head, _, last = key.rpartition("/")
            if "_" in last and head != "eval":
                family.setdefault(f"{head}/{last.split('_', 1)[0]}_", []).append(key)
    return {k for members in family.values() if len(members) > 2 for k in members}


def headline_metrics(keys: set[str], metrics: Iterable[Metric] | None = None) -> set[str]:
    """The metrics worth a chart on a sweep's parent run: the declared headline keys (the paper's, the
    plugins' own) and undeclared plugin keys, without breakdowns."""
    metrics = builtin_metrics() if metrics is None else list(metrics)
    declared = _declared(metrics)
    details = detail_keys(keys, metrics)
    out = set()
    for key in keys:
        k = _declaration(key, declared)
        if key.startswith("eval/") and key not in details and (k is None or (k.headline and k.column)):
            out.add(key)
    return out


def _metric_specs(runs: pd.DataFrame, extra: Iterable[MetricSpec] = ()) -> list[MetricSpec]:
    units = table_metrics(runs)
    metrics = [m for _, m in units]
    declared = _declared(metrics)
    failed = set()   # a failed metric keeps its first column (shown –)
    slugs = {unit.replace(":", "."): m for unit, m in units}
    for slug in _failed_units(runs):
        first = next((k.key for k in (slugs[slug].keys if slug in slugs else ()) if k.column and not k.prefix), None)
        if first is not None:
            failed.add(first)
    columns = [c for c in runs.columns if isinstance(c, str) and c.startswith("eval/")]
    present = set(columns) | failed
    builtins = [k for unit, m in units if unit in METRICS.names() for k in m.keys if k.column and not k.prefix]
    paper = sorted((k for k in builtins if k.paper), key=lambda k: k.paper)
    specs = [MetricSpec.of(k) for k in paper + [k for k in builtins if not k.paper] if k.key in present]
    known = {m.key for m in specs}
    for m in extra:
        if m.key in runs.columns and m.key not in known:
            specs.append(m)
            known.add(m.key)
    details = detail_keys(columns, metrics)
    rest = []
    for col in sorted(present - known):
        k = _declaration(col, declared)
        if k is None:   # no metric declares it: labelled by its last key segment, not marked
            rest.append(MetricSpec(col, col.removeprefix("eval/").replace("/", "_"), col.rpartition("/")[2], None,
                                   detail=col in details))
        elif k.column and not k.prefix:
            rest.append(MetricSpec.of(k, detail=col in details))
    return specs + sorted(rest, key=lambda m: m.detail)   # breakdowns last


def aggregate(runs: pd.DataFrame, extra_metrics: Iterable[MetricSpec] = ()) -> pd.DataFrame:
    """Group rows: source, prompt, method, n, <m>_mean, <m>_std, <m>_n, <m>_best for every metric."""
    specs = _metric_specs(runs, extra_metrics)
    out = []
    if runs.empty:
        return pd.DataFrame(columns=GROUP_COLS + ["method", "n"])
    for (source, prompt, method), g in runs.groupby(GROUP_COLS + ["method"], sort=False):
        row: dict[str, Any] = {"source": source, "prompt": prompt, "method": method, "n": len(g),
                               "latents_consistent": g["latents_sha256"].nunique(dropna=True) <= 1,
                               "first_run_id": g.sort_values("seed", key=lambda s: s.map(_float))["run_id"].iloc[0],
                               "missing": _missing(g)}
        for m in specs:
            vals = g[m.key].dropna().astype(float) if m.key in g else pd.Series(dtype=float)
            row[f"{m.name}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{m.name}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            row[f"{m.name}_n"] = int(len(vals))
        out.append(row)
    df = pd.DataFrame(out)
    for m in specs:
        df[f"{m.name}_best"] = False
        if m.better is None:
            continue
        for _, idx in df.groupby(GROUP_COLS, sort=False).groups.items():
            col = df.loc[idx, f"{m.name}_mean"].dropna()
            if len(col) < 2:
                continue
            best = col.min() if m.better == "min" else col.max()
            df.loc[col.index[col == best], f"{m.name}_best"] = True
    df["_order"] = df["method"].map(_method_order)
    df = df.sort_values(["source", "prompt", "_order"]).drop(columns="_order").reset_index(drop=True)
    df.attrs["metrics"] = specs
    return df


def table_dataframe(experiment: str, tracking_uri: "str | TrackingTarget | None" = None, *, extra_params: Iterable[str] = (),
                    extra_metrics: Iterable[MetricSpec] = (), parent_run_id: str | None = None) -> pd.DataFrame:
    """The aggregated table as a DataFrame (one row per source x prompt x method variant)."""
    runs = runs_dataframe(experiment, tracking_uri, extra_params)
    if parent_run_id is not None and not runs.empty:
        runs = runs[runs["parent_run_id"] == parent_run_id]
    return aggregate(runs, extra_metrics)


# ---- formatting --------------------------------------------------------------------------------------
def _cell(row: pd.Series, m: MetricSpec, pm: str) -> str:
    mean, std = row[f"{m.name}_mean"], row[f"{m.name}_std"]
    if isinstance(mean, float) and math.isnan(mean):
        return "–"
    text = format(mean, m.fmt)
    if not (isinstance(std, float) and math.isnan(std)):
        text += f"{pm}{format(std, m.fmt)}"
    if row[f"{m.name}_n"] != row["n"]:
        text += f" ({row[f'{m.name}_n']})"
    return text


def _short_source(source: str) -> str:
    return Path(source).stem if ("/" in source or source.endswith((".pt", ".pkl"))) else source


def _short_prompt(prompt: Any, width: int = PROMPT_WIDTH) -> str:
    text = str(prompt)
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _markdown_rows(df: pd.DataFrame, specs: list[MetricSpec], missing: bool) -> list[str]:
    head = ["Source", "Prompt", "Method", "n"] + [m.label for m in specs] + (["Missing"] if missing else [])
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3 - missing) + ["---"] * missing) + "|"]
    for _, row in df.iterrows():
        cells = [_short_source(row["source"]), _short_prompt(row["prompt"]).replace("|", "\\|"), row["method"],
                 str(row["n"])]
        for m in specs:
            c = _cell(row, m, " ± ")
            cells.append(f"**{c}**" if row[f"{m.name}_best"] else c)
        if missing:
            cells.append(_missing_cell(row))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_markdown(df: pd.DataFrame) -> str:
    """The main table (paper columns first), then the per-attribute table when there is one, then notes."""
    specs: list[MetricSpec] = df.attrs.get("metrics", [])
    main = [m for m in specs if not m.detail]
    details = [m for m in specs if m.detail]
    lines = _markdown_rows(df, main, _has_missing(df))
    if details:
        lines += ["", "Per-attribute metrics:", ""] + _markdown_rows(df, details, False)
    notes = _notes(df)
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _latex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(repl.get(ch, ch) for ch in str(text))


def format_latex(df: pd.DataFrame) -> str:
    """The main tabular (paper columns first), then the per-attribute one when there is one."""
    specs: list[MetricSpec] = df.attrs.get("metrics", [])
    main = [m for m in specs if not m.detail]
    details = [m for m in specs if m.detail]
    lines = _latex_tabular(df, main)
    if details:
        lines += ["", "% per-attribute metrics"] + _latex_tabular(df, details)
    lines += [f"% {n}" for n in _missing_notes(df)]   # missing metrics with their reasons
    return "\n".join(lines) + "\n"


def _latex_tabular(df: pd.DataFrame, specs: list[MetricSpec]) -> list[str]:
    arrows = {"min": r"$\downarrow$", "max": r"$\uparrow$", None: ""}
    head = ["Source", "Prompt", "Method", "$n$"] + [
        _latex_escape(m.label.replace(" ↓", "").replace(" ↑", "")) + (" " + arrows[m.better] if m.better else "")
        for m in specs]
    lines = [r"\begin{tabular}{lll" + "r" * (len(head) - 3) + "}", r"\toprule", " & ".join(head) + r" \\",
             r"\midrule"]
    previous = None
    for _, row in df.iterrows():
        group = (row["source"], row["prompt"])
        if previous is not None and group != previous:
            lines.append(r"\midrule")
        cells = [_latex_escape(_short_source(row["source"])), _latex_escape(row["prompt"]),
                 _latex_escape(row["method"]), str(row["n"])]
        for m in specs:
            c = _cell(row, m, r" $\pm$ ").replace("–", "--")
            cells.append(rf"\textbf{{{c}}}" if row[f"{m.name}_best"] else c)
        lines.append(" & ".join(cells) + r" \\")
        previous = group
    lines += [r"\bottomrule", r"\end{tabular}"]
    return lines


def format_csv(df: pd.DataFrame) -> str:
    out = df.copy()
    if "missing" in out:   # one readable string per row: "metric (k/n): reason; ..."
        out["missing"] = [_missing_text(r, reasons=True) for _, r in out.iterrows()]
    return out.to_csv(index=False)


def _has_missing(df: pd.DataFrame) -> bool:
    return "missing" in df and any(bool(m) for m in df["missing"])


def _missing_text(row: pd.Series, reasons: bool = False) -> str:
    items = row.get("missing") or []
    return "; ".join(f"{u} ({k}/{row['n']})" + (f": {why}" if reasons else "") for u, k, why in items)


def _missing_cell(row: pd.Series) -> str:
    return _missing_text(row).replace("|", "\\|") or "–"


def _missing_notes(df: pd.DataFrame) -> list[str]:
    """One line per (metric, reason): where it is missing and why (python -m evaluation run --only-missing)."""
    if not _has_missing(df):
        return []
    where: dict[tuple[str, str], list[str]] = {}
    for _, row in df.iterrows():
        for unit, k, why in row["missing"]:
            where.setdefault((unit, why), []).append(f"{row['prompt']} / {row['method']} ({k}/{row['n']})")
    notes = ["Missing metrics (the reason recorded on the runs; fix it, then `python -m evaluation run "
             "--experiment NAME --only-missing` fills them in):"]
    notes += [f"- {unit}: {why} [{'; '.join(rows)}]" for (unit, why), rows in sorted(where.items())]
    return notes


def _notes(df: pd.DataFrame) -> list[str]:
    notes = _missing_notes(df)
    if "latents_consistent" in df and not df["latents_consistent"].all():
        bad = df.loc[~df["latents_consistent"], "method"].tolist()
        notes.append(f"Warning: runs of {bad} were evaluated with different latents files.")
    return notes


FORMATTERS = {"md": format_markdown, "latex": format_latex, "csv": format_csv}


def render(df: pd.DataFrame, fmt: str) -> str:
    return FORMATTERS[fmt](df)


# ---- comparison figure -------------------------------------------------------------------------------
def _font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def comparison_figure(df: pd.DataFrame, strips: dict[str, Path | None], out: str | Path,
                      label_width: int = 260, tile: int = 128) -> Path:
    """PNG: per (source, prompt) a title row, then one row per variant (its first run's strip)."""
    font = _font(14)
    blocks = []
    cols = 1
    for (source, prompt), g in df.groupby(GROUP_COLS, sort=False):
        rows = []
        for _, row in g.iterrows():
            p = strips.get(row["first_run_id"])
            img = Image.open(p).convert("RGB") if p else None
            if img is not None:
                cols = max(cols, img.width // tile)
            rows.append((row["method"], img))
        blocks.append((f"{_short_source(source)}: {prompt}", rows))
    header_h, title_h = 20, 24
    width = label_width + cols * tile
    height = header_h + sum(title_h + len(rows) * tile for _, rows in blocks)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for c in range(cols):
        draw.text((label_width + c * tile + 4, 3), f"z{c}", fill="black", font=font)
    y = header_h
    for title, rows in blocks:
        draw.text((4, y + 4), title[: 2 * width // 14], fill="black", font=font)
        y += title_h
        for label, img in rows:
            lines = textwrap.wrap(label, width=max(8, label_width // 8)) or [""]
            draw.multiline_text((4, y + tile // 2 - 9 * len(lines)), "\n".join(lines), fill="black", font=font)
            if img is not None:
                canvas.paste(img.crop((0, 0, min(img.width, cols * tile), tile)), (label_width, y))
            else:
                draw.text((label_width + 4, y + tile // 2 - 8), "(no eval/strip.png)", fill="gray", font=font)
            y += tile
    out = Path(out)
    canvas.save(out)
    return out


def _download_strips(client, run_ids: Iterable[str], dst: Path) -> dict[str, Path | None]:
    import mlflow.artifacts  # late: mlflow (~1.6 s) loads on first use

    strips: dict[str, Path | None] = {}
    for rid in run_ids:
        try:
            names = [a.path for a in retry(lambda: client.list_artifacts(rid, "eval"))]
            if STRIP_ARTIFACT not in names:
                strips[rid] = None
                continue
            local = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path=STRIP_ARTIFACT,
                                                        dst_path=str(dst / rid), tracking_uri=client.tracking_uri)
            strips[rid] = Path(local)
        except Exception:  # noqa: BLE001 - a missing strip only leaves a blank row
            strips[rid] = None
    return strips


def log_table(experiment: str, tracking_uri: "str | TrackingTarget | None" = None, *, extra_params: Iterable[str] = (),
              extra_metrics: Iterable[MetricSpec] = ()) -> dict[str, pd.DataFrame]:
    """Log table.{md,tex,csv} + comparison.png under `table/` of each parent run (its own children).

    Returns {parent_run_id: table}. Nothing is logged when the experiment has no parent run.
    """
    client = mlflow_client(tracking_uri)
    parents, _ = experiment_runs(client, experiment)
    runs = runs_dataframe(experiment, tracking_uri, extra_params)
    logged: dict[str, pd.DataFrame] = {}
    for parent in parents:
        pid = parent.info.run_id
        sub = runs[runs["parent_run_id"] == pid] if not runs.empty else runs
        if sub.empty:
            continue
        df = aggregate(sub, extra_metrics)
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            for fmt, name in (("md", "table.md"), ("latex", "table.tex"), ("csv", "table.csv")):
                (tmp_path / name).write_text(render(df, fmt))
            strips = _download_strips(client, df["first_run_id"], tmp_path / "strips")
            comparison_figure(df, strips, tmp_path / "comparison.png")
            for name in ("table.md", "table.tex", "table.csv", "comparison.png"):
                retry(lambda: client.log_artifact(pid, str(tmp_path / name), "table"))
        logged[pid] = df
    return logged
