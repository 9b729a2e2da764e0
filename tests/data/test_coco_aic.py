"""COCO-keypoints loading and the AI Challenger converter."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mdeploy.data.aic import convert_aic
from mdeploy.data.coco import load_coco
from mdeploy.errors import InputError
from mdeploy.keypoints import get_keypoint_set

AIC = get_keypoint_set("aic14")


def coco(tmp_path, anns, images=(("a.jpg", 100, 80),)):
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for name, w, h in images:
        Image.new("RGB", (w, h)).save(folder / name)
    data = {
        "images": [{"id": i + 1, "file_name": n, "width": w, "height": h} for i, (n, w, h) in enumerate(images)],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "keypoints": list(AIC.names)}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path, folder


def person(image_id=1, ann_id=1, labelled=14):
    kps = []
    for i in range(14):
        kps += [10.0 + i, 20.0 + i, 2] if i < labelled else [0, 0, 0]
    return {"id": ann_id, "image_id": image_id, "keypoints": kps, "num_keypoints": labelled, "bbox": [5, 5, 50, 60]}


def test_one_person_per_image_feeds_whole_images(tmp_path):
    ds = load_coco(*coco(tmp_path, [person()]), AIC)
    assert ds.crop == "image" and len(ds) == 1
    assert ds.samples[0].crop_box("image") == (0.0, 0.0, 100.0, 80.0)


def test_several_people_per_image_feed_person_crops(tmp_path):
    ds = load_coco(*coco(tmp_path, [person(1, 1), person(1, 2), person(1, 3, labelled=0)]), AIC)
    assert ds.crop == "person" and len(ds) == 2 and ds.skipped == 1
    x, y, w, h = ds.samples[0].crop_box("person")
    assert (w, h) == (75.0, 75.0) and (x + w / 2, y + h / 2) == (30.0, 35.0)


@pytest.mark.parametrize(
    ("anns", "message"),
    [
        ([{**person(), "keypoints": [1, 2, 2] * 17}], "annotation 1 has 17 keypoints, expected 14"),
        ([person(image_id=9)], "annotation 1 names unknown image 9"),
        ([person(labelled=0)], "no annotation with a labelled keypoint"),
    ],
)
def test_malformed_annotations(tmp_path, anns, message):
    with pytest.raises(InputError) as caught:
        load_coco(*coco(tmp_path, anns), AIC)
    assert message in caught.value.message


def test_missing_images_are_named(tmp_path):
    path, folder = coco(tmp_path, [person()])
    (folder / "a.jpg").unlink()
    with pytest.raises(InputError) as caught:
        load_coco(path, folder, AIC)
    assert caught.value.message == f"1 image(s) named in ann.json are missing from {folder}, e.g. a.jpg"


def test_not_json(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError) as caught:
        load_coco(tmp_path / "x.json", tmp_path / "images", AIC)
    assert "is not a JSON file" in caught.value.message


def test_ai_challenger_conversion(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (640, 480)).save(images / "img1.jpg")
    Image.new("RGB", (320, 240)).save(images / "img2.jpg")
    values = []
    for i in range(14):
        values += [100 + i, 200 + i, [1, 2, 3][i % 3]]
    raw = [
        {"image_id": "img1", "keypoint_annotations": {"human1": values, "human2": [0, 0, 3] * 14}, "human_annotations": {"human1": [50, 60, 250, 460]}},
        {"image_id": "img2", "keypoint_annotations": {"human1": [0, 0, 3] * 14}, "human_annotations": {}},
        {"image_id": "img3", "keypoint_annotations": {"human1": values}, "human_annotations": {}},
    ]
    (tmp_path / "aic.json").write_text(json.dumps(raw))
    report = convert_aic(tmp_path / "aic.json", images, tmp_path / "coco.json")
    assert report.to_json() == {"images": 1, "people": 1, "skipped_images": 2, "skipped_people": 2, "missing_files": 1}
    data = json.loads((tmp_path / "coco.json").read_text())
    assert data["images"] == [{"id": 1, "file_name": "img1.jpg", "width": 640, "height": 480}]
    (ann,) = data["annotations"]
    kps = np.asarray(ann["keypoints"]).reshape(14, 3)
    assert kps[0].tolist() == [100, 200, 2]  # AIC visible -> COCO 2
    assert kps[1].tolist() == [101, 201, 1]  # AIC occluded -> COCO 1
    assert kps[2].tolist() == [0, 0, 0]  # AIC not labelled -> COCO 0
    assert ann["bbox"] == [50, 60, 200, 400]
    ds = load_coco(tmp_path / "coco.json", images, AIC)
    assert len(ds) == 1


def test_ai_challenger_conversion_keeps_the_file_order_and_names_it(tmp_path):
    """AI Challenger lists the shoulders first and the head top 13th; the converted file says so and
    the reader puts every joint in its model channel (head top first) by name."""
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (640, 480)).save(images / "img1.jpg")
    values = []
    for i in range(14):
        values += [100 + 10 * i, 200 + 10 * i, 1]
    (tmp_path / "aic.json").write_text(json.dumps([{"image_id": "img1", "keypoint_annotations": {"human1": values}}]))
    convert_aic(tmp_path / "aic.json", images, tmp_path / "coco.json")
    names = json.loads((tmp_path / "coco.json").read_text())["categories"][0]["keypoints"]
    assert names[0] == "right_shoulder" and names[12:] == ["head_top", "neck"]
    ds = load_coco(tmp_path / "coco.json", images, AIC)
    kps = ds.samples[0].keypoints
    assert kps[AIC.names.index("head_top")].tolist() == [220, 320, 2]  # the file's 13th joint
    assert kps[AIC.names.index("right_shoulder")].tolist() == [100, 200, 2]
    assert ds.head_rule.startswith("|head top - neck|")
