"""Synthetic multi-person scenes (mdeploy.data.synthetic_multi): reproducible, 2 to 5 overlapping
figures, labels in COCO-17 or COCO-18 where the figures are drawn, a COCO file mdeploy reads."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from mdeploy.data.synthetic_multi import MultiConfig, generate, render_scene
from mdeploy.errors import InputError
from mdeploy.keypoints import get_keypoint_set

COCO17 = get_keypoint_set("coco17")
COCO18 = get_keypoint_set("coco18")
SIZE = 256


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(11, i, SIZE) for i in range(10)]


def test_same_seed_and_index_same_scene_otherwise_another():
    a, b, c = render_scene(4, 2, 128), render_scene(4, 2, 128), render_scene(4, 3, 128)
    assert hashlib.sha256(a.image.tobytes()).digest() == hashlib.sha256(b.image.tobytes()).digest()
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    assert not np.array_equal(a.image, c.image)


def test_scenes_hold_two_to_five_overlapping_people(scenes):
    counts = [len(s.keypoints) for s in scenes]
    assert min(counts) >= 2 and max(counts) <= 5 and len(set(counts)) >= 3
    overlapping = 0
    for s in scenes:
        assert s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8
        assert s.keypoints.shape == (len(s.keypoints), 17, 3) and s.boxes.shape == (len(s.keypoints), 4)
        assert set(np.unique(s.keypoints[:, :, 2])) <= {0.0, 1.0, 2.0}
        x0, x1 = s.boxes[:, 0], s.boxes[:, 0] + s.boxes[:, 2]
        overlapping += sum(x0[j] < x1[i] and x0[i] < x1[j] for i in range(len(x0)) for j in range(i + 1, len(x0)))
        assert np.all(s.areas > 0)
    assert overlapping >= len(scenes)  # figures stand in front of each other, not in a row
    hidden = sum(int((s.keypoints[:, :, 2] == 1).sum()) for s in scenes)
    assert hidden > 0  # joints covered by a figure in front are labelled hidden


def test_labels_are_anatomically_consistent(scenes):
    people = np.concatenate([s.keypoints for s in scenes])
    idx = COCO17.index
    both = (people[:, idx("left_eye"), 2] > 0) & (people[:, idx("right_eye"), 2] > 0) & (people[:, idx("nose"), 2] > 0)
    assert both.sum() >= 20
    # figures face the camera: their left eye is on the image right; the nose is between and below the eyes
    left, right, nose = people[both, idx("left_eye")], people[both, idx("right_eye")], people[both, idx("nose")]
    assert np.mean(left[:, 0] > right[:, 0]) > 0.9
    assert np.mean((nose[:, 0] > np.minimum(left[:, 0], right[:, 0])) & (nose[:, 0] < np.maximum(left[:, 0], right[:, 0]))) > 0.9
    assert np.mean(nose[:, 1] > (left[:, 1] + right[:, 1]) / 2) > 0.9
    # the head is above the hips
    hips = (people[:, idx("left_hip"), 2] > 0) & (people[:, idx("nose"), 2] > 0)
    assert np.mean(people[hips, idx("nose"), 1] < people[hips, idx("left_hip"), 1]) > 0.95


def test_labelled_joints_lie_on_their_figure(scenes):
    """A labelled joint is inside its own figure's box; a joint outside the frame is unlabelled."""
    for s in scenes:
        for kps, (x, y, w, h) in zip(s.keypoints, s.boxes):
            on = kps[:, 2] > 0
            assert np.all((kps[on, 0] >= x - 1) & (kps[on, 0] <= x + w + 1) & (kps[on, 1] >= y - 1) & (kps[on, 1] <= y + h + 1))
            assert np.all((kps[on, :2] >= 0) & (kps[on, :2] < SIZE))


def test_coco18_scenes_add_the_neck_between_the_shoulders():
    s17, s18 = render_scene(5, 1, SIZE), render_scene(5, 1, SIZE, keypoints="coco18")
    np.testing.assert_array_equal(s17.image, s18.image)
    assert s18.keypoints.shape[1:] == (18, 3)
    for name in COCO17.names:
        np.testing.assert_array_equal(s18.keypoints[:, COCO18.index(name)], s17.keypoints[:, COCO17.index(name)])
    ls, rs = s17.keypoints[:, COCO17.index("left_shoulder")], s17.keypoints[:, COCO17.index("right_shoulder")]
    both = (ls[:, 2] > 0) & (rs[:, 2] > 0)
    np.testing.assert_allclose(s18.keypoints[both, COCO18.index("neck"), :2], (ls[both, :2] + rs[both, :2]) / 2, atol=1e-4)


def test_bad_settings_are_clear_errors():
    with pytest.raises(InputError, match="people per scene"):
        MultiConfig(count=1, people=(3, 2))
    with pytest.raises(InputError, match="coco17 or coco18"):
        render_scene(0, 0, SIZE, keypoints="aic14")


def test_written_dataset_is_a_multi_person_coco_file_mdeploy_reads(tmp_path):
    from mdeploy.data.coco import load_coco

    data = generate(MultiConfig(count=3, seed=2, size=128), tmp_path, workers=1)
    on_disk = json.loads((tmp_path / "annotations.json").read_text())
    assert on_disk == json.loads(json.dumps(data))
    assert on_disk["categories"][0]["keypoints"] == list(COCO17.names)
    per_image = {}
    for ann in on_disk["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
        assert len(ann["keypoints"]) == 51 and ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3])
    assert len(per_image) == 3 and min(per_image.values()) >= 2
    assert len({a["id"] for a in on_disk["annotations"]}) == len(on_disk["annotations"])
    ds = load_coco(tmp_path / "annotations.json", tmp_path / "images", COCO17)
    assert ds.people == len(on_disk["annotations"]) and ds.crop == "person"
