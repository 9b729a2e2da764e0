"""Synthetic 3-D people: exact labels (3-D -> camera -> 2-D), adult bones, joint limits, deterministic files."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from mdeploy.camera import Camera
from mdeploy.data.h36m import load_coco3d, side_agreement
from mdeploy.data.synthetic3d import BONES, LIMITS, Synth3DConfig, generate, render, sample_person
from mdeploy.keypoints import get_keypoint_set

MUCO = get_keypoint_set("muco21")
H36M = get_keypoint_set("h36m17")


def angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Degrees between row vectors."""
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


@pytest.fixture(scope="module")
def people():
    return [sample_person(11, i) for i in range(300)]


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = generate(Synth3DConfig(6, seed=4), tmp_path / "a", workers=1)
    b = generate(Synth3DConfig(6, seed=4), tmp_path / "b", workers=2)
    c = generate(Synth3DConfig(6, seed=5), tmp_path / "c", workers=1)

    def digest(folder):
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted((folder / "images").iterdir()))).hexdigest()

    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    assert a == b and a["annotations"] != c["annotations"]


def test_written_2d_joints_are_the_written_3d_joints_through_the_written_camera(tmp_path):
    generate(Synth3DConfig(8, seed=2), tmp_path / "ds", workers=1)
    data = json.loads((tmp_path / "ds" / "annotations.json").read_text())
    assert data["info"]["units"] == "mm" and data["categories"][0]["keypoints"] == list(MUCO.names)
    assert data["categories"][0]["root"] == "pelvis"
    for img, ann in zip(data["images"], data["annotations"]):
        cam = Camera.from_json(img["camera"])
        joints = np.asarray(ann["keypoints_3d"]).reshape(21, 3)
        kp = np.asarray(ann["keypoints"]).reshape(21, 3)
        np.testing.assert_allclose(cam.project(joints), kp[:, :2], atol=1e-3)
        assert (kp[:, 2] == 2).all() and (kp[:, :2] > 0).all() and (kp[:, :2] < 256).all()  # the whole person is in the crop
        assert 2500 < joints[MUCO.root_index, 2] < 7000


def test_the_file_round_trips_through_the_3d_reader(tmp_path):
    data = generate(Synth3DConfig(5, seed=3), tmp_path / "ds", workers=1)
    ds = load_coco3d(tmp_path / "ds" / "annotations.json", tmp_path / "ds" / "images", MUCO)
    assert len(ds) == 5 and ds.images == 5 and all(f.image.is_file() for f in ds.frames)
    for frame, ann, img in zip(ds.frames, data["annotations"], data["images"]):
        np.testing.assert_allclose(frame.joints.ravel(), ann["keypoints_3d"])
        np.testing.assert_allclose(frame.keypoints.ravel(), ann["keypoints"], atol=1e-3)
        assert frame.camera == Camera.from_json(img["camera"])
        np.testing.assert_allclose(frame.projected(), frame.keypoints[:, :2], atol=1e-3)
        assert frame.subject == str(ann["subject"])
    # Read onto Human3.6M's joints: the 16 they share.
    as_h36m = load_coco3d(tmp_path / "ds" / "annotations.json", tmp_path / "ds" / "images", H36M)
    assert all(f.visible.sum() == 16 for f in as_h36m.frames)


def test_bone_lengths_are_an_adults_and_constant_across_one_subjects_poses(people):
    by_subject: dict[int, list[np.ndarray]] = {}
    for p in people:
        lengths = np.array([np.linalg.norm(p.joints[a] - p.joints[b]) for a, b in MUCO.skeleton])
        by_subject.setdefault(p.subject, []).append(lengths)
    assert len(by_subject) == 5
    per_subject = []
    for lengths in by_subject.values():
        lengths = np.stack(lengths)
        assert len(lengths) >= 20
        np.testing.assert_allclose(lengths, lengths[0][None].repeat(len(lengths), 0), atol=1e-6)
        per_subject.append(lengths[0])
    per_subject = np.stack(per_subject)
    assert np.ptp(per_subject, axis=0).max() > 10.0  # subjects differ
    thigh = MUCO.skeleton.index((MUCO.index("right_hip"), MUCO.index("right_knee")))
    assert 380 < per_subject[:, thigh].min() and per_subject[:, thigh].max() < 520
    # Left and right limbs of one subject have the same lengths.
    left = MUCO.skeleton.index((MUCO.index("left_hip"), MUCO.index("left_knee")))
    np.testing.assert_allclose(per_subject[:, thigh], per_subject[:, left])
    # An adult's height: head top to the lower ankle, standing straight, 1.4-2.1 m (spine + legs).
    standing = BONES["lower_spine"] + BONES["upper_spine"] + BONES["head_top"] + BONES["thigh"] + BONES["shin"]
    assert 1500 < standing < 2000


def test_joint_limits_hold_on_the_3d_joints(people):
    j = np.stack([p.joints for p in people])
    idx = MUCO.index
    for side in ("right", "left"):
        thigh = j[:, idx(f"{side}_knee")] - j[:, idx(f"{side}_hip")]
        shin = j[:, idx(f"{side}_ankle")] - j[:, idx(f"{side}_knee")]
        knee = angle(thigh, shin)
        assert knee.min() >= -1e-6 and knee.max() <= LIMITS["knee"][1] + 1e-6 and knee.max() > 100
        # Knees bend backward: the shin swings behind the thigh about the hips' left-pointing axis.
        lateral = j[:, idx("left_hip")] - j[:, idx("right_hip")]
        bent = knee > 5
        assert ((np.cross(thigh, shin) * lateral).sum(axis=1)[bent] > 0).all()
        upper = j[:, idx(f"{side}_elbow")] - j[:, idx(f"{side}_shoulder")]
        fore = j[:, idx(f"{side}_wrist")] - j[:, idx(f"{side}_elbow")]
        elbow = angle(upper, fore)
        assert elbow.min() >= -1e-6 and elbow.max() <= LIMITS["elbow"][1] + 1e-6 and elbow.max() > 110
    # The body is one person: hips and shoulders face the same way (spine twist is limited).
    assert (side_agreement(j, MUCO) > np.cos(np.radians(2 * LIMITS["spine_twist"][1] + 1))).all()
    # Every yaw: seen from the front and from the back (the camera's z is forward).
    facing = np.cross(j[:, idx("left_hip")] - j[:, idx("right_hip")], j[:, idx("thorax")] - j[:, idx("pelvis")])
    toward = facing[:, 2] < 0
    assert 0.3 < toward.mean() < 0.7


def test_rendered_crop_and_the_h36m17_variant():
    rgb, person = render(5, 0, "h36m17")
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8 and person.joints.shape == (17, 3)
    again, _ = render(5, 0, "h36m17")
    np.testing.assert_array_equal(rgb, again)
    # One person whichever set labels it: the same picture, the shared joints at the same places.
    muco_rgb, muco = render(5, 0)
    np.testing.assert_array_equal(muco_rgb, rgb)
    for name in H36M.names:
        if name in MUCO.names:
            np.testing.assert_allclose(muco.joints[MUCO.index(name)], person.joints[H36M.index(name)])
    assert person.camera == muco.camera and np.std(rgb) > 10
