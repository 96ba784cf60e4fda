"""EG3D (tri-plane 3D-aware GAN) generator in pure PyTorch, its checkpoints, cameras and trainable groups.

    from trainables.generators.eg3d import load_eg3d, sample_adaptation_cameras, eg3d_trainable_names
    g = load_eg3d("ffhq512-128.pkl")                       # NVlabs pickle (restricted unpickler), state dict or save_eg3d file
    c = sample_adaptation_cameras(1, rng, g.avg_camera_pivot, g.avg_camera_radius)   # [1, 25]
    ws = g.mapping(z, c, truncation_psi=0.7)               # [N, 14, 512]
    out = g.synthesis(ws, c, noise_mode="const", noise_generator=gen)   # {'image', 'image_raw', 'image_depth', ...}
"""

from trainables.generators.eg3d.adapt import StepInputs, render_step, sample_step_inputs
from trainables.generators.eg3d.cameras import (front_camera, generator_cameras, intrinsics_matrix, lookat_cam2world, orbit_cameras,
                      sample_adaptation_cameras, camera_label)
from trainables.generators.eg3d.config import FFHQ_RENDERING, EG3DConfig, ffhq512_128_config
from trainables.generators.eg3d.formats import (convert_eg3d_state_dict, generator_from_eg3d_state_dict, infer_eg3d_config, load_eg3d,
                      load_eg3d_pickle, read_eg3d_pickle, save_eg3d)
from trainables.generators.eg3d.groups import eg3d_trainable_names, set_eg3d_trainable
from trainables.generators.eg3d.networks import EG3DGenerator
from trainables.generators.eg3d.pocket import build_pocket_eg3d, pocket_eg3d_config

__all__ = [
    "EG3DConfig", "StepInputs", "render_step", "sample_step_inputs", "EG3DGenerator", "FFHQ_RENDERING", "build_pocket_eg3d", "camera_label", "convert_eg3d_state_dict",
    "eg3d_trainable_names", "ffhq512_128_config", "front_camera", "generator_cameras", "generator_from_eg3d_state_dict",
    "infer_eg3d_config", "intrinsics_matrix", "load_eg3d", "load_eg3d_pickle", "lookat_cam2world", "orbit_cameras",
    "pocket_eg3d_config", "read_eg3d_pickle", "sample_adaptation_cameras", "save_eg3d", "set_eg3d_trainable",
]
