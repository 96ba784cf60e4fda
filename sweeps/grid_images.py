"""A trial's sample grids as MLflow image charts: the chart view shows the trials' grids side by side, with a
step slider.

MLflow's `log_image(key=..., step=...)` is files in the run's `images/` folder with the key, step and timestamp in
their names (`<key>+step+<step>+timestamp+<ms>+<uuid>.png`, a `+compressed.webp` preview beside it) and the run
tag `mlflow.loggedImages`. `GridImages` writes those files itself and sends them through the trial's spool
(`RunTracker.log_artifact`), so they share the spool's delivery, replay and offline behaviour. Each grid's top row is
the frozen source generator, so the source grid is in every frame. A retried trial (`continues_run`) asks MLflow
once which (key, step) images the run holds and does not log them twice.
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

from PIL import Image

from trainables.adaptation.callbacks import Callback

log = logging.getLogger(__name__)

GRID_KEY = "samples/grid"          # the image chart's key (the run's `samples/*.png` grids, frozen row on top)
IMAGES_DIR = "images"              # MLflow's folder for keyed images (the UI reads this name)
LOGGED_IMAGES_TAG = "mlflow.loggedImages"
PREVIEW_MAX = 512                  # the preview's longest side (nearest-neighbour: pixel grids stay sharp)
_NAME = re.compile(r"^(?P<key>.+)\+step\+(?P<step>\d+)\+timestamp\+\d+\+[0-9a-f-]+\.png$")


def image_file_stem(key: str, step: int, timestamp_ms: int, unique: str) -> str:
    """MLflow 3.17's name for a keyed image (mlflow.tracking.client.MlflowClient.log_image): '/' in the key
    becomes '~'."""
    if not re.fullmatch(r"[a-zA-Z0-9_\-./ ]+", key):
        raise ValueError(f"image key {key!r}: MLflow allows only letters, digits, _ - . / and spaces")
    return f"{key.replace('/', '~')}+step+{int(step)}+timestamp+{int(timestamp_ms)}+{unique}"


def parse_image_name(name: str) -> tuple[str, int] | None:
    """(key, step) of a keyed image's full-size file name; None for anything else (previews included)."""
    m = _NAME.match(Path(name).name)
    return (m["key"].replace("~", "/"), int(m["step"])) if m else None


def write_image_files(grid_path: str | Path, out_dir: str | Path, key: str, step: int,
                      timestamp_ms: int | None = None) -> tuple[Path, Path]:
    """The full-size PNG and its WebP preview, named as MLflow names a keyed image, under `out_dir`."""
    stem = image_file_stem(key, step, timestamp_ms or int(time.time() * 1000), str(uuid.uuid4()))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with Image.open(grid_path) as im:
        image = im.convert("RGB")
    full = out_dir / f"{stem}.png"
    image.save(full)
    scale = max(1, PREVIEW_MAX // max(image.size))
    preview = image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image
    small = out_dir / f"{stem}+compressed.webp"
    preview.save(small, lossless=True)
    return full, small


class GridImages(Callback):
    """Loop callback: every sample grid (`step_*.png`, `final.png`) logged as image `GRID_KEY` at its step."""

    def __init__(self, tracker: Any, work_dir: str | Path, key: str = GRID_KEY, continues_run: bool = False):
        self.tracker = tracker
        self.work_dir = Path(work_dir)
        self.key = key
        self.continues_run = continues_run
        self._held: set[tuple[str, int]] | None = None     # (key, step) already in MLflow (a continued run)
        self._tagged = False

    def on_start(self, step: int, config: Any) -> None:
        if step > 0:
            self.continues_run = True

    def _already_logged(self) -> set[tuple[str, int]]:
        if self._held is None:
            self._held = set()
            if self.continues_run and self.tracker.run_id:
                try:
                    self.tracker.flush(60.0)
                    listing = self.tracker.client().list_artifacts(self.tracker.run_id, IMAGES_DIR)
                    self._held = {p for p in (parse_image_name(a.path) for a in listing) if p is not None}
                except Exception as exc:  # the images may then appear twice at a replayed step
                    log.warning("MLflow cannot list the images run %s holds (%s: %s); replayed grids may appear "
                                "twice in the image chart", self.tracker.run_id, type(exc).__name__, exc)
        return self._held

    def on_samples(self, step: int, grid_path: Path) -> None:
        grid_path = Path(grid_path)
        grid = grid_path.name == "final.png" or (grid_path.name.startswith("step_") and grid_path.suffix == ".png")
        if not grid or (self.key, int(step)) in self._already_logged():   # not a grid: e.g. EG3D's GIF
            return
        try:
            files = write_image_files(grid_path, self.work_dir, self.key, step)
        except (OSError, ValueError) as exc:   # an unreadable grid costs its chart frame, never the trial
            log.warning("sample grid %s is not a readable image (%s: %s): no image-chart frame for step %d (the "
                        "file itself is still logged under samples/)", grid_path, type(exc).__name__, exc, step)
            return
        for path in files:
            self.tracker.log_artifact(path, IMAGES_DIR)
        self._held.add((self.key, int(step)))
        if not self._tagged:
            self.tracker.set_tags({LOGGED_IMAGES_TAG: "True"})
            self._tagged = True
