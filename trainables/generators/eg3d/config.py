"""EG3D generator configuration: every size the checkpoint fixes, plus the renderer's settings.

Most numbers are recovered from tensor shapes (`formats.infer_eg3d_config`); the renderer settings come from
the pickle's `rendering_kwargs` (or the FFHQ defaults below when only a state dict is given).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SR_CLASSES = ("SuperresolutionHybrid2X", "SuperresolutionHybrid4X", "SuperresolutionHybrid8XDC")

# FFHQ rendering settings of the official EG3D models (train.py --cfg=ffhq); depth 48 + 48 samples per ray.
FFHQ_RENDERING: dict[str, Any] = {
    "depth_resolution": 48,
    "depth_resolution_importance": 48,
    "ray_start": 2.25,
    "ray_end": 3.3,
    "box_warp": 1.0,
    "disparity_space_sampling": False,
    "clamp_mode": "softplus",
    "white_back": False,
    "density_noise": 0.0,
    "c_scale": 1.0,
    "c_gen_conditioning_zero": False,
    "avg_camera_radius": 2.7,
    "avg_camera_pivot": [0.0, 0.0, 0.2],
    "superresolution_noise_mode": "none",
    "sr_antialias": True,
}
_RENDER_KEYS = tuple(FFHQ_RENDERING)


@dataclass
class EG3DConfig:
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 25  # 16 cam2world + 9 normalised intrinsics
    img_resolution: int = 512  # final (super-resolved) output size
    mapping_layers: int = 2
    mapping_lr: float = 0.01
    embed_features: int | None = None  # camera embedding width (None: w_dim); 0 with c_dim = 0
    backbone_resolution: int = 256  # tri-plane resolution (hard-coded 256 in EG3D)
    backbone_channels: dict[int, int] = field(default_factory=dict)  # {4: 512, ..., 256: 128}
    backbone_conv_clamp: float | None = None
    plane_channels: int = 32  # features per plane (3 planes -> 96 backbone output channels)
    decoder_hidden: int = 64
    decoder_output_dim: int = 32  # rendered feature channels (first 3 = raw RGB)
    decoder_lr_mul: float = 1.0
    sr_class: str = "SuperresolutionHybrid8XDC"
    sr_channels: tuple[int, int] = (256, 128)  # block0 / block1 output channels
    sr_block_resolutions: tuple[int, int] = (256, 512)
    sr_input_resolution: int = 128
    sr_conv_clamp: float | None = 256.0
    neural_rendering_resolution: int = 128
    rendering: dict[str, Any] = field(default_factory=dict)  # missing keys filled from FFHQ_RENDERING

    def __post_init__(self) -> None:
        if self.sr_class not in SR_CLASSES:
            raise ValueError(f"EG3DConfig.sr_class must be one of {SR_CLASSES}, got {self.sr_class!r}")
        if self.embed_features is None:
            self.embed_features = self.w_dim if self.c_dim > 0 else 0
        res = self.backbone_resolution
        if res < 4 or res & (res - 1):
            raise ValueError(f"backbone_resolution must be a power of two >= 4, got {res}")
        self.backbone_channels = {int(k): int(v) for k, v in dict(self.backbone_channels).items()}
        want = [2**i for i in range(2, res.bit_length())]
        if sorted(self.backbone_channels) != want:
            raise ValueError(f"backbone_channels must have resolutions {want}, got {sorted(self.backbone_channels)}")
        self.sr_channels = tuple(int(c) for c in self.sr_channels)
        self.sr_block_resolutions = tuple(int(r) for r in self.sr_block_resolutions)
        rendering = dict(FFHQ_RENDERING)
        unknown = sorted(set(self.rendering) - set(_RENDER_KEYS))
        if unknown:
            raise ValueError(f"unknown rendering keys {unknown}; known: {list(_RENDER_KEYS)}")
        rendering.update(self.rendering)
        if rendering["ray_start"] == "auto" or rendering["ray_end"] == "auto":
            raise ValueError("ray_start/ray_end 'auto' (box-intersection limits, ShapeNet configs) is not supported")
        if rendering["clamp_mode"] != "softplus":
            raise ValueError("only clamp_mode 'softplus' exists in EG3D's MipRayMarcher2")
        rendering["avg_camera_pivot"] = [float(v) for v in rendering["avg_camera_pivot"]]
        self.rendering = rendering

    @property
    def num_ws(self) -> int:
        return 2 * (self.backbone_resolution.bit_length() - 1) - 2  # 14 for a 256 backbone

    @property
    def sr_block0_upsamples(self) -> bool:
        return self.sr_class == "SuperresolutionHybrid8XDC"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["backbone_channels"] = {str(k): v for k, v in self.backbone_channels.items()}
        d["sr_channels"] = list(self.sr_channels)
        d["sr_block_resolutions"] = list(self.sr_block_resolutions)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EG3DConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown EG3DConfig fields {unknown}")
        return cls(**d)


def ffhq512_128_config() -> EG3DConfig:
    """The official `ffhq512-128` G_ema configuration (EG3D FFHQ, 512 px, neural rendering 128, 8XDC SR)."""
    return EG3DConfig(
        z_dim=512, w_dim=512, c_dim=25, img_resolution=512, mapping_layers=2,
        backbone_channels={4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128},
        sr_class="SuperresolutionHybrid8XDC", sr_channels=(256, 128), sr_block_resolutions=(256, 512),
        sr_input_resolution=128, neural_rendering_resolution=128, rendering={},
    )
