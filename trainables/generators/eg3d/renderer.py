"""EG3D's neural volume renderer in plain PyTorch: rays from a camera, tri-plane sampling, coarse + importance
sampling along each ray and MipNeRF-style alpha compositing.

Behaviour follows NVlabs/eg3d (`volumetric_rendering/{ray_sampler,renderer,ray_marcher}.py`), written anew:
- rays: pixel centres (u, v) = ((j + 0.5) / R, (i + 0.5) / R) lifted with the normalised intrinsics (skew
  included) to z = 1 camera points, rotated by the OpenCV cam2world; directions normalised, origins = camera
  position.
- stratified depths: linspace(ray_start, ray_end, D) + U(0, 1) * (ray_end - ray_start) / (D - 1) (the jitter is
  drawn in eval mode too: the reference has no deterministic switch).
- tri-plane lookup: points scaled by 2 / box_warp, projected on the planes (x, y), (x, z), (z, x) (what EG3D's
  inverse-of-plane-axes projection yields), bilinear `grid_sample` (zeros padding, align_corners False),
  features averaged over the three planes.
- marcher: midpoint colours/densities, sigma = softplus(density - 1), alpha = 1 - exp(-sigma * delta),
  weights = alpha * cumprod(1 - alpha + 1e-10) (exclusive), depth = sum(w * mid depth) / sum(w) clamped to the
  batch's depth range, rgb * 2 - 1.
- importance: weights max-pooled (2, stride 1, pad 1) then average-pooled (2, stride 1), + 0.01, inverse-CDF
  sampling on the mid-points with u ~ U(0, 1) (eps 1e-5), no gradient; coarse and fine samples merged by depth.

Random draws, in order: `rand [N, M, D, 1]` (stratified jitter) then `rand [N*M, D_imp]` (importance). Without a
`generator` they come from the global RNG exactly as in the reference (so `torch.manual_seed(s)` before a call
reproduces it); with a `torch.Generator` they are drawn from it; `draws=(coarse, importance)` injects them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

# plane i holds coordinates (PLANE_COORDS[i][0], PLANE_COORDS[i][1]) as its (x, y) grid axes
PLANE_COORDS = ((0, 1), (0, 2), (2, 0))


def _rand(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.rand(shape, device=like.device, dtype=like.dtype)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


def sample_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(origins, unit directions), each [N, R*R, 3], for an R x R image; pixel (i, j) is ray i*R + j."""
    n = cam2world.shape[0]
    dev, dt = cam2world.device, cam2world.dtype
    idx = torch.arange(resolution, dtype=torch.float32, device=dev)
    ii, jj = torch.meshgrid(idx, idx, indexing="ij")
    u = (jj * (1.0 / resolution) + (0.5 / resolution)).reshape(1, -1).to(dt)  # x: column
    v = (ii * (1.0 / resolution) + (0.5 / resolution)).reshape(1, -1).to(dt)  # y: row
    fx, fy = intrinsics[:, 0, 0:1], intrinsics[:, 1, 1:2]
    cx, cy, sk = intrinsics[:, 0, 2:3], intrinsics[:, 1, 2:3], intrinsics[:, 0, 1:2]
    z = torch.ones(n, resolution * resolution, device=dev, dtype=dt)
    x_lift = (u - cx + cy * sk / fy - sk * v / fy) / fx * z
    y_lift = (v - cy) / fy * z
    pts = torch.stack((x_lift, y_lift, z, torch.ones_like(z)), dim=-1)  # [N, M, 4] camera space
    world = torch.bmm(cam2world, pts.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]
    origin = cam2world[:, :3, 3]
    dirs = F.normalize(world - origin[:, None, :], dim=2)
    return origin.unsqueeze(1).expand(-1, dirs.shape[1], -1).contiguous(), dirs


def sample_from_planes(planes: torch.Tensor, coords: torch.Tensor, box_warp: float) -> torch.Tensor:
    """planes [N, 3, C, H, W], coords [N, M, 3] -> features [N, 3, M, C] (bilinear, zero outside the box)."""
    n, n_planes, c, h, w = planes.shape
    m = coords.shape[1]
    coords = (2 / box_warp) * coords
    grid = torch.stack([coords[..., list(ax)] for ax in PLANE_COORDS[:n_planes]], dim=1)  # [N, 3, M, 2]
    grid = grid.reshape(n * n_planes, 1, m, 2).to(planes.dtype)  # the reference: .float() (fp32 models)
    out = F.grid_sample(planes.reshape(n * n_planes, c, h, w), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # [N*3, C, 1, M]
    return out.permute(0, 3, 2, 1).reshape(n, n_planes, m, c)


def march(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor,
          white_back: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """colors [N, M, S, C], densities/depths [N, M, S, 1] -> (rgb [N, M, C] in ~[-1, 1], depth [N, M, 1], weights [N, M, S-1, 1])."""
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    sigma = F.softplus(densities_mid - 1)  # density clamp with an activation bias of -1
    alpha = 1 - torch.exp(-sigma * deltas)
    shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
    weights = alpha * torch.cumprod(shifted, -2)[:, :, :-1]
    rgb = torch.sum(weights * colors_mid, -2)
    total = weights.sum(2)
    depth = torch.sum(weights * depths_mid, -2) / total
    depth = torch.nan_to_num(depth, float("inf"))
    depth = torch.clamp(depth, torch.min(depths), torch.max(depths))
    if white_back:
        rgb = rgb + 1 - total
    return rgb * 2 - 1, depth, weights


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, u: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF samples: bins [R, B+1], weights [R, B], u [R, K] in [0, 1) -> depths [R, K]."""
    n_rays, n_bins = weights.shape
    weights = weights + eps
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
    u = u.contiguous()
    k = u.shape[1]
    inds = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(inds - 1, 0)
    above = torch.clamp_max(inds, n_bins)
    sel = torch.stack([below, above], -1).view(n_rays, 2 * k)
    cdf_g = torch.gather(cdf, 1, sel).view(n_rays, k, 2)
    bins_g = torch.gather(bins, 1, sel).view(n_rays, k, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


def stratified_depths(n: int, m: int, opts: dict[str, Any], like: torch.Tensor, generator: torch.Generator | None,
                      jitter: torch.Tensor | None = None) -> torch.Tensor:
    d = int(opts["depth_resolution"])
    start, end = float(opts["ray_start"]), float(opts["ray_end"])
    if jitter is None:
        jitter = _rand((n, m, d, 1), like, generator)
    jitter = jitter.to(like)
    if opts.get("disparity_space_sampling", False):
        t = torch.linspace(0, 1, d, device=like.device, dtype=like.dtype).reshape(1, 1, d, 1).repeat(n, m, 1, 1)
        t = t + jitter * (1 / (d - 1))
        return 1.0 / (1.0 / start * (1.0 - t) + 1.0 / end * t)
    depths = torch.linspace(start, end, d, device=like.device, dtype=like.dtype).reshape(1, 1, d, 1).repeat(n, m, 1, 1)
    return depths + jitter * ((end - start) / (d - 1))


def importance_depths(depths: torch.Tensor, weights: torch.Tensor, n_importance: int,
                      generator: torch.Generator | None, u: torch.Tensor | None = None) -> torch.Tensor:
    """depths [N, M, S, 1], coarse weights [N, M, S-1, 1] -> importance depths [N, M, K, 1] (no gradient)."""
    with torch.no_grad():
        n, m, s, _ = depths.shape
        z = depths.reshape(n * m, s)
        w = weights.reshape(n * m, -1)
        w = F.max_pool1d(w.unsqueeze(1), 2, 1, padding=1)
        w = F.avg_pool1d(w, 2, 1).squeeze(1) + 0.01
        mids = 0.5 * (z[:, :-1] + z[:, 1:])
        if u is None:
            u = _rand((n * m, n_importance), mids, generator)
        out = sample_pdf(mids, w[:, 1:-1], u.to(mids))
    return out.detach().reshape(n, m, n_importance, 1)


def render(planes: torch.Tensor, decoder: Callable[[torch.Tensor], dict[str, torch.Tensor]],
           origins: torch.Tensor, dirs: torch.Tensor, opts: dict[str, Any],
           generator: torch.Generator | None = None,
           draws: tuple[torch.Tensor, torch.Tensor] | None = None,
           record: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Volume-render tri-planes [N, 3, C, H, W] along rays -> (features [N, M, C'], depth [N, M, 1], weight sum [N, M, 1])."""
    n, m, _ = origins.shape
    box = float(opts["box_warp"])

    def run(depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = depths.shape[2]
        pts = (origins.unsqueeze(-2) + depths * dirs.unsqueeze(-2)).reshape(n, -1, 3)
        out = decoder(sample_from_planes(planes, pts, box))
        sigma = out["sigma"]
        noise_std = float(opts.get("density_noise", 0) or 0)
        if noise_std > 0:  # training-time density noise (0 in every FFHQ config)
            if generator is None:
                sigma = sigma + torch.randn_like(sigma) * noise_std
            else:
                sigma = sigma + torch.randn(sigma.shape, generator=generator, device=generator.device,
                                            dtype=sigma.dtype).to(sigma.device) * noise_std
        return out["rgb"].reshape(n, m, k, -1), sigma.reshape(n, m, k, 1)

    depths_c = stratified_depths(n, m, opts, origins, generator, None if draws is None else draws[0])
    colors_c, dens_c = run(depths_c)
    n_imp = int(opts["depth_resolution_importance"])
    if record is not None:
        record["depths_coarse"] = depths_c.detach()
    if n_imp <= 0:
        rgb, depth, weights = march(colors_c, dens_c, depths_c, bool(opts.get("white_back", False)))
        return rgb, depth, weights.sum(2)
    _, _, w_c = march(colors_c, dens_c, depths_c, bool(opts.get("white_back", False)))
    depths_f = importance_depths(depths_c, w_c, n_imp, generator, None if draws is None else draws[1])
    if record is not None:
        record["depths_fine"] = depths_f
    colors_f, dens_f = run(depths_f)
    all_d = torch.cat([depths_c, depths_f], -2)
    all_c = torch.cat([colors_c, colors_f], -2)
    all_s = torch.cat([dens_c, dens_f], -2)
    _, order = torch.sort(all_d, dim=-2)
    all_d = torch.gather(all_d, -2, order)
    all_c = torch.gather(all_c, -2, order.expand(-1, -1, -1, all_c.shape[-1]))
    all_s = torch.gather(all_s, -2, order)
    rgb, depth, weights = march(all_c, all_s, all_d, bool(opts.get("white_back", False)))
    return rgb, depth, weights.sum(2)
