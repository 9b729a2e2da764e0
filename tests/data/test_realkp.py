"""Real labelled people (../shared/data/realkp): keypoints mapped by name, the MPII layout.

The files are read as they are shipped: AI Challenger's own joint order, COCO-17 names,
MPII's nameless documented order. Skipped when ../shared is absent (a user's clone).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mdeploy.data.coco import HEAD_TOP_NECK, HEAD_TOP_UPPER_NECK, load_coco
from mdeploy.data.mpii import load_mpii
from mdeploy.errors import InputError
from mdeploy.keypoints import canonical_joint, get_keypoint_set, map_names, normalize_name
from tests.helpers import SHARED

REALKP = SHARED / "data" / "realkp"
AIC = get_keypoint_set("aic14")

needs_realkp = pytest.mark.skipif(not REALKP.is_dir(), reason=f"real labelled people are not here ({REALKP}): ../shared is absent")


@pytest.mark.parametrize(
    ("spelling", "joint"),
    [("Head top", "head_top"), ("head", "head_top"), ("head_top", "head_top"), ("r ankle", "right_ankle"),
     ("RAnkle", "right_ankle"), ("Right Shoulder", "right_shoulder"), ("upper neck", "upper_neck"),
     ("Neck", "neck"), ("right_foot", "right_ankle"), ("lhip", "left_hip"), ("pelvis", "pelvis"), ("thorax", "thorax")],
)
def test_alias_table_knows_the_usual_spellings(spelling, joint):
    assert canonical_joint(spelling) == joint, normalize_name(spelling)


def test_every_registered_set_maps_onto_itself_and_shares_limbs_with_the_others():
    names = ["aic14", "coco17", "mpii16", "crowdpose14", "h36m17"]
    for a in names:
        for b in names:
            mapping = map_names(get_keypoint_set(a).names, get_keypoint_set(b), source=a)
            assert len(mapping.shared) >= 12, (a, b, mapping.shared)
        assert map_names(get_keypoint_set(a).names, get_keypoint_set(a), source=a).identity


@needs_realkp
def test_ai_challenger_file_is_mapped_by_name_not_by_position():
    ds = load_coco(REALKP / "aic" / "test_aic.json", REALKP / "aic", AIC)
    raw = json.loads((REALKP / "aic" / "test_aic.json").read_text())
    first = np.asarray(raw["annotations"][0]["keypoints"], np.float32).reshape(14, 3)
    names = raw["categories"][0]["keypoints"]
    assert names[12] == "Head top" and AIC.names[0] == "head_top"  # the file's 13th joint is the model's first
    sample = ds.samples[0]
    np.testing.assert_array_equal(sample.keypoints[0], first[12])
    np.testing.assert_array_equal(sample.keypoints[1], first[13])  # neck
    np.testing.assert_array_equal(sample.keypoints[2], first[0])  # right shoulder
    assert ds.people == 9 and ds.images == 3 and ds.crop == "person"
    assert ds.head_rule == HEAD_TOP_NECK
    assert not ds.mapping.identity and ds.mapping.shared == AIC.names


@needs_realkp
def test_coco_people_share_the_twelve_limb_joints_with_an_aic14_model():
    ds = load_coco(REALKP / "coco" / "test_coco.json", REALKP / "coco", AIC)
    assert ds.mapping.missing == ("head_top", "neck")
    assert set(ds.mapping.dropped) == {"nose", "left_eye", "right_eye", "left_ear", "right_ear"}
    assert len(ds.mapping.shared) == 12
    assert ds.head_rule is None  # no head joints: PCKh is undefined there
    assert all(s.keypoints[0, 2] == 0 and s.keypoints[1, 2] == 0 for s in ds.samples)


@needs_realkp
def test_mpii_layout_reader():
    ds = load_mpii(REALKP / "mpii" / "test_mpii.json", REALKP / "mpii", AIC)
    raw = json.loads((REALKP / "mpii" / "test_mpii.json").read_text())
    assert ds.people == 5 and ds.layout == "mpii" and ds.crop == "person"
    assert ds.head_rule == HEAD_TOP_UPPER_NECK
    assert ds.mapping.missing == ("neck",)  # MPII has an upper neck and a thorax, not AI Challenger's neck
    first = raw[0]
    mpii = get_keypoint_set("mpii16")
    head_top = np.asarray(first["joints"][mpii.names.index("head_top")]) - 0.5  # 1-based pixel -> continuous
    np.testing.assert_allclose(ds.samples[0].keypoints[0, :2], head_top)
    upper_neck = np.asarray(first["joints"][mpii.names.index("upper_neck")]) - 0.5
    assert ds.samples[0].head_size == pytest.approx(float(np.linalg.norm(head_top - upper_neck)))
    x, y, w, h = ds.samples[0].bbox
    assert w == h == pytest.approx(200 * first["scale"]) and (x + w / 2, y + h / 2) == pytest.approx(tuple(first["center"]))


def test_mpii_bad_input_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "m.json").write_text(json.dumps([{"image": "a.jpg", "joints": [[1, 1]] * 16, "center": [5, 5], "scale": 1.0}]))
    with pytest.raises(InputError) as caught:
        load_mpii(tmp_path / "m.json", tmp_path / "images", AIC)
    assert caught.value.message == "m.json: entry 0 (a.jpg) lacks joints_vis"
    (tmp_path / "m.json").write_text("[]")
    with pytest.raises(InputError, match="no person with a labelled joint"):
        load_mpii(tmp_path / "m.json", tmp_path / "images", AIC)
    (tmp_path / "m.json").write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match="is not an MPII json"):
        load_mpii(tmp_path / "m.json", tmp_path / "images", AIC)


def test_unmappable_names_list_both_name_lists(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "images" / "a.jpg")
    names = ["head top", "neck", "left wing", *AIC.names[2:]]
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 40}],
        "annotations": [{"id": 1, "image_id": 1, "keypoints": [5, 5, 2] * 14}],
        "categories": [{"id": 1, "name": "person", "keypoints": names}],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(InputError) as caught:
        load_coco(tmp_path / "a.json", tmp_path / "images", AIC)
    assert caught.value.message == "a.json: keypoint name 'left wing' not known to mdeploy's alias table"
    assert "the file's keypoints: head top, neck, left wing" in caught.value.hint
    assert "aic14 expects: head_top, neck, right_shoulder" in caught.value.hint


def test_a_file_without_names_is_read_by_position_and_says_so(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "images" / "a.jpg")
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 40}],
            "annotations": [{"id": 1, "image_id": 1, "keypoints": [5, 5, 2] * 14}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    ds = load_coco(tmp_path / "a.json", tmp_path / "images", AIC)
    assert ds.mapping.by_position and "read by position" in ds.notes[0]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("names", "keypoint name 'left wing' not known to mdeploy's alias table"),
        ("mpii", "m.json: entry 0 (a.jpg) lacks joints_vis"),
        ("empty", "data.val lists no split"),
    ],
)
def test_bad_validation_data_is_bad_input(tmp_path, tiny_models, cli, case, message):
    """Unmappable names, an MPII entry missing a field, an empty split list: one message, exit 2,
    no build folder written."""
    from PIL import Image

    from tests.helpers import tiny_recipe

    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "images" / "a.jpg")
    names = ["head top", "neck", "left wing", *AIC.names[2:]]
    (tmp_path / "a.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 40}],
        "annotations": [{"id": 1, "image_id": 1, "keypoints": [5, 5, 2] * 14}],
        "categories": [{"id": 1, "name": "person", "keypoints": names}],
    }))
    (tmp_path / "m.json").write_text(json.dumps([{"image": "a.jpg", "joints": [[1, 1]] * 16, "center": [5, 5], "scale": 1.0}]))
    val = {
        "names": "[{name: bad, coco: {annotations: a.json, images: images}}]",
        "mpii": "[{name: bad, mpii: {annotations: m.json, images: images}}]",
        "empty": "[]",
    }[case]
    path = tiny_recipe(tmp_path, tiny_models, extra=f"data:\n  val: {val}\nverify: {{find_people: off}}\n")
    result = cli("build", path, "--out", tmp_path / "b")
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stderr.count("error:") == 1
    assert not (tmp_path / "b" / "tiny").exists()
