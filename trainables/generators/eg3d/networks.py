"""EG3D tri-plane generator (Chan et al. 2022, "Efficient Geometry-aware 3D GANs") in plain PyTorch.

Composed from the project's StyleGAN2 blocks (`..stylegan2`): the tri-plane backbone IS a `StyleGAN2`
synthesis network (rosinality layout, 96-channel ToRGB), the super-resolution blocks are `StyledConv` / `ToRGB`
/ `Upsample2x`, and every dense layer is an `EqualLinear` (NVlabs' FullyConnectedLayer has the same storage:
weight / lr_mul, gains lr_mul / sqrt(fan_in) and lr_mul).

Internal parameter names (what `state_dict()`, `eg3d_trainable_names` and the optimiser see):

| part | names |
|---|---|
| camera-conditioned mapping | `backbone.mapping.embed.*`, `backbone.mapping.fc{i}.*`, buffer `backbone.mapping.w_avg` (NVlabs names) |
| tri-plane synthesis (256 px, 96 ch) | `backbone.synthesis.<rosinality key>`: `input.input`, `conv1.*`, `convs.{i}.*`, `to_rgb1.*`, `to_rgbs.{k}.*`, `noises.noise_{j}` |
| OSG decoder | `decoder.net.0.*`, `decoder.net.2.*` (Softplus between) |
| super-resolution | `superresolution.block{0,1}.{conv0,conv1}.*` (StyledConv), `.torgb.*` (ToRGB), buffers `.noise_const{0,1}` |
| label std (unused, kept for round trips) | buffer `dataset_label_std` |
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables.generators.ops import pixel_norm, truncate_latents
from trainables.generators.stylegan2 import (EqualLinear, ModulatedConv2d, NoiseMode, StyledConv, StyleGAN2, StyleGAN2Config, ToRGB,
                         Upsample2x)
from trainables.generators.eg3d import renderer as R
from trainables.generators.eg3d.config import EG3DConfig


class MultiChannelToRGB(ToRGB):
    """ToRGB with `out_channel` outputs (EG3D's backbone emits 96 = 3 planes x 32 features).

    The project's ToRGB hard-codes 3 channels; this subclass only changes the two tensors' shapes and reuses its
    forward (modulated 1x1 conv without demodulation + bias [+ clamp] [+ upsampled skip]).
    """

    def __init__(self, in_channel: int, style_dim: int, out_channel: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None):
        nn.Module.__init__(self)
        self.bias = nn.Parameter(torch.zeros(1, out_channel, 1, 1))
        if upsample:
            self.upsample = Upsample2x(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, out_channel, 1, style_dim, demodulate=False)
        self.clamp = conv_clamp


class TriplaneSynthesis(StyleGAN2):
    """The StyleGAN2 synthesis network that writes the tri-planes: W+ [N, num_ws, w_dim] -> [N, 96, 256, 256].

    A `StyleGAN2` without mapping layers (n_mlp = 0) whose ToRGB layers have `out_channels` outputs.
    """

    def __init__(self, cfg: StyleGAN2Config, out_channels: int):
        super().__init__(cfg)
        blur = cfg.blur_kernel
        self.to_rgb1 = MultiChannelToRGB(cfg.channels[4], cfg.style_dim, out_channels, upsample=False,
                                         conv_clamp=cfg.conv_clamp)
        self.to_rgbs = nn.ModuleList(
            MultiChannelToRGB(cfg.channels[2**r], cfg.style_dim, out_channels, blur_kernel=blur, conv_clamp=cfg.conv_clamp)
            for r in range(3, cfg.log_size + 1))
        self.out_channels = out_channels

    def forward(self, wp: torch.Tensor, noise_mode: NoiseMode = "const", noise_generator: torch.Generator | None = None,
                noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        return self.synthesis(wp, noise_mode=noise_mode, noise_generator=noise_generator, noise=noise)


class CameraMapping(nn.Module):
    """z [N, z_dim], c [N, c_dim] -> w: cat(pixelnorm(z), pixelnorm(embed(c))) -> lrelu MLP (lr 0.01) -> broadcast."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2, lr_mul: float = 0.01,
                 embed_features: int | None = None):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        if c_dim > 0:
            self.embed = EqualLinear(c_dim, embed_features)
        dims = [z_dim + embed_features] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", EqualLinear(dims[i], dims[i + 1], lr_mul=lr_mul, activation=True))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            parts.append(pixel_norm(z))
        if self.c_dim > 0:
            parts.append(pixel_norm(self.embed(c)))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x


class TriplaneBackbone(nn.Module):
    """EG3D's `backbone` (an NVlabs StyleGAN2 Generator with c_dim = 25): `mapping` + `synthesis`."""

    def __init__(self, cfg: EG3DConfig):
        super().__init__()
        sg = StyleGAN2Config(size=cfg.backbone_resolution, style_dim=cfg.w_dim, n_mlp=0,
                             channels=cfg.backbone_channels, conv_clamp=cfg.backbone_conv_clamp)
        self.synthesis = TriplaneSynthesis(sg, 3 * cfg.plane_channels)
        self.mapping = CameraMapping(cfg.z_dim, cfg.c_dim, cfg.w_dim, sg.n_latent, cfg.mapping_layers, cfg.mapping_lr,
                                     cfg.embed_features)


class OSGDecoder(nn.Module):
    """Tri-plane features [N, 3, M, C] -> mean over planes -> FC(C, 64) -> softplus -> FC(64, 1 + out).

    Returns {'sigma': [N, M, 1] raw density, 'rgb': [N, M, out] = sigmoid(.) * 1.002 - 0.001}.
    """

    def __init__(self, n_features: int, hidden: int = 64, out_dim: int = 32, lr_mul: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(EqualLinear(n_features, hidden, lr_mul=lr_mul), nn.Softplus(),
                                 EqualLinear(hidden, 1 + out_dim, lr_mul=lr_mul))

    def forward(self, sampled: torch.Tensor) -> dict[str, torch.Tensor]:
        x = sampled.mean(1)
        n, m, c = x.shape
        x = self.net(x.reshape(n * m, c)).reshape(n, m, -1)
        return {"rgb": torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001, "sigma": x[..., 0:1]}


class SRBlock(nn.Module):
    """NVlabs SynthesisBlock / SynthesisBlockNoUp ('skip'): conv0 (x2 up unless NoUp) -> conv1 -> img (+) torgb."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, upsample: bool,
                 conv_clamp: float | None, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.upsample_block = upsample
        self.resolution = resolution
        self.conv0 = StyledConv(in_ch, out_ch, w_dim, upsample=upsample, blur_kernel=blur_kernel, conv_clamp=conv_clamp)
        self.conv1 = StyledConv(out_ch, out_ch, w_dim, blur_kernel=blur_kernel, conv_clamp=conv_clamp)
        self.torgb = ToRGB(out_ch, w_dim, upsample=False, conv_clamp=conv_clamp)
        if upsample:
            self.img_up = Upsample2x(blur_kernel)
        self.register_buffer("noise_const0", torch.randn(1, 1, resolution, resolution))
        self.register_buffer("noise_const1", torch.randn(1, 1, resolution, resolution))

    def _noise(self, i: int, batch: int, mode: NoiseMode, gen: torch.Generator | None) -> torch.Tensor | None:
        buf = getattr(self, f"noise_const{i}")
        if mode == "const":
            return buf
        if mode == "random":
            dev = gen.device if gen is not None else buf.device
            return torch.randn(batch, 1, *buf.shape[2:], generator=gen, device=dev, dtype=buf.dtype).to(buf.device)
        if mode == "none":
            return None
        raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {mode!r}")

    def forward(self, x: torch.Tensor, img: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode = "none",
                noise_generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        x = self.conv0(x, w, self._noise(0, n, noise_mode, noise_generator))
        x = self.conv1(x, w, self._noise(1, n, noise_mode, noise_generator))
        if self.upsample_block:
            img = self.img_up(img)
        return x, img + self.torgb(x, w)


class SuperResolution(nn.Module):
    """SuperresolutionHybrid2X / 4X / 8XDC: two SR blocks driven by the last w; inputs resized (bilinear,
    antialiased) to `input_resolution` when they differ (4X: only when smaller)."""

    def __init__(self, cfg: EG3DConfig):
        super().__init__()
        self.sr_class = cfg.sr_class
        self.input_resolution = cfg.sr_input_resolution
        self.antialias = bool(cfg.rendering["sr_antialias"])
        (c0, c1), (r0, r1) = cfg.sr_channels, cfg.sr_block_resolutions
        up0 = cfg.sr_block0_upsamples
        self.block0 = SRBlock(cfg.decoder_output_dim, c0, cfg.w_dim, r0, up0, cfg.sr_conv_clamp)
        self.block1 = SRBlock(c0, c1, cfg.w_dim, r1, True, cfg.sr_conv_clamp)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, noise_mode: NoiseMode = "none",
                noise_generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (image, image after block0 when block0 adds into the un-resized rgb in place in the reference, else None)."""
        w = ws[:, -1]
        r = self.input_resolution
        size = x.shape[-1]
        resize = size < r if self.sr_class == "SuperresolutionHybrid4X" else size != r
        if resize:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=self.antialias)
            rgb = F.interpolate(rgb, size=(r, r), mode="bilinear", align_corners=False, antialias=self.antialias)
        x, img = self.block0(x, rgb, w, noise_mode, noise_generator)
        aliased = img if (not resize and not self.block0.upsample_block) else None
        x, img = self.block1(x, img, w, noise_mode, noise_generator)
        return img, aliased


class EG3DGenerator(nn.Module):
    """EG3D TriPlaneGenerator. z [N, z_dim] + camera c [N, 25] -> {'image', 'image_raw', 'image_depth'}.

    c = 16 flattened OpenCV cam2world entries + 9 normalised intrinsics (focal / image size, centre 0.5).
    """

    def __init__(self, cfg: EG3DConfig | None = None, **kwargs: Any):
        super().__init__()
        if cfg is None:
            cfg = EG3DConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either an EG3DConfig or keyword fields, not both")
        self.cfg = cfg
        self.register_buffer("dataset_label_std", torch.ones(cfg.c_dim))
        self.backbone = TriplaneBackbone(cfg)
        self.decoder = OSGDecoder(cfg.plane_channels, cfg.decoder_hidden, cfg.decoder_output_dim, cfg.decoder_lr_mul)
        self.superresolution = SuperResolution(cfg)
        self.neural_rendering_resolution = cfg.neural_rendering_resolution
        self.rendering_kwargs = cfg.rendering
        self.n_latent = self.num_ws = self.backbone.synthesis.n_latent
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.img_resolution = cfg.img_resolution

    # -- helpers --------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.mapping.fc0.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.mapping.fc0.weight.device

    @property
    def latent_avg(self) -> torch.Tensor:
        """The checkpoint's mean w (`backbone.mapping.w_avg`), [w_dim]."""
        return self.backbone.mapping.w_avg

    def set_latent_avg(self, w_avg: torch.Tensor) -> None:
        self.backbone.mapping.w_avg.copy_(w_avg.detach().reshape(-1).to(self.backbone.mapping.w_avg))

    @property
    def avg_camera_pivot(self) -> list[float]:
        return list(self.cfg.rendering["avg_camera_pivot"])

    @property
    def avg_camera_radius(self) -> float:
        return float(self.cfg.rendering["avg_camera_radius"])

    # -- latent spaces --------------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """ws [N, num_ws, w_dim]; c is scaled by rendering c_scale (zeroed with c_gen_conditioning_zero)."""
        z = z.to(device=self.device, dtype=self.dtype)
        c = c.to(device=self.device, dtype=self.dtype)
        rk = self.cfg.rendering
        if rk["c_gen_conditioning_zero"]:
            c = torch.zeros_like(c)
        w = self.backbone.mapping(z, c * float(rk["c_scale"]))
        ws = self.broadcast(w)
        if truncation_psi != 1:
            if truncation_cutoff is None:
                ws = self.truncate(ws, truncation_psi)
            else:
                k = int(truncation_cutoff)
                ws = torch.cat([self.truncate(ws[:, :k], truncation_psi), ws[:, k:]], 1)
        return ws

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """[N, w_dim] -> [N, num_ws, w_dim] (W+ passes through)."""
        if w.ndim == 3:
            return w
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)

    def truncate(self, wp: torch.Tensor, psi: float, center: torch.Tensor | None = None) -> torch.Tensor:
        """w_avg + psi * (w - w_avg)."""
        return truncate_latents(wp, psi, self.latent_avg, center)

    @torch.no_grad()
    def mean_latent(self, c: torch.Tensor, n: int = 4096, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean mapping output over n z ~ N(0, I) at camera c [1, 25] (or [n, 25])."""
        gen_device = generator.device if generator is not None else self.device
        z = torch.randn(n, self.z_dim, generator=generator, device=gen_device)
        c = c.to(self.device).expand(n, -1) if c.shape[0] == 1 else c
        return self.mapping(z.to(self.device), c)[:, 0].mean(0)

    # -- synthesis ------------------------------------------------------------------------------------------
    def planes(self, ws: torch.Tensor, noise_mode: NoiseMode = "const",
               noise_generator: torch.Generator | None = None) -> torch.Tensor:
        """Tri-planes [N, 3, plane_channels, 256, 256] from ws."""
        ws = self.broadcast(ws.to(device=self.device, dtype=self.dtype))
        p = self.backbone.synthesis(ws, noise_mode=noise_mode, noise_generator=noise_generator)
        return p.reshape(p.shape[0], 3, self.cfg.plane_channels, p.shape[-2], p.shape[-1])

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, noise_mode: NoiseMode = "const",
                  noise_generator: torch.Generator | None = None, render_generator: torch.Generator | None = None,
                  neural_rendering_resolution: int | None = None, return_dict: bool = True,
                  draws: tuple[torch.Tensor, torch.Tensor] | None = None,
                  record: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor] | torch.Tensor:
        """ws [N, num_ws, w_dim] (or w [N, w_dim]) + camera c [N, 25] -> dict (or the final image).

        `noise_mode` drives the backbone's noise; the super-resolution always uses the checkpoint's
        `superresolution_noise_mode` ('none' for FFHQ), as EG3D does. The renderer's random draws (stratified
        jitter, importance u) come from `render_generator`, else `noise_generator`, else the global RNG.
        `draws=(coarse [N, M, D, 1], importance [N*M, K])` injects them; `record` (a dict) receives intermediates.
        Unlike the reference, `neural_rendering_resolution` does not overwrite the attribute.
        Returns {'image' [N, 3, S, S], 'image_raw' [N, 3, r, r], 'image_depth' [N, 1, r, r],
        'image_raw_rendered' [N, 3, r, r]}; 'image_raw' reproduces the reference's in-place aliasing quirk of
        the 2X/4X SR (it then includes block0's ToRGB), 'image_raw_rendered' never does.
        """
        ws = self.broadcast(ws.to(device=self.device, dtype=self.dtype))
        c = c.to(device=self.device, dtype=self.dtype)
        if ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must have {self.num_ws} entries, got shape {tuple(ws.shape)}")
        if c.ndim != 2 or c.shape[1] < 25 or c.shape[0] != ws.shape[0]:
            raise ValueError(f"c must be [N, 25] with N = {ws.shape[0]}, got {tuple(c.shape)}")
        res = int(neural_rendering_resolution or self.neural_rendering_resolution)
        cam2world = c[:, :16].reshape(-1, 4, 4)
        intrinsics = c[:, 16:25].reshape(-1, 3, 3)
        origins, dirs = R.sample_rays(cam2world, intrinsics, res)
        planes = self.planes(ws, noise_mode, noise_generator)
        gen = render_generator if render_generator is not None else noise_generator
        feats, depth, _ = R.render(planes, self.decoder, origins, dirs, self.cfg.rendering, gen, draws, record)
        n = ws.shape[0]
        feature_image = feats.permute(0, 2, 1).reshape(n, feats.shape[-1], res, res)
        depth_image = depth.permute(0, 2, 1).reshape(n, 1, res, res)
        rgb = feature_image[:, :3]
        image, aliased = self.superresolution(rgb, feature_image, ws, self.cfg.rendering["superresolution_noise_mode"],
                                              noise_generator)
        if record is not None:
            record["feature_image"] = feature_image.detach()
            record["planes"] = planes.detach()
        if not return_dict:
            return image
        return {"image": image, "image_raw": rgb if aliased is None else aliased, "image_depth": depth_image,
                "image_raw_rendered": rgb}

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, **synthesis_kwargs: Any) -> dict[str, torch.Tensor] | torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, c, **synthesis_kwargs)


def count_parameters(g: nn.Module) -> int:
    return sum(p.numel() for p in g.parameters())


__all__ = ["EG3DGenerator", "TriplaneSynthesis", "MultiChannelToRGB", "CameraMapping", "OSGDecoder", "SRBlock",
           "SuperResolution", "count_parameters"]
