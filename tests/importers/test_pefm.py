"""The real PoseEstimationForMobile CPM release (TF1 frozen graph) through the shipped recipe."""

from __future__ import annotations

import pytest

from mdeploy.build import build
from mdeploy.recipe import load_recipe
from tests.helpers import PEFM_OUTPUT, PEFM_SHA256, REPO


@pytest.fixture
def pefm_recipe(pefm_pb):
    return REPO / "recipes" / "pefm_cpm.yaml"


def photo_peaks(gate) -> dict[str, float]:
    return {s["name"]: s["reference_peak"] for s in gate.metrics["per_sample"] if s["name"].startswith("photo:")}


def test_pefm_frozen_graph_builds_tflite_with_parity_on_real_photos(tmp_path, pefm_recipe, pefm_cache):
    recipe = load_recipe(pefm_recipe, ["export.tflite.variants=[fp32, fp16]"])
    assert recipe.model.import_.sha256 == PEFM_SHA256
    assert recipe.model.import_.outputs == [PEFM_OUTPUT]
    result = build(recipe, out_root=tmp_path, cache=pefm_cache)
    spec = result.manifest["artifacts"]
    assert [a["id"] for a in spec] == ["model", "spec", "tflite/fp32", "tflite/fp16"]
    fp32, fp16 = [g for g in result.gates if g.gate == "parity"]
    assert fp32.status == "passed" and fp16.status == "passed"
    assert fp32.metrics["max_abs"] < 1e-4
    assert fp32.metrics["agreement"] == 1.0
    # The BGR 0..255 contract gives the reference clear peaks on both photos of people.
    assert min(photo_peaks(fp32).values()) > 0.3
    assert fp32.metrics["drawn"] >= 6
    from mdeploy.spec import ModelSpec

    loaded = ModelSpec.load(result.build_dir / "model" / "spec.json")
    assert loaded.output.shape == (1, 96, 96, 14)
    assert loaded.output_stride == 2
    assert loaded.source["output"] == PEFM_OUTPUT


def test_a_wrong_preprocessing_contract_collapses_the_heatmaps(tmp_path, pefm_recipe, pefm_cache):
    """Feeding [-1, 1] instead of raw 0..255 (a classic porting mistake) is visible in the peaks."""
    right = build(load_recipe(pefm_recipe, ["export.tflite.variants=[fp32]"]), out_root=tmp_path / "a", cache=pefm_cache)
    wrong = build(
        load_recipe(pefm_recipe, ["export.tflite.variants=[fp32]", "model.input.range=[-1, 1]"]),
        out_root=tmp_path / "b",
        cache=pefm_cache,
    )
    parity = lambda result: next(g for g in result.gates if g.gate == "parity")  # noqa: E731
    right_peaks, wrong_peaks = photo_peaks(parity(right)), photo_peaks(parity(wrong))
    for name in right_peaks:
        assert wrong_peaks[name] < 0.5 * right_peaks[name], (name, right_peaks, wrong_peaks)


def test_pefm_release_through_every_exporter(tmp_path, pefm_recipe, pefm_cache):
    """The TF1 frozen graph comes out as TFLite (all variants), ONNX, Core ML and a MACE package;
    each is checked against the original graph; the MACE yml's tensors match the model."""
    import yaml

    from tests.helpers import SHARED

    # The shipped recipe as it is, with every exporter: the import and the TFLite fp32 and fp16
    # stages are the ones test_pefm_frozen_graph_builds_tflite_with_parity_on_real_photos built.
    recipe = load_recipe(pefm_recipe, [
        "data.val={synthetic: {count: 16, seed: 7}}",
        "data.calibration={synthetic: {count: 16, seed: 8}}",
        "export.tflite={variants: [fp32, fp16, dynamic, int8], calibration: {split: calibration, samples: 16}}",
        "export.onnx={opset: 17}",
        "export.coreml={precision: fp16}",
        "export.mace={runtime: cpu+gpu}",
        "verify.parity=warn",
    ])
    result = build(recipe, out_root=tmp_path / "b", cache=pefm_cache)
    ids = [a["id"] for a in result.manifest["artifacts"]]
    assert ids == ["model", "spec", "tflite/fp32", "tflite/fp16", "tflite/dynamic", "tflite/int8", "onnx", "coreml", "mace", "mace/yml"]
    # The release's 7x7 depthwise layers run as bands; XNNPACK takes the fp32 and int8 files whole.
    details = {a["id"]: a.get("details") or {} for a in result.manifest["artifacts"]}
    for variant in ("tflite/fp32", "tflite/int8"):
        assert details[variant]["split_depthwise"] and details[variant]["xnnpack"] == {"partitions": 1, "builtin": []}, variant
    parity = {g.artifact: g for g in result.gates if g.gate == "parity"}
    for exact in ("tflite/fp32", "onnx", "mace"):
        assert parity[exact].status == "passed" and parity[exact].metrics["max_abs"] < 1e-4, exact
    assert parity["tflite/fp16"].status == "passed"
    assert parity["coreml"].status == "unverified"
    # Quantized variants are measured (dynamic-range int8 moves keypoints on real photos: docs/benchmarks.md).
    assert parity["tflite/dynamic"].status == "warned" and parity["tflite/int8"].status in ("warned", "passed")
    accuracy = {g.artifact: g for g in result.gates if g.gate == "accuracy"}
    # A model of real people finds the synthetic figures (16 of them: about 71%; 48 gave about 73%).
    assert accuracy["model"].metrics["metrics"]["pckh@0.5"] > 40

    ours = yaml.safe_load((result.build_dir / "mace" / "pefm_cpm.yml").read_text())
    reference = yaml.safe_load((SHARED / "reference" / "pefm" / "mace_ymls" / "cpm.yml").read_text())
    (ours_sub,) = ours["models"]["pefm_cpm"]["subgraphs"]
    (ref_sub,) = reference["models"]["cpm_v1"]["subgraphs"]
    assert ours_sub["input_tensors"] == ref_sub["input_tensors"] == ["image"]
    assert [str(s) for s in ours_sub["input_shapes"]] == [str(s) for s in ref_sub["input_shapes"]]
    assert [str(s) for s in ours_sub["output_shapes"]] == [str(s) for s in ref_sub["output_shapes"]]
    assert ours_sub["input_ranges"] == ["0,255"]  # raw BGR pixels: MACE's default test range -1,1 would be wrong
