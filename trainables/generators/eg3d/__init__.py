"""EG3D (tri-plane 3D-aware GAN) generator in pure PyTorch, its checkpoints, cameras and trainable groups.

from trainables.generators.eg3d import load_eg3d, sample_adaptation_cameras, eg3d_trainable_names
g = load_eg3d("ffhq512-128.pkl")                       # NVlabs pickle (restricted unpickler), state dict or save_eg3d file
c = sample_adaptation_cameras(1, rng, g.avg_camera_pivot, g.avg_camera_radius)   # [1, 25]
ws = g.mapping(z, c, truncation_psi=0.7)               # [N, 14, 512]
out = g.synthesis(ws, c, noise_mode="const", noise_generator=gen)   # {'image', 'image_raw', 'image_depth', ...}

Names resolve on first use (PEP 562), so a torch-free submodule (settings, declarations) imports without torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    'StepInputs': 'trainables.generators.eg3d.adapt',
    'render_step': 'trainables.generators.eg3d.adapt',
    'sample_step_inputs': 'trainables.generators.eg3d.adapt',
    'front_camera': 'trainables.generators.eg3d.cameras',
    'generator_cameras': 'trainables.generators.eg3d.cameras',
    'intrinsics_matrix': 'trainables.generators.eg3d.cameras',
    'lookat_cam2world': 'trainables.generators.eg3d.cameras',
    'orbit_cameras': 'trainables.generators.eg3d.cameras',
    'sample_adaptation_cameras': 'trainables.generators.eg3d.cameras',
    'camera_label': 'trainables.generators.eg3d.cameras',
    'FFHQ_RENDERING': 'trainables.generators.eg3d.config',
    'EG3DConfig': 'trainables.generators.eg3d.config',
    'ffhq512_128_config': 'trainables.generators.eg3d.config',
    'convert_eg3d_state_dict': 'trainables.generators.eg3d.formats',
    'generator_from_eg3d_state_dict': 'trainables.generators.eg3d.formats',
    'infer_eg3d_config': 'trainables.generators.eg3d.formats',
    'load_eg3d': 'trainables.generators.eg3d.formats',
    'load_eg3d_pickle': 'trainables.generators.eg3d.formats',
    'read_eg3d_pickle': 'trainables.generators.eg3d.formats',
    'save_eg3d': 'trainables.generators.eg3d.formats',
    'eg3d_trainable_names': 'trainables.generators.eg3d.groups',
    'set_eg3d_trainable': 'trainables.generators.eg3d.groups',
    'EG3DGenerator': 'trainables.generators.eg3d.networks',
    'build_pocket_eg3d': 'trainables.generators.eg3d.pocket',
    'pocket_eg3d_config': 'trainables.generators.eg3d.pocket',
}
__all__ = ['StepInputs', 'render_step', 'sample_step_inputs', 'front_camera', 'generator_cameras', 'intrinsics_matrix', 'lookat_cam2world', 'orbit_cameras', 'sample_adaptation_cameras', 'camera_label', 'FFHQ_RENDERING', 'EG3DConfig', 'ffhq512_128_config', 'convert_eg3d_state_dict', 'generator_from_eg3d_state_dict', 'infer_eg3d_config', 'load_eg3d', 'load_eg3d_pickle', 'read_eg3d_pickle', 'save_eg3d', 'eg3d_trainable_names', 'set_eg3d_trainable', 'EG3DGenerator', 'build_pocket_eg3d', 'pocket_eg3d_config']


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
