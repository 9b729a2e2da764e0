"""An artifact its runtime cannot load or run is a failed artifact, never a crashed build."""

from __future__ import annotations

from mdeploy import stages as fn
from mdeploy.build import accuracy_gates, build, parity_gates
from mdeploy.pipeline import StageContext, StageRecord
from mdeploy.recipe import load_recipe
from tests.helpers import tiny_recipe


def test_a_damaged_artifact_fails_its_gates_with_the_runtimes_message(tmp_path, tiny_models):
    """A .tflite that LiteRT cannot load (damaged bytes, as a runtime sees a file it cannot use) fails
    parity and accuracy with LiteRT's own message; the stage functions return, nothing raises."""
    path = tiny_recipe(tmp_path, tiny_models, extra="""
        data:
          val: {synthetic: {count: 4, seed: 2, size: 32}}
        verify: {accuracy: {max_drop: 100}, find_people: off}
        """)
    recipe = load_recipe(path)
    result = build(recipe, out_root=tmp_path / "b")
    target = next(t for t in result.plan.targets if t.artifact_id == "tflite/fp32")
    broken = tmp_path / "broken"
    (broken / "out" / target.filename).parent.mkdir(parents=True)
    (broken / "out" / target.filename).write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(200))
    records = dict(result.outcome.records)
    records["tflite/fp32"] = StageRecord("tflite/fp32", "k", broken, {"artifacts": []})
    lines: list[str] = []
    ctx = StageContext(stage=None, out=tmp_path / "o", deps=records, log=lines.append)

    parity = fn.run_parity(recipe, target, ctx)["results"]["parity"]
    assert parity["runtime_error"].split(":")[0] in ("ValueError", "RuntimeError")
    accuracy = fn.run_accuracy(recipe, "val", "tflite/fp32", "tflite", target.filename, None, ctx)["results"]["accuracy"]
    assert accuracy["runtime_error"] == parity["runtime_error"]
    assert any("does not run" in line for line in lines)

    records["parity/tflite/fp32"] = StageRecord("parity/tflite/fp32", "k", tmp_path, {"results": {"parity": parity}})
    records["accuracy/val/tflite/fp32"] = StageRecord("a", "k", tmp_path, {"results": {"accuracy": accuracy}})
    (gate,) = parity_gates(result.plan, records)
    assert gate.status == "failed" and gate.checks[0]["check"] == "runs"
    assert gate.checks[0]["detail"] == parity["runtime_error"]
    acc = next(g for g in accuracy_gates(result.plan, records) if g.artifact == "tflite/fp32")
    assert acc.status == "failed" and acc.checks[0]["check"] == "runs"
