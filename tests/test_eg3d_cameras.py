"""EG3D cameras: EG3D's look-at convention, the paper's adaptation distribution, the evaluation orbit."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from trainables.generators.eg3d import (build_pocket_eg3d, front_camera, generator_cameras, lookat_cam2world,
                                        orbit_cameras, sample_adaptation_cameras)

FIX = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "eg3d"
pytestmark = pytest.mark.numeric


@pytest.mark.usefixtures("eg3d_fixtures")     # fails (not skips) when ../shared/fixtures is missing
def test_lookat_matches_reference_cameras():
    exp = torch.load(FIX / "eg3d_tiny_expected.pt", weights_only=True)
    yaw = torch.tensor([math.pi / 2 + dy for dy in (-0.3, 0.0, 0.3)])
    m = lookat_cam2world(yaw, torch.full((3,), math.pi / 2 - 0.05), [0, 0, 0.2], 2.7)
    torch.testing.assert_close(m, exp["cam2world"], rtol=0, atol=2e-6)
    from trainables.generators.eg3d import camera_label, intrinsics_matrix
    torch.testing.assert_close(camera_label(m, intrinsics_matrix(4.2647)), exp["c"], rtol=0, atol=2e-6)
    torch.testing.assert_close(front_camera().expand(3, -1), exp["c_front"], rtol=0, atol=2e-6)


def _angles(c: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    o = c[:, [3, 7, 11]].double()  # camera centre
    phi = torch.arccos(o[:, 1] / radius)  # polar angle from +y
    pitch = math.pi * (1 - torch.cos(phi)) / 2  # inverse of phi = arccos(1 - 2 pitch / pi)
    yaw = math.pi - torch.atan2(o[:, 2], o[:, 0])
    return yaw, pitch


def test_adaptation_cameras_follow_the_paper_curve():
    rng = torch.Generator().manual_seed(5)
    c = sample_adaptation_cameras(64, rng, pivot=[0, 0, 0.2], radius=2.7)
    assert c.shape == (64, 25) and c.dtype == torch.float32
    f = torch.rand(64, generator=torch.Generator().manual_seed(5), dtype=torch.float64)  # the same draws
    yaw, pitch = _angles(c, 2.7)
    torch.testing.assert_close(yaw, math.pi / 2 + 0.35 * torch.sin(2 * math.pi * f), rtol=0, atol=1e-5)
    torch.testing.assert_close(pitch, math.pi / 2 - 0.05 + 0.25 * torch.cos(2 * math.pi * f), rtol=0, atol=1e-5)
    assert torch.allclose(c[:, [3, 7, 11]].norm(dim=1), torch.full((64,), 2.7), atol=1e-5)
    m = c[:, :16].reshape(-1, 4, 4)
    rot = m[:, :3, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3).expand(64, 3, 3), rtol=0, atol=1e-5)
    fwd = torch.nn.functional.normalize(torch.tensor([0, 0, 0.2]) - m[:, :3, 3], dim=1)
    torch.testing.assert_close(rot[:, :, 2], fwd, rtol=0, atol=1e-5)  # looks at the pivot
    assert torch.equal(c[:, 16:], torch.tensor([4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]).expand(64, 9))
    again = sample_adaptation_cameras(64, torch.Generator().manual_seed(5), pivot=[0, 0, 0.2], radius=2.7)
    assert torch.equal(c, again)
    assert not torch.equal(c, sample_adaptation_cameras(64, torch.Generator().manual_seed(6), [0, 0, 0.2], 2.7))


def test_orbit_and_generator_cameras():
    c = orbit_cameras(5)
    assert c.shape == (5, 25)
    torch.testing.assert_close(orbit_cameras(1, pitch=math.pi / 2), front_camera(), rtol=0, atol=1e-6)
    torch.testing.assert_close(_angles(orbit_cameras(3), 2.7)[1], torch.full((3,), math.pi / 2 - 0.05, dtype=torch.float64),
                               rtol=0, atol=1e-5)
    yaw, pitch = _angles(c, 2.7)
    torch.testing.assert_close(yaw, math.pi / 2 + torch.linspace(-0.35, 0.35, 5, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(c[0, 3], -c[4, 3])  # symmetric views
    g = build_pocket_eg3d(0)
    assert torch.equal(generator_cameras(g, "orbit", n_views=3), orbit_cameras(3, g.avg_camera_pivot, g.avg_camera_radius))
    assert generator_cameras(g, "adapt", 2, torch.Generator().manual_seed(0)).shape == (2, 25)
    with pytest.raises(ValueError):
        generator_cameras(g, "sideways")
