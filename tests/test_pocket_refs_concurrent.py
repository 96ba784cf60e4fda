"""Ground-truth reference folders (pocket/refs.py) written by several processes at once: one writes, the others
wait and read a complete folder; no reader ever sees a PNG being written (a partial file once failed a trial's
ground-truth FID while another process rewrote the folder in place)."""
from __future__ import annotations

import multiprocessing as mp

from PIL import Image

from pocket.refs import reference_dir


def _read_all(root, prompt, n, out):
    folder = reference_dir(prompt, n=n, seed=3, root=root)
    pngs = sorted(folder.glob("*.png"))
    for p in pngs:
        with Image.open(p) as im:
            im.load()                        # a truncated PNG raises here
    out.put((str(folder), len(pngs)))


def test_concurrent_writers_leave_one_complete_folder(tmp_path):
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ps = [ctx.Process(target=_read_all, args=(tmp_path, "a red square", 64, q)) for _ in range(4)]
    [p.start() for p in ps]
    [p.join(300) for p in ps]
    assert all(p.exitcode == 0 for p in ps)
    results = [q.get(timeout=5) for _ in ps]
    assert len({folder for folder, _ in results}) == 1 and all(count == 64 for _, count in results)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
