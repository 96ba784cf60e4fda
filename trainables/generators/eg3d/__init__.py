"""EG3D (tri-plane 3D-aware GAN) generator in pure PyTorch, its checkpoints, cameras and trainable groups.

from trainables.generators.eg3d import load_eg3d, sample_adaptation_cameras, eg3d_trainable_names
g = load_eg3d("ffhq512-128.pkl")                       # NVlabs pickle (restricted unpickler), state dict or save_eg3d file
c = sample_adaptation_cameras(1, rng, g.avg_camera_pivot, g.avg_camera_radius)   # [1, 25]
ws = g.mapping(z, c, truncation_psi=0.7)               # [N, 14, 512]
out = g.synthesis(ws, c, noise_mode="const", noise_generator=gen)   # {'image', 'image_raw', 'image_depth', ...}

Names resolve on first use (PEP 562), so a torch-free submodule (settings, declarations) imports without torch.
"""
from __future__ import annotations

from trainables.objects import lazy_exports

_EXPORTS = {
    "trainables.generators.eg3d.adapt": ("StepInputs", "render_step", "sample_step_inputs"),
    "trainables.generators.eg3d.cameras": ("front_camera", "generator_cameras", "intrinsics_matrix",
        "lookat_cam2world", "orbit_cameras", "sample_adaptation_cameras", "camera_label"),
    "trainables.generators.eg3d.config": ("FFHQ_RENDERING", "EG3DConfig", "ffhq512_128_config"),
    "trainables.generators.eg3d.formats": ("convert_eg3d_state_dict", "generator_from_eg3d_state_dict",
        "infer_eg3d_config", "load_eg3d", "load_eg3d_pickle", "read_eg3d_pickle", "save_eg3d"),
    "trainables.generators.eg3d.groups": ("eg3d_trainable_names", "set_eg3d_trainable"),
    "trainables.generators.eg3d.networks": ("EG3DGenerator",),
    "trainables.generators.eg3d.pocket": ("build_pocket_eg3d", "pocket_eg3d_config"),
}
__all__ = [name for names in _EXPORTS.values() for name in names]

__getattr__ = lazy_exports(__name__, _EXPORTS)
