"""COCO keypoint AP (mdeploy.evaluate.oks) through pycocotools, on the real release and the real split.

- the COCO-18 -> COCO-17 mapping is by name: the neck is dropped, the rest land on their joints;
- the ground truth fed back as detections scores AP = AR = 1.0 (in either coordinate
  convention, and with the file's keypoints listed in another order);
- the real tf-openpose `mobilenet_thin` on ../shared/data/realkp/coco (4 images, 14 labelled
  people, 12 with keypoints) scores a real AP (measured 0.52, AP50 0.91), and the same people
  with their parts in the wrong order (left/right swapped, shuffled) score near zero;
- crowd regions and people without keypoints are ignored, nobody found scores 0;
- bad files are clear InputErrors.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from mdeploy.errors import InputError
from mdeploy.evaluate.oks import COCO18_TO_COCO17, joint_mapping, keypoint_ap, load_ground_truth
from mdeploy.evaluate.paf import Person, decode_people, split_output
from mdeploy.keypoints import get_keypoint_set
from tests.evaluate.conftest import REAL_COCO_JSON

COCO18 = get_keypoint_set("coco18")
COCO17 = get_keypoint_set("coco17")

needs_split = pytest.mark.skipif(not REAL_COCO_JSON.is_file(), reason="the real COCO split is not here: ../shared is absent")


def _split() -> dict:
    import json

    return json.loads(REAL_COCO_JSON.read_text())


def ground_truth_people(coco: dict, *, skip=(), pixels: bool = False) -> dict[int, list[Person]]:
    """Every labelled person with keypoints as a decoded COCO-18 person (the neck absent)."""
    names = coco["categories"][0]["keypoints"]
    sizes = {img["id"]: (img["width"], img["height"]) for img in coco["images"]}
    out: dict[int, list[Person]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        if ann["num_keypoints"] == 0 or ann["id"] in skip:
            continue
        w, h = (1.0, 1.0) if pixels else sizes[ann["image_id"]]
        kps = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)
        keypoints = np.zeros((len(COCO18), 3), np.float32)
        present = np.zeros(len(COCO18), bool)
        for j, name in enumerate(names):
            if kps[j, 2] > 0:
                k = COCO18.index(name)
                keypoints[k] = (kps[j, 0] / w, kps[j, 1] / h, 1.0)
                present[k] = True
        out[ann["image_id"]].append(Person(keypoints, present, 1.0, {}))
    return out


def reordered(people: dict, order) -> dict:
    order = list(order)
    return {k: [Person(p.keypoints[order], p.present[order], p.score, {}) for p in ps] for k, ps in people.items()}


# ------------------------------------------------------------------- the mapping


def test_coco18_maps_onto_coco17_by_name_and_drops_the_neck():
    mapping = joint_mapping("coco18")
    assert mapping == COCO18_TO_COCO17 and mapping.dropped == ("neck",)
    assert len(mapping.source) == 17 and None not in mapping.source
    for j, name in enumerate(COCO17.names):
        assert COCO18.names[mapping.source[j]] == name
    assert mapping.source[COCO17.index("left_eye")] == 15 and mapping.source[COCO17.index("right_ankle")] == 10
    with pytest.raises(InputError, match="lacks COCO joints"):
        joint_mapping("aic14")  # no eyes or ears: COCO AP cannot score it


# ------------------------------------------------------------------- ground truth as detections


@needs_split
def test_ground_truth_as_detections_scores_one():
    coco = _split()
    result = keypoint_ap(coco, ground_truth_people(coco))
    assert result.ap == pytest.approx(1.0) and result.ap50 == pytest.approx(1.0) and result.ar == pytest.approx(1.0)
    assert (result.images, result.people, result.people_with_keypoints, result.detections) == (4, 14, 12, 12)
    assert "not scored: neck" in result.mapping
    pixels = keypoint_ap(coco, ground_truth_people(coco, pixels=True), normalized=False)
    assert pixels.ap == pytest.approx(1.0)
    # file names work as image keys
    by_name = {img["file_name"]: ground_truth_people(coco)[img["id"]] for img in coco["images"]}
    assert keypoint_ap(coco, by_name).ap == pytest.approx(1.0)


@needs_split
def test_a_file_listing_its_keypoints_in_another_order_is_read_by_name():
    coco = _split()
    order = np.random.default_rng(3).permutation(17)
    shuffled = copy.deepcopy(coco)
    shuffled["categories"][0]["keypoints"] = [coco["categories"][0]["keypoints"][i] for i in order]
    for ann in shuffled["annotations"]:
        kps = np.asarray(ann["keypoints"]).reshape(17, 3)[order]
        ann["keypoints"] = kps.reshape(-1).tolist()
    gt = load_ground_truth(shuffled)
    assert gt["categories"][0]["keypoints"] == list(COCO17.names)
    assert [a["keypoints"] for a in gt["annotations"]] == [
        [float(v) if i % 3 < 2 else int(v) for i, v in enumerate(a["keypoints"])] for a in coco["annotations"]
    ]
    assert keypoint_ap(shuffled, ground_truth_people(coco)).ap == pytest.approx(1.0)


@needs_split
def test_crowd_regions_and_people_without_keypoints_are_ignored_and_nobody_scores_zero():
    coco = _split()
    crowd = copy.deepcopy(coco)
    target = next(a for a in crowd["annotations"] if a["num_keypoints"] > 0 and a["image_id"] == 197388)
    target["iscrowd"] = 1
    missed = keypoint_ap(crowd, ground_truth_people(coco, skip={target["id"]}))
    assert missed.ap == pytest.approx(1.0) and missed.ar == pytest.approx(1.0) and missed.people == 13
    # the same person missed while labelled costs recall
    assert keypoint_ap(coco, ground_truth_people(coco, skip={target["id"]})).ar < 0.95
    nobody = keypoint_ap(coco, {})
    assert nobody.ap == 0.0 and nobody.ar == 0.0 and nobody.detections == 0 and nobody.people == 14


# ------------------------------------------------------------------- the real release


@pytest.fixture(scope="module")
def release_people(thin_release):
    return {name: decode_people(*split_output(out)) for name, out in thin_release.outputs.items()}


def test_the_release_scores_a_real_ap_and_a_scrambled_order_scores_none(thin_release, release_people):
    result = keypoint_ap(thin_release.coco, release_people)
    # measured here (2-core CPU, TF 2.21): AP 0.52, AP50 0.91, AP75 0.55, AR 0.575 with 12 detections
    assert 0.35 < result.ap < 1.0 and result.ap50 > 0.7 and result.ar > 0.4, result
    assert result.detections == 12 and result.people_with_keypoints == 12
    assert result.ap_medium is not None and result.ap_large is not None
    flipped = keypoint_ap(thin_release.coco, reordered(release_people, COCO18.flip_permutation()))
    shuffled = keypoint_ap(thin_release.coco, reordered(release_people, np.random.default_rng(0).permutation(18)))
    assert flipped.ap < result.ap / 3 and shuffled.ap < result.ap / 3, (result.ap, flipped.ap, shuffled.ap)


def test_pixel_coordinates_score_the_same_as_fractions(thin_release):
    sizes = {img["file_name"]: (img["height"], img["width"]) for img in thin_release.coco["images"]}
    pixels = {n: decode_people(*split_output(o), input_size=sizes[n]) for n, o in thin_release.outputs.items()}
    fractions = {n: decode_people(*split_output(o)) for n, o in thin_release.outputs.items()}
    a = keypoint_ap(thin_release.coco, pixels, normalized=False)
    b = keypoint_ap(thin_release.coco, fractions)
    assert a.ap == pytest.approx(b.ap) and a.ar == pytest.approx(b.ar)


# ------------------------------------------------------------------- bad input


def _minimal(**changes) -> dict:
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 900.0, "bbox": [10, 10, 30, 30],
                         "num_keypoints": 1, "keypoints": [20, 20, 2] + [0, 0, 0] * 16}],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.names)}],
    }
    coco.update(changes)
    return coco


def test_bad_coco_files_are_clear_input_errors(tmp_path):
    assert keypoint_ap(_minimal(), {}).people == 1  # the minimal file itself is fine
    with pytest.raises(InputError, match="no labelled people"):
        keypoint_ap(_minimal(annotations=[]), {})
    crowd_only = _minimal()
    crowd_only["annotations"][0]["iscrowd"] = 1
    with pytest.raises(InputError, match="no labelled people"):
        keypoint_ap(crowd_only, {})
    with pytest.raises(InputError, match="no keypoint category"):
        keypoint_ap(_minimal(categories=[{"id": 1, "name": "person"}]), {})
    unlabelled = _minimal()
    unlabelled["annotations"][0]["keypoints"] = [0, 0, 0] * 17
    with pytest.raises(InputError, match="no labelled keypoints"):
        keypoint_ap(unlabelled, {})
    short = _minimal()
    short["annotations"][0]["keypoints"] = [1, 1, 2] * 14
    with pytest.raises(InputError, match="42 keypoint values"):
        keypoint_ap(short, {})
    with pytest.raises(InputError, match="lack COCO joints"):
        keypoint_ap(_minimal(categories=[{"id": 1, "name": "person", "keypoints": list(COCO17.names[:14]) + ["neck", "head_top", "pelvis"]}]), {})
    with pytest.raises(InputError, match="not a COCO file"):
        keypoint_ap({"images": []}, {})
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="cannot read"):
        keypoint_ap(tmp_path / "broken.json", {})
    person = Person(np.zeros((18, 3), np.float32), np.ones(18, bool), 0.5, {})
    with pytest.raises(InputError, match="does not list"):
        keypoint_ap(_minimal(), {"b.jpg": [person]})
    no_size = _minimal(images=[{"id": 1, "file_name": "a.jpg"}])
    with pytest.raises(InputError, match="no width/height"):
        keypoint_ap(no_size, {1: [person]})
    assert keypoint_ap(no_size, {1: [person]}, normalized=False).detections == 1
    with pytest.raises(InputError, match="18 parts"):
        keypoint_ap(_minimal(), {1: [Person(np.zeros((14, 3), np.float32), np.ones(14, bool), 0.5, {})]})
