"""Sample grids: the frozen source generator (top row) against the adapted one (bottom row)."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float [B, 3, H, W] -> uint8 [B, H, W, 3] (clamped; the generator does not clamp)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def save_rows(rows: list[torch.Tensor], path: Path, pad: int = 2) -> Path:
    """Write rows of equally sized image batches as one PNG grid with `pad` white pixels between cells."""
    cells = [to_uint8(r) for r in rows]
    n_rows, n_cols = len(cells), max(c.shape[0] for c in cells)
    h, w = cells[0].shape[1:3]
    canvas = torch.full((n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 255, dtype=torch.uint8)
    for i, row in enumerate(cells):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y : y + h, x : x + w] = img
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas.numpy()).save(path)
    return path
