"""Several crops of each person (evaluate/crops.py): the jittered crops, the means, the paired drop."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy.data.coco import load_coco
from mdeploy.evaluate import crops
from mdeploy.evaluate.evaluator import evaluate
from mdeploy.keypoints import get_keypoint_set
from mdeploy.spec import ModelSpec, Preprocessing, TensorInfo
from tests.helpers import DOT_COLOURS, dots_dataset

SIZE, STRIDE = 64, 2
FOUND = 7  # the dot colours the detector below looks for (no black or white: a crop's padding is black)


def dot_detector(x: np.ndarray) -> np.ndarray:
    """A model that finds joints 0-6 by their dot colour (exactly, under any crop) and puts joints
    7-13 at the centre of the input whatever it shows (so where they land depends on the crop)."""
    n, h, w, _ = x.shape
    out = np.zeros((n, h // STRIDE, w // STRIDE, 14), np.float32)
    for k, colour in enumerate(DOT_COLOURS[:FOUND]):
        d2 = ((x - np.asarray(colour, np.float32) / 255.0) ** 2).sum(-1)
        near = np.exp(-d2 / 0.02)
        out[..., k] = near.reshape(n, h // STRIDE, STRIDE, w // STRIDE, STRIDE).max(axis=(2, 4))
    out[:, h // STRIDE // 2, w // STRIDE // 2, FOUND:] = 1.0
    return out


@pytest.fixture(scope="module")
def dots(tmp_path_factory):
    folder = dots_dataset(tmp_path_factory.mktemp("dots"), 10, size=SIZE, seed=3)
    ds = load_coco(folder / "annotations.json", folder / "images", get_keypoint_set("aic14"), crop="person")
    spec = ModelSpec(name="dots", input=TensorInfo("image", (1, SIZE, SIZE, 3)),
                     output=TensorInfo("heatmaps", (1, SIZE // STRIDE, SIZE // STRIDE, 14)),
                     preprocessing=Preprocessing((SIZE, SIZE), "rgb", (0, 1)), keypoints=get_keypoint_set("aic14"),
                     output_stride=STRIDE)
    return ds, spec


def test_auto_takes_200_person_crops_per_split_at_most_32_each():
    assert [crops.copies_for("auto", n) for n in (1, 5, 9, 12, 100, 199, 200, 5000)] == [32, 32, 23, 17, 2, 2, 1, 1]
    assert crops.copies_for(4, 9) == 4


def test_copy_zero_is_the_original_crop_and_the_others_stay_within_the_jitter(dots):
    ds, _ = dots
    every = crops.jittered(ds, 5)
    n = len(ds)
    assert len(every) == 5 * n and every.crop == ds.crop
    assert [s.crop_box(ds.crop) for s in every.samples[:n]] == [s.crop_box(ds.crop) for s in ds.samples]
    assert [s.crop_box(ds.crop) for s in every.samples] == [s.crop_box(ds.crop) for s in crops.jittered(ds, 5).samples]
    moved = 0
    for c in range(1, 5):
        for person, s in zip(ds.samples, every.samples[c * n:(c + 1) * n]):
            x, y, w, h = person.crop_box(ds.crop)
            jx, jy, jw, jh = s.crop_box(ds.crop)
            assert np.array_equal(s.keypoints, person.keypoints) and s.head_size == person.head_size
            assert abs(np.log(jw / w)) <= crops.SCALE + 1e-9 and jw == pytest.approx(jh * w / h)
            assert abs((jx + jw / 2) - (x + w / 2)) <= crops.SHIFT * w + 1e-6
            assert abs((jy + jh / 2) - (y + h / 2)) <= crops.SHIFT * h + 1e-6
            moved += (jx, jy, jw) != (x, y, w)
    assert moved == 4 * n


def test_the_means_over_crops_pair_up_and_keep_the_original_metrics(dots):
    ds, spec = dots
    once = evaluate(dot_detector, spec, ds)
    result = evaluate(dot_detector, spec, ds, crops=12)
    assert result.metrics == once.metrics and result.per_joint == once.per_joint  # the original crops' numbers
    summary = result.crops
    assert summary["copies"] == 12 and summary["people"] == len(ds) and summary["primary"] == "pckh@0.5"
    per_copy = summary["per_copy"]
    assert per_copy[0] == once.metrics["pckh@0.5"]
    # Every person has the same joints scored in every copy, so the pooled metric is the mean.
    assert summary["metrics"]["pckh@0.5"] == pytest.approx(np.mean(per_copy), abs=1e-3)
    # Joints 0-6 are found wherever the crop is (the keypoints map back through each crop's own
    # affine); joints 7-13 sit wherever the crop's centre is, so some copies score differently.
    assert min(per_copy) >= 100.0 * FOUND / 14 - 1e-6
    assert len(set(per_copy)) > 1

    drop = crops.gate_drop("pckh@0.5", once.to_json() | {"crops": summary}, result.to_json())
    assert drop == {"drop": 0.0, "crops": 12, "se": 0.0, "original": 0.0}


def test_the_drop_over_crops_has_a_standard_error_and_needs_the_same_crops():
    def scored(values, seed=crops.SEED, original=80.0):
        return {"metrics": {"pckh@0.5": original},
                "crops": {"copies": len(values), "seed": seed, "primary": "pckh@0.5", "per_copy": values,
                          "metrics": {"pckh@0.5": float(np.mean(values))}}}

    reference, artifact = scored([80.0, 70.0, 90.0, 80.0]), scored([78.0, 69.0, 86.0, 79.0], original=70.0)
    drop = crops.gate_drop("pckh@0.5", reference, artifact)
    diffs = np.array([2.0, 1.0, 4.0, 1.0])
    assert drop["drop"] == pytest.approx(diffs.mean()) and drop["original"] == 10.0 and drop["crops"] == 4
    assert drop["se"] == pytest.approx(diffs.std(ddof=1) / 2, abs=1e-3)
    # Not scored through the same crops: the original crops decide.
    assert crops.gate_drop("pckh@0.5", reference, scored([78.0, 69.0, 86.0], original=70.0)) == {"drop": 10.0}
    assert crops.gate_drop("pckh@0.5", reference, scored([78.0, 69.0, 86.0, 79.0], seed=1, original=70.0)) == {"drop": 10.0}
    assert crops.gate_drop("pckh@0.5", {"metrics": {"pckh@0.5": 80.0}}, {"metrics": {"pckh@0.5": 79.0}}) == {"drop": 1.0}
