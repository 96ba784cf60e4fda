"""Cameras for EG3D: look-at poses (EG3D's LookAtPoseSampler convention), the paper's adaptation camera
distribution, and a fixed evaluation orbit.

Convention (as EG3D's camera_utils): y is up; yaw (azimuth) pi/2 and pitch (polar angle from +y) pi/2 put the
camera on the +z axis. The camera centre lies on the sphere of `radius` around the WORLD ORIGIN at (yaw, pitch)
and looks at `lookat` (EG3D's pivot [0, 0, 0.2]); cam2world is OpenCV style (x right, y down, z forward):
columns right, up, forward with right = -normalize(up x forward), up = normalize(forward x right).
c = [cam2world.flatten() (16), intrinsics.flatten() (9)] with normalised intrinsics [[f, 0, cx], [0, f, cy], [0, 0, 1]].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FFHQ_FOCAL = 4.2647  # normalised focal length of the FFHQ labels (paper's EG3D setting)
FFHQ_PIVOT = (0.0, 0.0, 0.2)
FFHQ_RADIUS = 2.7


def intrinsics_matrix(focal: float = FFHQ_FOCAL, center: float = 0.5) -> torch.Tensor:
    return torch.tensor([[focal, 0.0, center], [0.0, focal, center], [0.0, 0.0, 1.0]], dtype=torch.float32)


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / torch.norm(v, dim=-1, keepdim=True)


def lookat_cam2world(yaw: torch.Tensor | float, pitch: torch.Tensor | float,
                     lookat: Sequence[float] | torch.Tensor = FFHQ_PIVOT, radius: float = FFHQ_RADIUS) -> torch.Tensor:
    """cam2world [N, 4, 4] (float32) for yaw/pitch tensors [N] (or floats)."""
    yaw = torch.as_tensor(yaw, dtype=torch.float32).reshape(-1, 1)
    pitch = torch.as_tensor(pitch, dtype=torch.float32).reshape(-1, 1)
    pitch = torch.clamp(pitch, 1e-5, math.pi - 1e-5)
    phi = torch.arccos(1 - 2 * (pitch / math.pi))
    n = yaw.shape[0]
    origin = torch.cat([radius * torch.sin(phi) * torch.cos(math.pi - yaw), radius * torch.cos(phi),
                        radius * torch.sin(phi) * torch.sin(math.pi - yaw)], dim=1)
    target = torch.as_tensor(lookat, dtype=torch.float32).reshape(1, 3)
    forward = _normalize(_normalize(target - origin))
    up = torch.tensor([0.0, 1.0, 0.0]).expand_as(forward)
    right = -_normalize(torch.cross(up, forward, dim=-1))
    up = _normalize(torch.cross(forward, right, dim=-1))
    m = torch.eye(4).unsqueeze(0).repeat(n, 1, 1)
    m[:, :3, :3] = torch.stack((right, up, forward), dim=-1)
    m[:, :3, 3] = origin
    return m


def camera_label(cam2world: torch.Tensor, intrinsics: torch.Tensor | None = None) -> torch.Tensor:
    """c [N, 25] = 16 extrinsics + 9 intrinsics."""
    k = intrinsics_matrix() if intrinsics is None else intrinsics
    n = cam2world.shape[0]
    return torch.cat([cam2world.reshape(n, 16), k.reshape(1, 9).to(cam2world).expand(n, 9)], dim=1)


def adaptation_angles(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper: yaw = pi/2 + 0.35 sin(2 pi f), pitch = pi/2 - 0.05 + 0.25 cos(2 pi f)."""
    yaw = math.pi / 2 + 0.35 * torch.sin(2 * math.pi * f)
    pitch = math.pi / 2 - 0.05 + 0.25 * torch.cos(2 * math.pi * f)
    return yaw, pitch


def sample_adaptation_cameras(batch: int, rng: torch.Generator | None = None,
                              pivot: Sequence[float] = FFHQ_PIVOT, radius: float = FFHQ_RADIUS,
                              focal: float = FFHQ_FOCAL) -> torch.Tensor:
    """The paper's per-iteration cameras: f ~ U(0, 1) from `rng` -> c [batch, 25] (float32, CPU).

    One draw serves the frozen and the trained generator alike (pass the same c to both).
    """
    f = torch.rand(batch, generator=rng, dtype=torch.float64)
    yaw, pitch = adaptation_angles(f)
    return camera_label(lookat_cam2world(yaw.float(), pitch.float(), pivot, radius), intrinsics_matrix(focal))


def front_camera(pivot: Sequence[float] = FFHQ_PIVOT, radius: float = FFHQ_RADIUS, focal: float = FFHQ_FOCAL) -> torch.Tensor:
    """The frontal camera (yaw = pitch = pi/2) as c [1, 25]; gen_samples.py's conditioning camera."""
    return camera_label(lookat_cam2world(math.pi / 2, math.pi / 2, pivot, radius), intrinsics_matrix(focal))


def orbit_cameras(n_views: int = 5, pivot: Sequence[float] = FFHQ_PIVOT, radius: float = FFHQ_RADIUS,
                  focal: float = FFHQ_FOCAL, yaw_range: float = 0.35, pitch: float = math.pi / 2 - 0.05) -> torch.Tensor:
    """Fixed evaluation views c [n_views, 25]: yaw evenly from pi/2 - yaw_range to pi/2 + yaw_range at `pitch`
    (n_views = 1 gives the frontal view yaw = pi/2); the middle view of an odd count is frontal."""
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    if n_views == 1:
        yaw = torch.tensor([math.pi / 2])
    else:
        yaw = math.pi / 2 + torch.linspace(-yaw_range, yaw_range, n_views, dtype=torch.float64)
    return camera_label(lookat_cam2world(yaw.float(), torch.full((n_views,), pitch), pivot, radius),
                        intrinsics_matrix(focal))


def generator_cameras(g, kind: str = "adapt", batch: int = 1, rng: torch.Generator | None = None,
                      n_views: int = 5) -> torch.Tensor:
    """Cameras at the generator's own avg_camera_pivot / avg_camera_radius ('adapt', 'front' or 'orbit')."""
    pivot, radius = g.avg_camera_pivot, g.avg_camera_radius
    if kind == "adapt":
        return sample_adaptation_cameras(batch, rng, pivot, radius)
    if kind == "front":
        return front_camera(pivot, radius).expand(batch, -1).clone()
    if kind == "orbit":
        return orbit_cameras(n_views, pivot, radius)
    raise ValueError(f"kind must be 'adapt', 'front' or 'orbit', got {kind!r}")
