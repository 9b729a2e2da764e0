"""The multi-person tf.data pipeline (mdeploy.data.pipeline_multi): whole images with everybody in
them, reproducible and resumable, flips that swap left and right in the PAFs too, and ignore
regions (crowds, people outlined without keypoints) that zero the loss mask where they lie."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mdeploy.data.coco import load_coco
from mdeploy.data.paf_targets import encode
from mdeploy.data.pipeline import Augment
from mdeploy.data.pipeline_multi import ImageRecord, build_multi_dataset, group_by_image
from mdeploy.data.synthetic_multi import MultiConfig, generate
from mdeploy.errors import InputError
from mdeploy.keypoints import TF_OPENPOSE_COCO18, get_keypoint_set
from mdeploy.spec import Preprocessing
from tests.helpers import SHARED

COCO18 = get_keypoint_set("coco18")
LAYOUT = TF_OPENPOSE_COCO18
SCENE = 256
REAL_COCO = SHARED / "data" / "realkp" / "coco"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """8 synthetic scenes written as a COCO-17 file, as COCO itself is (no neck)."""
    folder = tmp_path_factory.mktemp("multi")
    generate(MultiConfig(count=8, seed=5, size=SCENE), folder, workers=1)
    return folder


@pytest.fixture(scope="module")
def records(scenes):
    return group_by_image(load_coco(scenes / "annotations.json", scenes / "images", COCO18))


def batches(d, n=None) -> list:
    out = []
    for x, (heat, pafs, mask) in d.take(n) if n else d:
        out.append([x.numpy(), heat.numpy(), pafs.numpy(), mask.numpy()])
    return out


def test_group_by_image_gives_every_person_of_an_image_with_the_neck_between_the_shoulders(scenes, records):
    data = json.loads((scenes / "annotations.json").read_text())
    per_image = [sum(a["image_id"] == img["id"] for a in data["annotations"]) for img in data["images"]]
    assert [len(r.people) for r in records] == per_image and min(per_image) >= 2
    assert [r.path.name for r in records] == [img["file_name"] for img in data["images"]]
    people = np.concatenate([r.people for r in records])
    assert people.shape[1:] == (18, 3)
    neck, ls, rs = COCO18.index("neck"), COCO18.index("left_shoulder"), COCO18.index("right_shoulder")
    both = (people[:, ls, 2] > 0) & (people[:, rs, 2] > 0)
    assert both.sum() >= 10 and np.all(people[both, neck, 2] > 0) and np.all(people[~both, neck, 2] == 0)
    np.testing.assert_allclose(people[both, neck, :2], (people[both, ls, :2] + people[both, rs, :2]) / 2, atol=1e-4)
    assert all(r.ignore == () for r in records)  # nothing to ignore in synthetic scenes


def test_batches_line_up_with_the_model_grid_and_encode_the_people(records):
    pre = Preprocessing((128, 96), "bgr", (0, 255), resize="letterbox")
    (x, heat, pafs, mask), = batches(build_multi_dataset(records, pre, batch_size=4, augment=None, shuffle=False), 1)
    assert x.shape == (4, 128, 96, 3) and heat.shape == (4, 16, 12, 19) and pafs.shape == (4, 16, 12, 38)
    assert mask.shape == (4, 16, 12, 1) and np.all(mask == 1)
    # the targets are paf_targets.encode of the people, mapped by the preprocessing geometry
    a = pre.geometry(SCENE, SCENE)
    people = records[1].people.copy()
    people[..., 0] = people[..., 0] * a.scale_x + a.offset_x
    people[..., 1] = people[..., 1] * a.scale_y + a.offset_y
    want = encode(people, pre.size)
    np.testing.assert_allclose(heat[1], want.heatmaps, atol=1e-5)
    np.testing.assert_allclose(pafs[1], want.pafs, atol=1e-5)
    assert heat[1][..., :18].max() > 0.9 and np.abs(pafs[1]).max() > 0.99


def test_same_seed_same_batches_and_a_resumed_stream_continues_exactly(records):
    pre = Preprocessing((64, 64), "rgb", (0, 1))
    kwargs = dict(batch_size=3, epochs=2, augment=Augment(), shuffle=True)
    full = batches(build_multi_dataset(records, pre, seed=7, **kwargs))
    again = batches(build_multi_dataset(records, pre, seed=7, **kwargs))
    other = batches(build_multi_dataset(records, pre, seed=8, **kwargs))
    assert len(full) == 5  # 16 images in two epochs, batches of 3
    for a, b in zip(full, again):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(full[0][0], other[0][0])
    resumed = batches(build_multi_dataset(records, pre, seed=7, start_batch=3, **kwargs))
    assert len(resumed) == 2  # batch 3 spans the two epochs
    for k, batch in enumerate(resumed, start=3):
        for u, v in zip(batch, full[k]):
            np.testing.assert_array_equal(u, v)


def test_a_flip_mirrors_the_image_and_swaps_left_and_right_parts_and_limbs(records):
    import tensorflow as tf

    from mdeploy.data.pipeline import _augment_matrix
    from mdeploy.evaluate.paf import decode_people

    pre = Preprocessing((SCENE, SCENE), "rgb", (0, 255))
    aug, seed = Augment(scale=(1.0, 1.0), rotation=0.0, flip=True, shift=0.0), 3
    plain = batches(build_multi_dataset(records, pre, batch_size=1, augment=None, shuffle=False))
    flip = batches(build_multi_dataset(records, pre, batch_size=1, augment=aug, shuffle=False, seed=seed))
    flipped = [bool(_augment_matrix(aug, seed, tf.constant(i, tf.int64), SCENE, SCENE)[1]) for i in range(len(records))]
    assert 0 < sum(flipped) < len(records)
    perm = list(COCO18.flip_permutation())
    limb_of = {limb: k for k, limb in enumerate(LAYOUT.limbs)}
    mirrored_people = 0
    for i, was_flipped in enumerate(flipped):
        (x0, h0, p0, _), (x1, h1, p1, _) = plain[i], flip[i]
        if not was_flipped:
            np.testing.assert_array_equal(x1, x0)
            continue
        assert np.abs(x1[0] - x0[0][:, ::-1]).max() <= 1.0
        # part k of the flipped image is part perm[k] of the original, mirrored
        np.testing.assert_allclose(h1[0][:, :, :18], h0[0][:, ::-1, perm], atol=1e-5)
        # limb (a, b) of the flipped image is limb (perm a, perm b) of the original, its x reversed
        for k, (a, b) in enumerate(LAYOUT.limbs):
            (cx, cy), (ox, oy) = LAYOUT.paf_channels[k], LAYOUT.paf_channels[limb_of[(perm[a], perm[b])]]
            np.testing.assert_allclose(p1[0][:, :, cx], -p0[0][:, ::-1, ox], atol=1e-5)
            np.testing.assert_allclose(p1[0][:, :, cy], p0[0][:, ::-1, oy], atol=1e-5)
        # and the people decoded from the flipped targets are the original people mirrored
        before = decode_people(h0[0], p0[0], input_size=pre.size)
        after = decode_people(h1[0], p1[0], input_size=pre.size)
        assert len(after) == len(before) >= 2
        for person in before:
            mirror = person.keypoints[perm].copy()
            mirror[:, 0] = SCENE - mirror[:, 0]
            present = person.present[perm]
            dists = [np.median(np.hypot(*(q.keypoints[present, :2] - mirror[present, :2]).T)) for q in after]
            best = after[int(np.argmin(dists))]
            assert min(dists) <= 3.0 and np.array_equal(best.present, present)
            mirrored_people += 1
        # the figures face the camera, their left eye on the image's right; a mirrored figure still
        # faces the camera, so with left and right swapped its labels stay anatomically right
        le, re = COCO18.index("left_eye"), COCO18.index("right_eye")
        eyes = [(q.keypoints[le, 0], q.keypoints[re, 0]) for q in after if q.present[le] and q.present[re]]
        assert eyes and all(left > right for left, right in eyes)
    assert mirrored_people >= 4


def test_a_crowd_region_and_an_outlined_person_without_keypoints_zero_the_mask(scenes, tmp_path):
    data = json.loads((scenes / "annotations.json").read_text())
    # image 1: a crowd over the left quarter (uncompressed RLE, column-major: columns 0..63 all set)
    crowd = {"id": 900, "image_id": 1, "category_id": 1, "iscrowd": 1, "keypoints": [0] * 51, "num_keypoints": 0,
             "bbox": [0, 0, 64, SCENE], "area": 64 * SCENE,
             "segmentation": {"size": [SCENE, SCENE], "counts": [0, 64 * SCENE, SCENE * SCENE - 64 * SCENE]}}
    # image 2: a person outlined (polygon) without a labelled keypoint, bottom-right square
    outline = {"id": 901, "image_id": 2, "category_id": 1, "iscrowd": 0, "keypoints": [0] * 51, "num_keypoints": 0,
               "bbox": [192, 192, 64, 64], "area": 64 * 64, "segmentation": [[192, 192, 256, 192, 256, 256, 192, 256]]}
    data["annotations"] += [crowd, outline]
    source = tmp_path / "with_crowd.json"
    source.write_text(json.dumps(data))
    records = group_by_image(load_coco(source, scenes / "images", COCO18))
    assert len(records[0].ignore) == 1 and len(records[1].ignore) == 1 and all(not r.ignore for r in records[2:])
    assert len(records[0].people) == sum(a["image_id"] == 1 for a in data["annotations"]) - 1  # the crowd is no person

    # letterboxed: the 256 square lands at x 16..144 of a 160 x 128 input (scale 0.5), cells of 8 px
    pre = Preprocessing((128, 160), "rgb", (0, 255), resize="letterbox")
    (_, heat, _, mask), = batches(build_multi_dataset(records, pre, batch_size=3, augment=None, shuffle=False), 1)
    crowd_mask, outline_mask = mask[0, :, :, 0], mask[1, :, :, 0]
    assert np.all(crowd_mask[:, 2:6] == 0)  # x 16..48: the crowd
    assert np.all(crowd_mask[:, 7:] == 1) and np.all(crowd_mask[:, :2] == 1)  # beside it, and the letterbox bars
    assert np.all(outline_mask[12:16, 14:18] == 0)  # x 112..144, y 96..128
    assert np.all(outline_mask[:11] == 1) and np.all(outline_mask[:, :13] == 1)
    assert np.all(mask[2] == 1)
    assert heat[0][..., :18].max() > 0.9  # the labelled people of the crowded image are still there


@pytest.mark.skipif(not (REAL_COCO / "test_coco.json").is_file(), reason="the real COCO split is not here: ../shared is absent")
def test_real_coco_people_and_their_unlabelled_neighbours():
    """The 4 real photos: 12 labelled people become targets, the 2 outlined without keypoints are masked."""
    coco = json.loads((REAL_COCO / "test_coco.json").read_text())
    records = group_by_image(load_coco(REAL_COCO / "test_coco.json", REAL_COCO, COCO18))
    assert len(records) == 4 and sum(len(r.people) for r in records) == 12
    unlabelled = {img["file_name"] for img in coco["images"]
                  for a in coco["annotations"] if a["image_id"] == img["id"] and a["num_keypoints"] == 0}
    assert unlabelled and {r.path.name for r in records if r.ignore} == unlabelled
    pre = Preprocessing((368, 432), "bgr", (0, 255))
    for r, (_, heat, _, mask) in zip(records, batches(build_multi_dataset(records, pre, batch_size=1, shuffle=False))):
        assert (mask.min() < 1) == bool(r.ignore)
        assert heat[0][..., :18].max() > 0.9


def test_bad_records_are_clear_errors(records):
    pre = Preprocessing((64, 64), "rgb", (0, 1))
    with pytest.raises(InputError, match="no training images"):
        build_multi_dataset([], pre, batch_size=1)
    wrong = ImageRecord(records[0].path, SCENE, SCENE, np.zeros((2, 17, 3), np.float32))
    with pytest.raises(InputError, match=r"not \[P, 18, 3\]"):
        build_multi_dataset([wrong], pre, batch_size=1)
    with pytest.raises(InputError, match="multiple of the output stride"):
        build_multi_dataset(records, Preprocessing((60, 64), "rgb", (0, 1)), batch_size=1)
    nobody = ImageRecord(records[0].path, SCENE, SCENE, np.zeros((0, 18, 3), np.float32))
    (_, heat, pafs, mask), = batches(build_multi_dataset([nobody], pre, batch_size=1, augment=None), 1)
    assert heat[..., :18].max() == 0 and np.all(heat[..., 18] == 1) and not pafs.any() and np.all(mask == 1)
