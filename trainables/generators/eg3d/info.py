"""What generator kind 'eg3d' declares about itself without loading torch (trainables/registry.py)."""
from __future__ import annotations

# The paper's EG3D run (paper.md, EG3D; sd.py `if self.args.EG3D: grad = grad/100.0`, ZSSGAN.py
# `lpips_loss * 2000 * w ... /100`): every guidance gradient / 100 (grad_scale also multiplies the LPIPS term,
# so LPIPS is 2000 * 0.01 = 20 x w, applied once), rescaled noise, image clamp off, constant backbone noise
# (frozen and trained renders must differ only by the weights).
EG3D_DEFAULTS = {
    "guidance": {"grad_scale": 0.01, "rescale_noise": True, "image_clamp_quantile": None},
    "train": {"noise_mode": "const"},
}


class EG3DInfo:
    name = "eg3d"
    Settings = None
    config_defaults = EG3D_DEFAULTS   # fields an EG3D config leaves out take these (AdaptConfig._family_defaults)
    layer_selection = False           # no W+ index map to rank: layers.k must be 0
