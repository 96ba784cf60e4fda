"""Fixed paths the evaluation settings default to (a torch-free leaf: settings and the math both read them)."""
from __future__ import annotations

CLEANFID_INCEPTION = "/tmp/inception-2015-12-05.pt"   # where clean-fid loads (and would download) Inception
DEFAULT_CACHE_DIR = "~/.cache/sgf-evaluation"          # latents, reference statistics
