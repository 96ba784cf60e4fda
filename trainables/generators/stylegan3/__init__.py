"""StyleGAN3 (Alias-Free GAN, T and R configs) generator in pure PyTorch, its checkpoints and trainable groups.

from trainables.generators.stylegan3 import load_stylegan3, StyleGAN3Config
g = load_stylegan3("stylegan3-t-ffhq-1024x1024.pkl")   # NVlabs pickle (restricted unpickler), state dict or save file
ws = g.mapping(z, truncation_psi=0.7)                  # [N, 16, 512] W+
img = g.synthesis(ws)                                  # [N, 3, 1024, 1024]

Names resolve on first use (PEP 562), so a torch-free submodule (info) imports without torch.
"""
from __future__ import annotations

from trainables.objects import lazy_exports

_EXPORTS = {
    "trainables.generators.stylegan3.config": ("StyleGAN3Config", "ffhq_t_1024", "afhqv2_r_512", "preset"),
    "trainables.generators.stylegan3.formats": ("load_stylegan3", "load_stylegan3_pickle", "save_stylegan3",
        "generator_from_stylegan3_state_dict", "infer_stylegan3_config", "is_stylegan3_file", "init_kwargs"),
    "trainables.generators.stylegan3.networks": ("StyleGAN3",),
    "trainables.generators.stylegan3.pocket": ("build_pocket_stylegan3", "pocket_stylegan3_config"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]

__getattr__ = lazy_exports(__name__, _EXPORTS)
