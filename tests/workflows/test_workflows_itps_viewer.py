"""The ITPS viewer's pixel <-> workspace map on the real MuJoCo cameras (no display needed)."""
from __future__ import annotations

import numpy as np
import pytest

from armflow.workflows.itps_viewer import pixel_to_plane, world_to_pixel


@pytest.mark.parametrize("camera", ["topview", "agentview"])
def test_a_cube_pixel_maps_back_to_the_cube_on_its_plane(camera):
    from armflow.sim import make_env

    env = make_env("pick_either")
    env.reset(seed=100000)
    base = env.unwrapped
    for i in range(2):
        cube = base.cube_pos(i)
        u, v = world_to_pixel(base.model, base._data, camera, cube, 480, 480)
        assert 0 <= u < 480 and 0 <= v < 480
        back = pixel_to_plane(base.model, base._data, camera, u, v, 480, 480, float(cube[2]))
        # one pixel's footprint at ~1 m from the camera is ~2 mm
        assert np.linalg.norm(back - cube) < 0.005, (camera, i, back, cube)
    env.close()


def test_topview_pixels_move_the_way_the_image_shows():
    """The top camera's image right is world -y (xyaxes "0 -1 0 1 0 0"), image up is world +x."""
    from armflow.sim import make_env

    env = make_env("pick_either")
    env.reset(seed=0)
    base = env.unwrapped
    centre = pixel_to_plane(base.model, base._data, "topview", 240, 240, 480, 480, 0.0)
    right = pixel_to_plane(base.model, base._data, "topview", 340, 240, 480, 480, 0.0)
    up = pixel_to_plane(base.model, base._data, "topview", 240, 140, 480, 480, 0.0)
    np.testing.assert_allclose(centre[:2], [0.5, 0.0], atol=3e-3)
    assert right[1] < centre[1] - 0.05 and abs(right[0] - centre[0]) < 1e-3
    assert up[0] > centre[0] + 0.05 and abs(up[1] - centre[1]) < 1e-3
    env.close()
