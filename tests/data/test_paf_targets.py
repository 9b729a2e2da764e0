"""Heatmap, PAF and mask targets of the multi-person models (mdeploy.data.paf_targets).

Hand-placed people with known answers (a PAF is the unit vector on its limb and zero away
from it, a heatmap peaks at its joint, overlapping people average / take the maximum,
unlabelled joints leave no trace, crowd regions are masked), the COCO-17 -> COCO-18 mapping,
COCO's segmentation formats (checked against pycocotools where it is installed), and the
round trip: the targets of synthetic multi-person scenes decoded by tf-openpose's rules
(mdeploy.evaluate.paf) give back the people, with their parts in place.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mdeploy.data.paf_targets import (
    COCO18_FROM_COCO17,
    TargetSettings,
    coco17_to_coco18,
    coco_people,
    encode,
    ignore_mask,
    rle_counts,
    rle_decode,
    segmentation_mask,
)
from mdeploy.errors import InputError
from mdeploy.keypoints import TF_OPENPOSE_COCO18, get_keypoint_set
from tests.helpers import SHARED

COCO18 = get_keypoint_set("coco18")
COCO17 = get_keypoint_set("coco17")
LAYOUT = TF_OPENPOSE_COCO18
SIZE = (160, 240)  # input (height, width) -> a 20 x 30 grid at stride 8
STRIDE = 8
REAL_COCO = SHARED / "data" / "realkp" / "coco"


def person(**joints) -> np.ndarray:
    """One COCO-18 person [18, 3] from name=(x, y) (visible) or name=(x, y, v), input pixels."""
    out = np.zeros((COCO18.__len__(), 3), np.float32)
    for name, value in joints.items():
        out[COCO18.index(name)] = (*value, 2) if len(value) == 2 else value
    return out


def cell_of(x: float, y: float) -> tuple[int, int]:
    """(row, col) of the grid cell holding input pixel coordinate (x, y)."""
    return int(y // STRIDE), int(x // STRIDE)


def paf_of(targets, a: str, b: str) -> np.ndarray:
    """[rows, cols, 2]: the PAF channels (x, y) of limb a -> b."""
    cx, cy = LAYOUT.paf_channels[LAYOUT.limbs.index((COCO18.index(a), COCO18.index(b)))]
    return targets.pafs[:, :, [cx, cy]]


def test_the_paf_is_the_unit_vector_on_the_limb_and_zero_away_from_it():
    # neck (60, 44) -> right hip (108, 108): length 80, direction (0.6, 0.8); midpoint (84, 76) is a cell centre.
    targets = encode(person(neck=(60, 44), right_hip=(108, 108))[None], SIZE)
    field = paf_of(targets, "neck", "right_hip")
    np.testing.assert_allclose(field[cell_of(84, 76)], (0.6, 0.8), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(field, axis=2)[field.any(axis=2)], 1.0, atol=1e-6)  # unit or zero
    assert np.all(field[cell_of(200, 20)] == 0) and np.all(field[cell_of(20, 140)] == 0)
    # zero beyond the PAF width (1 cell) across the limb: 3 cells to the side of the midpoint
    side = np.array([84.0, 76.0]) + 3 * STRIDE * np.array([0.8, -0.6])
    assert np.all(field[cell_of(*side)] == 0)
    # only this limb's two channels are set, and the heatmaps have just the two joints
    others = np.delete(targets.pafs, list(LAYOUT.paf_channels[LAYOUT.limbs.index((1, 8))]), axis=2)
    assert not others.any()
    assert targets.pafs.shape == (20, 30, 38) and targets.heatmaps.shape == (20, 30, 19) and targets.mask.shape == (20, 30, 1)


def test_the_heatmap_peaks_at_the_joint_and_the_background_is_its_complement():
    targets = encode(person(nose=(101.0, 37.0), left_ankle=(30.0, 150.0))[None], SIZE)
    nose = targets.heatmaps[:, :, COCO18.index("nose")]
    assert np.unravel_index(nose.argmax(), nose.shape) == cell_of(101.0, 37.0)
    # the cell centre (100, 36) is 1/8 cell from the joint on each axis: exp(-(1/64 + 1/64) / 2)
    assert nose.max() == pytest.approx(math.exp(-1 / 64), abs=1e-6)
    assert nose[cell_of(180, 120)] == 0  # far away: cut to zero, not a tail
    background = targets.heatmaps[:, :, LAYOUT.background]
    np.testing.assert_allclose(background, 1 - targets.heatmaps[:, :, :18].max(axis=2), atol=1e-6)
    assert background[cell_of(180, 120)] == 1.0 and background.min() < 0.05


def test_overlapping_people_take_the_maximum_of_heatmaps_and_the_mean_of_pafs():
    a = person(neck=(60, 60), right_shoulder=(140, 60), nose=(100, 36))
    b = person(neck=(140, 68), right_shoulder=(60, 68), nose=(108, 36))  # the same limb, the other way
    targets = encode(np.stack([a, b]), SIZE)
    nose = targets.heatmaps[:, :, COCO18.index("nose")]
    single = encode(a[None], SIZE).heatmaps[:, :, COCO18.index("nose")]
    assert nose.max() <= 1.0 and nose[cell_of(100, 36)] == pytest.approx(single[cell_of(100, 36)])  # max, not sum
    field = paf_of(targets, "neck", "right_shoulder")
    np.testing.assert_allclose(field[cell_of(100, 60)], (0.0, 0.0), atol=1e-6)  # (1, 0) and (-1, 0) averaged
    np.testing.assert_allclose(field[cell_of(100, 48)], (1.0, 0.0), atol=1e-6)  # only a's limb reaches here
    np.testing.assert_allclose(field[cell_of(100, 76)], (-1.0, 0.0), atol=1e-6)  # only b's


def test_unlabelled_joints_leave_no_heatmap_and_no_limb():
    p = person(neck=(60, 44), right_hip=(108, 108, 0), left_hip=(40, 100, 1))  # hidden (v=1) still counts
    targets = encode(p[None], SIZE)
    assert not targets.heatmaps[:, :, COCO18.index("right_hip")].any()
    assert targets.heatmaps[:, :, COCO18.index("left_hip")].max() > 0.8
    assert not paf_of(targets, "neck", "right_hip").any() and paf_of(targets, "neck", "left_hip").any()


def test_nobody_is_all_background_and_wrong_shapes_are_errors():
    targets = encode(np.zeros((0, 18, 3)), SIZE)
    assert np.all(targets.heatmaps[:, :, 18] == 1) and not targets.heatmaps[:, :, :18].any() and not targets.pafs.any()
    assert np.all(targets.mask == 1)
    with pytest.raises(InputError, match=r"\[P, 18, 3\]"):
        encode(np.zeros((2, 17, 3)), SIZE)
    with pytest.raises(InputError, match="multiple of the output stride"):
        encode(np.zeros((1, 18, 3)), (100, 240))
    wider = encode(person(nose=(50, 50))[None], SIZE, settings=TargetSettings(sigma=2.0))
    assert (wider.heatmaps[:, :, 0] > 0.1).sum() > (encode(person(nose=(50, 50))[None], SIZE).heatmaps[:, :, 0] > 0.1).sum()


# --------------------------------------------------------------------------- COCO-17 -> COCO-18


def test_coco17_maps_to_coco18_by_name_with_the_neck_the_mean_of_the_shoulders():
    kps = np.zeros((2, 17, 3), np.float32)
    kps[:, :, 0] = np.arange(17) * 10
    kps[:, :, 1] = np.arange(17) + 100
    kps[:, :, 2] = 2
    kps[0, COCO17.index("left_shoulder"), 2] = 1  # hidden: the neck is labelled, hidden
    kps[1, COCO17.index("right_shoulder")] = 0  # unlabelled: no neck
    out = coco17_to_coco18(kps)
    assert out.shape == (2, 18, 3)
    for name in COCO17.names:
        np.testing.assert_array_equal(out[:, COCO18.index(name)], kps[:, COCO17.index(name)])
    ls, rs = kps[0, COCO17.index("left_shoulder")], kps[0, COCO17.index("right_shoulder")]
    np.testing.assert_allclose(out[0, COCO18.index("neck")], ((ls[0] + rs[0]) / 2, (ls[1] + rs[1]) / 2, 1))
    assert np.all(out[1, COCO18.index("neck")] == 0)
    assert len(COCO18_FROM_COCO17) == 18 and COCO18_FROM_COCO17[1] == ("left_shoulder", "right_shoulder")
    with pytest.raises(InputError, match="17, 3"):
        coco17_to_coco18(np.zeros((18, 3)))


# --------------------------------------------------------------------------- crowd regions


def test_a_crowd_region_is_masked_by_the_fraction_of_each_cell_it_covers():
    crowd = {"iscrowd": 1, "segmentation": [[16, 16, 80, 16, 80, 60, 16, 60]], "keypoints": [0] * 51}
    labelled = {"iscrowd": 0, "segmentation": [[120, 20, 200, 20, 200, 100]], "keypoints": [150, 50, 2] + [0] * 48}
    unlabelled = {"iscrowd": 0, "segmentation": [[160, 120, 232, 120, 232, 152, 160, 152]], "keypoints": [0] * 51}
    ignore = ignore_mask([crowd, labelled, unlabelled], *SIZE)
    assert ignore[30, 40] and not ignore[50, 150] and ignore[130, 200]
    assert not ignore_mask([crowd, labelled, unlabelled], *SIZE, unlabelled_people=False)[130, 200]
    mask = encode(np.zeros((0, 18, 3)), SIZE, ignore=ignore).mask[:, :, 0]
    assert mask[cell_of(40, 30)] == 0 and mask[cell_of(150, 50)] == 1 and mask[cell_of(200, 130)] == 0
    assert 0 < mask[cell_of(84, 30)] < 1  # the polygon's right edge (x = 80) crosses this cell
    with pytest.raises(InputError, match="input size"):
        encode(np.zeros((0, 18, 3)), SIZE, ignore=np.zeros((10, 10)))


def test_run_length_segmentations_decode_column_major():
    # 3 x 4 image, column-major runs: 2 zeros, 3 ones, 7 zeros -> (2,0), (0,1), (1,1)
    mask = rle_decode([2, 3, 7], 3, 4)
    assert mask.sum() == 3 and mask[2, 0] and mask[0, 1] and mask[1, 1]
    assert segmentation_mask({"size": [3, 4], "counts": [2, 3, 7]}, 3, 4).sum() == 3
    with pytest.raises(InputError, match="runs past"):
        rle_decode([2, 30], 3, 4)


def test_compressed_rle_matches_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(1)
    truth = np.zeros((37, 53), np.uint8)
    for _ in range(6):
        y, x = rng.integers(0, 30), rng.integers(0, 45)
        truth[y:y + rng.integers(2, 9), x:x + rng.integers(2, 9)] = 1
    encoded = mask_utils.encode(np.asfortranarray(truth))
    counts = rle_counts(encoded["counts"])
    assert sum(counts) == truth.size
    np.testing.assert_array_equal(segmentation_mask({"size": encoded["size"], "counts": encoded["counts"].decode()}, 37, 53), truth.astype(bool))


# --------------------------------------------------------------------------- decoding the targets


def _match(decoded, truth: np.ndarray) -> list[int]:
    """For each decoded person, the true person nearest by median part distance."""
    out = []
    for p in decoded:
        shared = [p.present & (t[:, 2] > 0) for t in truth]
        dists = [np.median(np.hypot(*(p.keypoints[s, :2] - t[s, :2]).T)) if s.any() else np.inf for s, t in zip(shared, truth)]
        out.append(int(np.argmin(dists)))
    return out


def test_decoding_the_targets_of_synthetic_scenes_gives_back_the_people():
    """Every person once, with their parts within one cell, except where decoding cannot tell.

    Two limits of the release's decoding, not of the targets, are left out of the part check:
    a part within a cell of the border (the zero-padded smoothing pulls its peak inward) and a
    part within 3 cells of the same part of another person (the smoothed peaks merge). Where
    two people's limbs cross, their PAFs average and a limb can be given to the wrong person:
    at most 1 % of the parts.
    """
    from mdeploy.data.synthetic_multi import render_scene
    from mdeploy.evaluate.paf import decode_people

    size = 368
    errors, people = [], 0
    for index in range(6):
        scene = render_scene(3, index, size, keypoints="coco18")
        truth = scene.keypoints
        targets = encode(truth, (size, size))
        decoded = decode_people(targets.heatmaps, targets.pafs, input_size=(size, size))
        assert len(decoded) == len(truth), index  # 2 to 5 people, each found once
        matched = _match(decoded, truth)
        assert sorted(matched) == list(range(len(truth))), index
        for p, i in zip(decoded, matched):
            t = truth[i]
            labelled = t[:, 2] > 0
            assert not (p.present & ~labelled).any()  # no part where there is none
            assert p.present.sum() >= 0.5 * labelled.sum()
            inside = np.all((t[:, :2] >= STRIDE) & (t[:, :2] < size - STRIDE), axis=1)
            others = np.delete(truth, i, axis=0)
            apart = np.all((others[:, :, 2] == 0) | (np.hypot(*(others[:, :, :2] - t[None, :, :2]).transpose(2, 0, 1)) >= 3 * STRIDE), axis=0)
            check = p.present & inside & apart
            errors += list(np.hypot(*(p.keypoints[check, :2] - t[check, :2]).T))
        people += len(decoded)
    errors = np.asarray(errors)
    assert people >= 15 and errors.size > 200
    assert np.median(errors) < 0.5 * STRIDE
    assert np.mean(errors <= STRIDE) >= 0.99, np.sort(errors)[-5:]  # parts within one cell


@pytest.mark.skipif(not (REAL_COCO / "test_coco.json").is_file(), reason="the real COCO split is not here: ../shared is absent")
def test_the_targets_of_real_coco_people_decode_back_to_them():
    """The 4 real photos' 12 labelled people (and 2 outlined without keypoints, masked out)."""
    import json

    from mdeploy.evaluate.paf import decode_people

    coco = json.loads((REAL_COCO / "test_coco.json").read_text())
    names = tuple(coco["categories"][0]["keypoints"])
    size = (368, 432)  # the release's input: each photo resized to it, keypoints with it
    total, errors = 0, []
    for image in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        people = coco_people(anns, names)
        assert len(people) == sum(1 for a in anns if a["num_keypoints"] > 0)
        scale = np.array([size[1] / image["width"], size[0] / image["height"]], np.float32)
        people[:, :, :2] *= scale
        ignore = ignore_mask([{**a, "segmentation": [(np.reshape(poly, (-1, 2)) * scale).reshape(-1).tolist() for poly in a["segmentation"]]}
                              for a in anns], *size)
        targets = encode(people, size, ignore=ignore)
        if any(a["num_keypoints"] == 0 for a in anns):
            assert targets.mask.min() < 1  # an outlined person without keypoints is not taught as background
        decoded = decode_people(targets.heatmaps, targets.pafs, input_size=size)
        assert len(decoded) == len(people), image["file_name"]
        matched = _match(decoded, people)
        assert sorted(matched) == list(range(len(people)))
        for p, i in zip(decoded, matched):
            errors += list(np.hypot(*(p.keypoints[p.present, :2] - people[i, p.present, :2]).T))
        total += len(people)
    assert total == 12
    assert np.mean(np.asarray(errors) <= STRIDE) >= 0.97
