"""The ModelSpec and its preprocessing contract."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy.keypoints import KEYPOINT_SETS, get_keypoint_set
from mdeploy.spec import ModelSpec, Preprocessing, TensorInfo


def pre(**kw) -> Preprocessing:
    base = dict(size=(96, 128), channels="rgb", range=(0.0, 1.0))
    base.update(kw)
    return Preprocessing(**base)


def test_normalize_follows_channel_order_range_mean_std():
    pixel = np.array([[[10, 20, 30]]], dtype=np.uint8)
    assert pre(channels="bgr", range=(0, 255)).normalize(pixel).tolist() == [[[30.0, 20.0, 10.0]]]
    np.testing.assert_allclose(pre(range=(-1, 1)).normalize(np.array([0, 255, 127.5])), [-1, 1, 0], atol=1e-6)
    np.testing.assert_allclose(
        pre(range=(0, 1), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).normalize(np.array([255.0, 0.0, 127.5])),
        [2.0, -2.0, 0.0],
        atol=1e-6,
    )


def test_input_range_covers_every_channel():
    p = pre(range=(0, 1), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    lo, hi = p.input_range()
    assert lo == pytest.approx(-0.485 / 0.229)
    assert hi == pytest.approx((1 - 0.406) / 0.225)
    assert pre(channels="bgr", range=(0, 255)).input_range() == (0.0, 255.0)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("stretch", (128 / 400, 96 / 200, 0.0, 0.0)),
        ("letterbox", (0.32, 0.32, 0.0, (96 - 0.32 * 200) / 2)),
        ("crop", (0.48, 0.48, (128 - 0.48 * 400) / 2, 0.0)),
    ],
)
def test_geometry(mode, expected):
    aff = pre(resize=mode).geometry(400, 200)
    assert (aff.scale_x, aff.scale_y, aff.offset_x, aff.offset_y) == pytest.approx(expected)
    u, v = aff.to_input(123.0, 45.0)
    assert aff.to_source(u, v) == pytest.approx((123.0, 45.0))


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop"])
def test_resize_image_places_points_where_the_geometry_says(mode):
    """A bright square in the source lands where Affine.to_input predicts it."""
    src = np.zeros((200, 400, 3), np.uint8)
    src[90:110, 240:260] = 255  # centre (250, 100) in continuous coordinates
    p = pre(resize=mode)
    out, aff = p.resize_image(src)
    assert out.shape == (96, 128, 3)
    ys, xs = np.nonzero(out[..., 0] > 128)
    centre = (xs.mean() + 0.5, ys.mean() + 0.5)
    assert centre == pytest.approx(tuple(float(c) for c in aff.to_input(250.0, 100.0)), abs=0.75)


def test_letterbox_pads_black():
    out, _ = pre(resize="letterbox").resize_image(np.full((200, 400, 3), 200, np.uint8))
    assert out[0, 64].tolist() == [0, 0, 0] and out[48, 64].tolist() == [200, 200, 200]


def test_spec_json_round_trip(tmp_path):
    spec = ModelSpec(
        name="m",
        input=TensorInfo("image", (1, 96, 128, 3)),
        output=TensorInfo("heatmaps", (1, 48, 64, 14)),
        preprocessing=pre(channels="bgr", range=(0, 255), resize="letterbox"),
        keypoints=get_keypoint_set("aic14"),
        output_stride=2,
        source={"format": "keras"},
    )
    spec.save(tmp_path / "spec.json")
    assert ModelSpec.load(tmp_path / "spec.json") == spec
    assert spec.heatmap_size == (48, 64)


def test_keypoint_sets_are_consistent():
    aic = get_keypoint_set("aic14")
    assert len(aic) == 14 and aic.names[0] == "head_top" and aic.names[13] == "left_ankle"
    perm = aic.flip_permutation()
    assert perm[2] == 5 and perm[5] == 2 and perm[0] == 0
    for name, kps in KEYPOINT_SETS.items():
        perm = kps.flip_permutation()
        assert sorted(perm) == list(range(len(kps))), name
        for a, b in kps.flip_pairs:
            assert kps.names[a].replace("left", "right") == kps.names[b].replace("left", "right"), name
