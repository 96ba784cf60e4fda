"""pocket.figures on a synthetic sweep in a real local MLflow store (sqlite in tmp_path): trial runs whose final
grids are written by the loop's own writer (trainables.adaptation.grids.save_rows) with solid-colour cells of known value,
so every expected pixel is constructed here, not read back from the function under test.

Prompt "a red circle": three configurations x seeds 0 and 1 (a run logged before `guidance.variant` existed,
so it has no such param; a csd run with a reconstruction weight; NADA). Prompt "a square": NADA's grid only in
the trial's output folder (no artifact), the csd run without any grid, the sds run on other grid latents.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pocket.__main__ import main  # noqa: E402
from pocket.figures import FigureConfig, GridError, Trial, config_labels, split_grid, write_figures  # noqa: E402
from trainables.adaptation.grids import save_rows  # noqa: E402

N, H = 3, 8                      # cells per grid row, cell side (px)
CELL = 16                        # min_cell: cells drawn at 2x
EXP = "fig-sweep"
RED, SQUARE = "a red circle", "a square"
FROZEN = [(200, 30, 40), (30, 200, 40), (40, 30, 200)]          # frozen cell colours, left to right
CONFIGS = {   # label -> params; the "old" run has no guidance.variant param at all
    "fusion sds": {"method": "fusion", "reg.directional.weight": "0.0", "reg.reconstruction.weight": "0.0"},
    "fusion csd + recon 0.1": {"method": "fusion", "guidance.variant": "csd", "reg.directional.weight": "0.0",
                               "reg.reconstruction.weight": "0.1"},
    "nada": {"method": "nada", "guidance.variant": "sds", "reg.directional.weight": "0.0",
             "reg.reconstruction.weight": "0.0"},
}
ORDER = ["nada", "fusion sds", "fusion csd + recon 0.1"]           # nada first, then sds before csd
COMMON = {"train.sample_seed": "0", "train.sample_count": str(N), "train.sample_truncation": "1.0",
          "generator.checkpoint": "/m/pocket-circles-32.pt", "generator.kind": "stylegan2"}


def adapted_colour(ci: int, pi: int, seed: int, j: int) -> tuple[int, int, int]:
    """A colour unique to (configuration, prompt, seed, column), distinct from every frozen colour."""
    return (10 + 60 * ci + j, 100 + 40 * pi + 20 * seed, 5 + 7 * j)


def metrics(ci: int, pi: int, seed: int) -> dict[str, float]:
    return {"eval/pocket/prompt_accuracy": 0.125 * (ci + 1) + 0.25 * seed + 0.0625 * pi,
            "eval/pocket/preservation": 0.5 + 0.125 * ci + 0.0625 * seed}


def _row(colours) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] whose uint8 rendering (save_rows: round((x + 1) 127.5)) is exactly `colours`."""
    c = torch.tensor(colours, dtype=torch.float64) / 127.5 - 1
    return c[:, :, None, None].expand(len(colours), 3, H, H).float()


def write_grid(path, ci, pi, seed):
    return save_rows([_row(FROZEN), _row([adapted_colour(ci, pi, seed, j) for j in range(N)])], path)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment(EXP, artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(exp, run_name="sweep", tags={"sweep.role": "parent"}).info.run_id
    for pi, prompt in enumerate([RED, SQUARE]):
        for ci, label in enumerate(CONFIGS):
            for seed in ([0, 1] if prompt == RED else [0]):
                trial_dir = tmp / f"trial-{pi}-{ci}-{seed}"
                params = {**COMMON, **CONFIGS[label], "prompt": prompt, "seed": str(seed),
                          "name": trial_dir.name, "optim.lr": "0.005" if label == "nada" else "0.0005"}
                if prompt == SQUARE and label == "fusion sds":
                    params["train.sample_seed"] = "7"          # other grid latents: this row must be skipped
                rid = client.create_run(exp, tags={"mlflow.parentRunId": parent, "sweep.role": "trial"}).info.run_id
                grid = write_grid(trial_dir / "samples" / "final.png", ci, pi, seed)
                client.log_batch(rid, metrics=[Metric(k, v, 0, 0) for k, v in metrics(ci, pi, seed).items()],
                                 params=[Param(k, v) for k, v in params.items()],
                                 tags=[RunTag("artifact.generator_path", str(trial_dir / "generator.pt"))])
                if prompt == SQUARE and label == "fusion csd + recon 0.1":
                    grid.unlink()                              # no grid anywhere
                elif not (prompt == SQUARE and label == "nada"):   # NADA / square: only in the output folder
                    client.log_artifact(rid, str(grid), "samples")
                client.set_terminated(rid, "FINISHED")
    return uri, tmp


def _bbox(img: np.ndarray, colour) -> tuple[int, int, int, int, int]:
    """(top, left, bottom, right, pixel count) of the pixels exactly equal to `colour` (count 0: absent)."""
    ys, xs = np.nonzero(np.all(img == np.array(colour, np.uint8), axis=-1))
    if not len(ys):
        return (0, 0, 0, 0, 0)
    return (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1, len(ys))


def _expected_row(colours) -> np.ndarray:
    """The row as it must appear: CELL x CELL blocks of each colour, 2 white pixels between them."""
    white = np.full((CELL, 2, 3), 255, np.uint8)
    blocks = [np.broadcast_to(np.array(c, np.uint8), (CELL, CELL, 3)) for c in colours]
    return np.concatenate([p for b in blocks for p in (b, white)][:-1], axis=1)


def _figure(out, prompt_index):
    return np.asarray(Image.open(next(out.glob(f"{prompt_index:02d}-*.png"))).convert("RGB"))


@pytest.fixture(scope="module")
def drawn(sweep, tmp_path_factory):
    uri, _ = sweep
    out = tmp_path_factory.mktemp("figures")
    printed: list[str] = []
    cfg = FigureConfig(experiment=EXP, tracking_uri=uri, out=out, min_cell=CELL, frozen_metrics=False,
                       index_cells=2, index_min_cell=H)
    return write_figures(cfg, emit=printed.append), out, printed


def test_first_row_is_the_frozen_row(drawn):
    _, out, _ = drawn
    img = _figure(out, 2)        # "a red circle" is the catalogue's 5th prompt, "a square" its 2nd
    boxes = [_bbox(img, c) for c in FROZEN]
    assert all(b[4] == CELL * CELL for b in boxes), boxes          # each frozen cell once, at 2x
    top, left = boxes[0][:2]
    crop = img[top: top + CELL, left: left + N * CELL + (N - 1) * 2]
    assert np.array_equal(crop, _expected_row(FROZEN))
    rows_below = [_bbox(img, adapted_colour(ci, 0, 0, 0))[0] for ci in range(len(CONFIGS))]
    assert all(top < y for y in rows_below)                        # the frozen row is the first row


def test_rows_follow_the_configurations_in_order(drawn):
    result, out, _ = drawn
    img = _figure(out, 2)
    ys = []
    for label in ORDER:
        ci = list(CONFIGS).index(label)
        box = _bbox(img, adapted_colour(ci, 0, 0, 0))
        assert box[4] == CELL * CELL, label
        crop = img[box[0]: box[0] + CELL, box[1]: box[1] + N * CELL + (N - 1) * 2]
        assert np.array_equal(crop, _expected_row([adapted_colour(ci, 0, 0, j) for j in range(N)])), label
        assert _bbox(img, adapted_colour(ci, 0, 1, 0))[4] == 0, "seed 1 shown although --seed 0"
        assert (img[box[0]: box[2], : box[1] - 4] < 128).any(), f"{label}: no label text left of the row"
        ys.append(box[0])
    assert ys == sorted(ys)
    labels = result.labels[RED]
    assert [lab[0] for lab in labels] == ["frozen G (unadapted)"] + ORDER
    for lab, label in zip(labels[1:], ORDER):   # the shown seed's metrics, and the mean over the 2 seeds
        m0, m1 = metrics(list(CONFIGS).index(label), 0, 0), metrics(list(CONFIGS).index(label), 0, 1)
        acc, pres = "eval/pocket/prompt_accuracy", "eval/pocket/preservation"
        assert lab[1] == f"seed 0: acc {m0[acc]:.2f}  pres {m0[pres]:.2f}"
        assert lab[2] == f"mean of 2 seeds: acc {(m0[acc] + m1[acc]) / 2:.2f}  pres {(m0[pres] + m1[pres]) / 2:.2f}"


def test_rows_without_grid_or_on_other_latents_are_skipped_with_a_note(drawn):
    result, out, printed = drawn
    img = _figure(out, 1)        # "a square"
    nada = list(CONFIGS).index("nada")
    assert [lab[0] for lab in result.labels[SQUARE]] == ["frozen G (unadapted)", "nada"]
    box = _bbox(img, adapted_colour(nada, 1, 0, 0))                 # from the trial's output folder
    assert box[4] == CELL * CELL and _bbox(img, FROZEN[0])[0] < box[0]
    for label in ("fusion sds", "fusion csd + recon 0.1"):
        assert _bbox(img, adapted_colour(list(CONFIGS).index(label), 1, 0, 0))[4] == 0, label
    missing = [n for n in result.notes if "'a square' / fusion csd + recon 0.1" in n]
    assert len(missing) == 1 and "no samples/final.png" in missing[0] and "row skipped" in missing[0]
    latents = [n for n in result.notes if "'a square' / fusion sds" in n]
    assert len(latents) == 1 and "train.sample_seed=7 vs 0" in latents[0] and "row skipped" in latents[0]
    assert printed == [f"note: {n}" for n in result.notes]


def test_index_strips(drawn):
    result, out, _ = drawn
    assert result.paths[-1] == out / "index.png"
    img = np.asarray(Image.open(out / "index.png").convert("RGB"))
    for j, colour in enumerate(FROZEN):                              # index_cells=2 of 3, native size, 2 prompts
        assert _bbox(img, colour)[4] == (2 * H * H if j < 2 else 0)
    grey = np.all(img == np.array((225, 225, 225), np.uint8), axis=-1)   # a grey block per missing row of "a square"
    assert np.lib.stride_tricks.sliding_window_view(grey, (H, 2 * H + 2)).all(axis=(-1, -2)).sum() == 2
    assert _bbox(img, FROZEN[0])[1] < _bbox(img, adapted_colour(2, 0, 0, 0))[1]   # frozen column first


def test_cli_seed_flag_and_output(sweep, tmp_path, capsys):
    uri, _ = sweep
    main(["figures", "--experiment", EXP, "--tracking-uri", uri, "--out", str(tmp_path), "--seed", "1",
          "--min-cell", str(CELL), "--no-frozen", "--no-index"])
    printed = capsys.readouterr().out
    assert str(tmp_path / "02-a-red-circle.png") in printed and "index.png" not in printed
    assert "'a square' / nada: no trial at seed 1" in printed          # "a square" has seed 0 only
    img = _figure(tmp_path, 2)
    for ci in range(len(CONFIGS)):
        assert _bbox(img, adapted_colour(ci, 0, 1, 2))[4] == CELL * CELL
        assert _bbox(img, adapted_colour(ci, 0, 0, 2))[4] == 0
    assert not (tmp_path / "01-a-square.png").exists()                # no trial of "a square" at seed 1


def test_labels_name_the_varying_axes_only():
    def trial(i, **params):
        return Trial(str(i), "a star", params.pop("seed", "0"), "FINISHED", i, params, {}, {})

    trials = [trial(0, method="nada", **{"optim.lr": "0.005"}),
              trial(1, method="fusion", **{"optim.lr": "0.0005", "guidance.cfg_scale": "7.5"}),
              trial(2, method="fusion", **{"optim.lr": "0.0005", "guidance.cfg_scale": "20"}),
              trial(3, method="fusion", seed="1", **{"optim.lr": "0.0005", "guidance.cfg_scale": "20",
                                                     "guidance.variant": "dds", "reg.lpips.weight": "0.5",
                                                     "layers.k": "4"})]
    # optim.lr differs only between methods (the zip): not an axis; cfg_scale varies within "fusion sds"
    assert config_labels(trials) == {"0": "nada", "1": "fusion sds, cfg_scale=7.5", "2": "fusion sds, cfg_scale=20",
                                     "3": "fusion dds + lpips 0.5 + layers k=4"}


def test_split_grid_layout():
    rng = np.random.default_rng(0)
    top, bottom = rng.integers(0, 256, (2, 4, 5, 5, 3)).astype(np.uint8)   # 4 cells of 5x5
    grid = np.full((2 * 7 + 2, 4 * 7 + 2, 3), 255, np.uint8)               # save_rows' canvas, pad 2
    for j in range(4):
        grid[2: 7, 2 + 7 * j: 7 + 7 * j], grid[9: 14, 2 + 7 * j: 7 + 7 * j] = top[j], bottom[j]
    for n in (4, None):                                                     # from sample_count, or square cells
        got_top, got_bottom = split_grid(grid, n)
        assert np.array_equal(got_top, top) and np.array_equal(got_bottom, bottom)
    with pytest.raises(GridError, match="not two rows of 3 cells"):
        split_grid(grid, 3)
    with pytest.raises(GridError, match="square"):
        split_grid(grid[:, :-1], None)
