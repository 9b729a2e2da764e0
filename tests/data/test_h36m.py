"""The Human3.6M layout (../shared/data/realkp/h36m): 2-D, 3-D and cameras of four real frames.

The frames' 3-D joints, moved into each camera and projected with its lens distortion, land
on their 2-D joints within 1 px (without the distortion they do not). Tests that need the
shared data skip when ../shared is absent; the rest build their own files.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest

from mdeploy.camera import Camera
from mdeploy.data.h36m import load_coco3d, load_h36m, load_h36m_npz, parse_h36m_name, read_cameras, side_agreement
from mdeploy.errors import InputError
from mdeploy.keypoints import get_keypoint_set
from tests.helpers import SHARED

H36M_DIR = SHARED / "data" / "realkp" / "h36m"
H36M = get_keypoint_set("h36m17")
MUCO = get_keypoint_set("muco21")

needs_h36m = pytest.mark.skipif(not H36M_DIR.is_dir(), reason=f"the Human3.6M frames are not here ({H36M_DIR}): ../shared is absent")


@needs_h36m
def test_the_frames_3d_joints_project_onto_their_2d_joints_within_one_pixel():
    ds = load_h36m(H36M_DIR)
    assert ds.people == 4 and ds.images == 4 and ds.layout == "h36m" and ds.keypoints is H36M
    worst_pinhole = 0.0
    for frame in ds.frames:
        assert frame.image.is_file() and frame.width == 1000 and frame.height in (1000, 1002)
        assert frame.visible.all() and frame.camera.distorted
        err = np.linalg.norm(frame.projected() - frame.keypoints[:, :2], axis=1)
        assert err.max() < 1.0, (frame.image.name, err.max())
        assert err.max() < 0.01  # in fact exact (5e-5 px measured)
        ideal = Camera(frame.camera.fx, frame.camera.fy, frame.camera.cx, frame.camera.cy)
        worst_pinhole = max(worst_pinhole, float(np.linalg.norm(ideal.project(frame.joints) - frame.keypoints[:, :2], axis=1).max()))
        # Camera space, mm: the pelvis 4-7 m in front of the camera, a person-sized skeleton.
        assert 3000 < frame.joints[0, 2] < 8000
        assert 100 < np.linalg.norm(frame.joints[1] - frame.joints[0]) < 180  # pelvis -> right hip
    assert worst_pinhole > 1.0  # the lens distortion matters: 2.4 px without it


@needs_h36m
def test_subject_camera_and_image_folders_come_from_the_file_names():
    ds = load_h36m(H36M_DIR)
    first = ds.frames[0]
    assert first.subject == "S1" and first.sequence == "Directions_1"
    assert first.image == H36M_DIR / "S1" / "S1_Directions_1.54138969" / "S1_Directions_1.54138969_000001.jpg"
    assert parse_h36m_name("S11_Walking_2.60457274_001234.jpg") == {
        "subject": "S11", "action": "Walking_2", "camera": "60457274", "frame": 1234, "folder": "S11/S11_Walking_2.60457274",
    }
    assert parse_h36m_name("000001.jpg") is None
    cameras = read_cameras(H36M_DIR / "cameras.pkl")
    assert len(cameras) == 44 and ("S1", "54138969") in cameras


@needs_h36m
def test_independent_arrays_agree_with_the_reader():
    """mmpose's body3d arrays hold the same frames in camera space (metres): the same joints in mm."""
    ds = load_h36m(H36M_DIR)
    arrays = load_h36m_npz(H36M_DIR / "test_h36m_body3d.npz", H36M_DIR)
    np.testing.assert_allclose(arrays.joints(), ds.joints(), atol=0.01)
    for a, b in zip(arrays.frames, ds.frames):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)
        assert a.image == b.image


@needs_h36m
def test_left_and_right_follow_human36m_not_the_files_names():
    """The file's names call joints 1-3 the left leg; its 3-D joints say they are the right one."""
    ds = load_h36m(H36M_DIR)
    assert any("joint 1 is 'left_hip' in the file, right_hip in h36m17" in n for n in ds.notes)
    assert (side_agreement(ds.joints(), H36M) > 0.9).all()
    swapped = ds.joints()[:, [0, 4, 5, 6, 1, 2, 3, *range(7, 17)]]  # read by the file's names
    assert (side_agreement(swapped, H36M) < -0.9).all()
    raw = json.loads((H36M_DIR / "h36m_coco.json").read_text())
    assert raw["categories"][0]["keypoints"][1] == "left_hip"


@needs_h36m
def test_read_onto_muco21_by_name():
    ds = load_h36m(H36M_DIR, MUCO)
    h = load_h36m(H36M_DIR)
    assert ds.keypoints is MUCO and all(f.visible.sum() == 16 for f in ds.frames)
    np.testing.assert_array_equal(ds.joints()[:, MUCO.root_index], h.joints()[:, H36M.root_index])
    assert np.isnan(ds.frames[0].joints[MUCO.index("head_centre")]).all()
    assert ds.frames[0].keypoints[MUCO.index("left_toe"), 2] == 0


@needs_h36m
def test_missing_files_name_their_path(tmp_path):
    with pytest.raises(InputError, match="annotations not found: .*h36m_coco.json"):
        load_h36m(tmp_path / "nowhere")
    copy = tmp_path / "h36m"
    copy.mkdir()
    shutil.copy(H36M_DIR / "h36m_coco.json", copy / "h36m_coco.json")
    with pytest.raises(InputError, match=f"camera file not found: {copy / 'cameras.pkl'}"):
        load_h36m(copy)
    shutil.copy(H36M_DIR / "cameras.pkl", copy / "cameras.pkl")
    with pytest.raises(InputError, match="4 image.* missing, e.g. .*S1_Directions_1.54138969_000001.jpg"):
        load_h36m(copy)
    assert len(load_h36m(copy, check_files=False)) == 4


class _Runs:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless, but a class a camera file must never build


def test_a_camera_file_cannot_run_code(tmp_path):
    bad = tmp_path / "cameras.pkl"
    bad.write_bytes(pickle.dumps({("S1", "1"): {"f": _Runs()}}))
    with pytest.raises(InputError, match="holds a posix.getcwd object|holds a os.getcwd object|holds a nt.getcwd object"):
        read_cameras(bad)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(InputError, match="not a readable camera table"):
        read_cameras(tmp_path / "junk.pkl")
    good = tmp_path / "good.pkl"
    cam = {"R": np.eye(3), "T": np.array([[1.0], [2.0], [3.0]]), "f": np.array([[1000.0], [1000.0]]), "c": np.array([[500.0], [500.0]])}
    good.write_bytes(pickle.dumps({("S9", "123"): cam}))
    assert read_cameras(good)[("S9", "123")].position == (1.0, 2.0, 3.0)


def test_camera_space_file_with_intrinsics_per_image(tmp_path):
    """The layout the synthetic 3-D people use: camera-space joints (mm) and a camera per image."""
    (tmp_path / "img").mkdir()
    cam = Camera(600.0, 610.0, 128.0, 120.0)
    joints = np.random.default_rng(0).normal(0, 200, (17, 3)) + [0, 0, 4000]
    uv = cam.project(joints)
    data = {
        "info": {"units": "mm"},
        "images": [{"id": 1, "file_name": "a.jpg", "width": 256, "height": 256, "camera": cam.to_json()}],
        "annotations": [{"id": 1, "image_id": 1, "keypoints": np.c_[uv, np.full(17, 2)].ravel().tolist(),
                         "keypoints_3d": joints.ravel().tolist()}],
        "categories": [{"id": 1, "keypoints": list(H36M.names)}],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    ds = load_coco3d(tmp_path / "a.json", tmp_path / "img", H36M, check_files=False)
    np.testing.assert_allclose(ds.frames[0].joints, joints)
    assert ds.frames[0].camera == cam
    np.testing.assert_allclose(ds.frames[0].projected(), uv)
    del data["images"][0]["camera"]
    (tmp_path / "b.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="has no camera"):
        load_coco3d(tmp_path / "b.json", tmp_path / "img", H36M, check_files=False)
