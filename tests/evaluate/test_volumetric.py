"""Volumetric 3-D outputs: channel layout as data, soft-argmax, crop -> image -> camera, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy.camera import Camera
from mdeploy.data.synthetic3d import sample_person
from mdeploy.errors import InputError
from mdeploy.evaluate.volumetric import VolumeLayout, decode, decode_coords, encode, soft_argmax, target_inside
from mdeploy.keypoints import get_keypoint_set
from mdeploy.spec import Preprocessing

PRE = Preprocessing(size=(256, 256), channels="rgb", range=(0.0, 1.0), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def gaussian_volumes(targets: np.ndarray, layout: VolumeLayout, sigma: float = 0.7, sharpness: float = 1.0) -> np.ndarray:
    """[1, J, D, H, W] raw scores whose softmax is a Gaussian around each (x, y, z) target (cells, bins)."""
    z, y, x = np.meshgrid(np.arange(layout.depth), np.arange(layout.height), np.arange(layout.width), indexing="ij")
    out = np.empty((1, layout.joints, layout.depth, layout.height, layout.width))
    for j, (tx, ty, tz) in enumerate(targets):
        out[0, j] = -sharpness * ((x - tx) ** 2 + (y - ty) ** 2 + (z - tz) ** 2) / (2 * sigma**2)
    return out


@pytest.mark.parametrize("order", ["joint_major", "depth_major"])
def test_channel_layout_is_data_and_round_trips(order):
    lay = VolumeLayout(joints=3, depth=4, height=5, width=6, order=order)
    vol = np.random.default_rng(0).normal(size=(1, 3, 4, 5, 6))
    out = lay.to_output(vol)
    assert out.shape == (1, 5, 6, 12)
    for j, d, h, w in [(0, 0, 0, 0), (2, 3, 4, 5), (1, 2, 3, 1)]:
        assert out[0, h, w, lay.channel(j, d)] == vol[0, j, d, h, w]
    expected = {"joint_major": 2 * 4 + 1, "depth_major": 1 * 3 + 2}[order]
    assert lay.channel(2, 1) == expected
    np.testing.assert_array_equal(lay.volumes(out), vol)
    # A PyTorch export read as it is: [1, J*D, H, W].
    nchw = lay.to_output(vol, channels_first=True)
    assert nchw.shape == (1, 12, 5, 6)
    np.testing.assert_array_equal(lay.volumes(nchw, channels_first=True), vol)
    assert VolumeLayout.from_json(lay.to_json()) == lay


def test_layout_from_shape_and_channels_that_do_not_divide():
    lay = VolumeLayout.from_shape((1, 32, 32, 21 * 32), joints=21)
    assert (lay.depth, lay.height, lay.width, lay.channels) == (32, 32, 32, 672)
    assert VolumeLayout.from_shape((1, 21 * 64, 32, 32), joints=21, channels_first=True).depth == 64
    with pytest.raises(InputError, match="672 channels.*do not divide into 17 joints") as err:
        VolumeLayout.from_shape((1, 32, 32, 672), joints=17)
    assert err.value.exit_code == 2 and "NCHW" in err.value.hint
    with pytest.raises(InputError, match="do not divide"):
        lay.volumes(np.zeros((1, 32, 32, 670), np.float32))
    with pytest.raises(InputError, match="expects 32x32"):
        lay.volumes(np.zeros((1, 16, 16, 672), np.float32))


def test_soft_argmax_finds_a_sharp_peak_within_a_twentieth_of_a_cell():
    lay = VolumeLayout(joints=3, depth=32, height=32, width=32)
    targets = np.array([[10.3, 20.7, 5.45], [16.0, 16.0, 16.0], [4.9, 27.2, 25.6]])
    got = soft_argmax(gaussian_volumes(targets, lay))[0]
    np.testing.assert_allclose(got, targets, atol=0.05)
    # Independently: a single spike (other cells far lower) lands on its cell exactly.
    spike = np.full((1, 1, 8, 6, 7), -60.0)
    spike[0, 0, 5, 2, 3] = 0.0
    np.testing.assert_allclose(soft_argmax(spike)[0, 0], [3, 2, 5], atol=1e-6)
    # A flat volume's expectation is the grid's middle: (W-1)/2, (H-1)/2, (D-1)/2.
    np.testing.assert_allclose(soft_argmax(np.zeros((1, 1, 8, 6, 7)))[0, 0], [3.0, 2.5, 3.5])
    # Overflow-safe: huge logits still decode.
    assert np.isfinite(soft_argmax(gaussian_volumes(targets, lay, sharpness=1e4))).all()


def test_depth_bins_and_cells_in_units():
    lay = VolumeLayout(joints=1, depth=32, height=32, width=32)
    np.testing.assert_allclose(lay.bins_to_mm([0, 16, 32]), [-1000, 0, 1000])
    np.testing.assert_allclose(lay.mm_to_bins(lay.bins_to_mm([3.3, 17.9])), [3.3, 17.9])
    wide = VolumeLayout(joints=1, depth=64, height=32, width=32, depth_range_mm=3000)
    assert wide.bins_to_mm(0) == -1500
    # Cell centres: cell 0 covers input pixels [0, 8) of a 256 input over 32 cells, its centre is 4.
    u, v = lay.cells_to_input(0.0, 31.0, (256, 256))
    assert (u, v) == (4.0, 252.0)
    corner = VolumeLayout(joints=1, depth=32, height=32, width=32, cell_origin="corner")
    assert corner.cells_to_input(0.0, 31.0, (256, 256)) == (0.0, 248.0)


def test_decode_through_the_crop_box_and_back_to_the_camera():
    """A person's 3-D joints -> projected -> encoded into a crop's volumes -> decoded and lifted back."""
    kps_j = 21
    person = next(p for p in (sample_person(3, i) for i in range(20)) if np.ptp(p.joints[:, 2]) < 1500)
    # The source image is the synthetic crop seen as a bigger frame: put it inside a 1000x800 image.
    cam = Camera(person.camera.fx, person.camera.fy, person.camera.cx + 300.0, person.camera.cy + 200.0)
    truth = person.joints
    uv = cam.project(truth)
    x0, y0 = uv.min(axis=0) - 20
    side = float(np.max(uv.max(axis=0) - uv.min(axis=0))) + 40
    box = (float(x0), float(y0), side, side)
    affine = PRE.geometry(1000, 800, box)
    lay = VolumeLayout(joints=kps_j, depth=32, height=32, width=32)
    root = get_keypoint_set("muco21").root_index
    root_depth = float(truth[root, 2])
    targets = encode(uv, truth[:, 2], lay, PRE.size, affine, root_depth=root_depth)
    assert target_inside(targets, lay).all()
    output = lay.to_output(gaussian_volumes(targets, lay))
    pose = decode(output, lay, PRE.size, affine, root_depth=root_depth, focal=(cam.fx, cam.fy), principal=(cam.cx, cam.cy),
                  back_project=True)
    cell_px = side / 32  # one cell in source pixels
    np.testing.assert_allclose(pose.image, uv, atol=0.05 * cell_px)
    np.testing.assert_allclose(pose.depth, truth[:, 2], atol=0.05 * 2000 / 32)
    err = np.linalg.norm(pose.camera - truth, axis=1)
    assert err.max() < 2.0, err  # mm (0.05 measured); the other cell convention is 57 mm off here
    np.testing.assert_allclose(cam.project(pose.camera), pose.image, atol=1e-6)  # lifted points reproject
    # Root-relative decode (no root depth): the root sits at 0 mm, the others relative to it.
    rel = decode(output, lay, PRE.size, affine)
    assert rel.relative and rel.camera is None and abs(rel.depth[root]) < 0.5
    np.testing.assert_allclose(rel.depth, truth[:, 2] - root_depth, atol=0.5)
    # The other cell convention reads the same volumes half a cell (in input pixels) away.
    corner = VolumeLayout(joints=kps_j, depth=32, height=32, width=32, cell_origin="corner")
    shifted = decode_coords(soft_argmax(lay.volumes(output))[0], corner, PRE.size, affine)
    np.testing.assert_allclose(shifted.image, pose.image - 0.5 * cell_px, atol=1e-6)


def test_back_projection_without_camera_or_root_depth_is_bad_input():
    lay = VolumeLayout(joints=2, depth=4, height=4, width=4)
    out = np.zeros((1, 4, 4, 8), np.float32)
    with pytest.raises(InputError, match="focal length .* and principal point") as err:
        decode(out, lay, (32, 32), back_project=True, root_depth=3000.0)
    assert err.value.exit_code == 2 and "error:" in err.value.render()
    with pytest.raises(InputError, match="principal point") as err:
        decode(out, lay, (32, 32), back_project=True, root_depth=3000.0, focal=(500.0, 500.0))
    assert "focal" not in err.value.message.split("needs")[1]
    with pytest.raises(InputError, match="root joint's depth"):
        decode(out, lay, (32, 32), back_project=True, focal=500.0, principal=(16.0, 16.0))
    ok = decode(out, lay, (32, 32), back_project=True, root_depth=3000.0, focal=500.0, principal=(16.0, 16.0))
    assert ok.camera.shape == (2, 3) and not ok.relative
