"""`mdeploy build`: plan the stages a recipe asks for, run them, assemble the build folder.

Planning reads only the recipe and declarations (no framework imports); the stage
functions themselves live with their formats (importers, exporters, verify). Gate
results are evaluated from cached measurements each build, so changing a tolerance
never re-runs a model.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from mdeploy.errors import GateFailure, InputError
from mdeploy.exporters import ExportTarget, export_targets
from mdeploy.fsutil import copy_tree_into, recover_dir, sha256_path, swap_dir, unique_sibling, write_json
from mdeploy.pipeline import Cache, Outcome, Runner, Stage, StageContext, StageRecord
from mdeploy.recipe import Recipe
from mdeploy.registry import closest
from mdeploy.report.manifest import build_manifest, manifest_matches
from mdeploy.verify.parity import evaluate

MODEL_STAGE = "model"
PARITY_TOOLS = ("tensorflow", "ai-edge-litert", "numpy", "pillow", "scikit-image", "matplotlib")


@dataclass(frozen=True)
class Pending:
    """A recipe key that validated but that this version of mdeploy does not act on yet."""

    keypath: tuple[str, ...]
    where: str | None
    reason: str

    def render(self) -> str:
        where = f"{self.where}: " if self.where else ""
        return f"{where}{'.'.join(self.keypath)}: {self.reason}"

    def to_json(self) -> dict:
        return {"key": ".".join(self.keypath), "where": self.where, "reason": self.reason}


@dataclass
class Plan:
    recipe: Recipe
    stages: list[Stage]
    targets: list[ExportTarget]
    pending: list[Pending]

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def selectable(self) -> list[str]:
        names = set(self.stage_names())
        for stage in self.stages:
            names.update(stage.groups)
        return sorted(names)


@dataclass
class GateResult:
    gate: str
    artifact: str
    status: str  # passed | failed | warned | not run
    checks: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"gate": self.gate, "artifact": self.artifact, "status": self.status, "checks": self.checks, "metrics": self.metrics}


@dataclass
class BuildResult:
    recipe: Recipe
    build_dir: Path
    manifest: dict
    outcome: Outcome
    plan: Plan
    gates: list[GateResult]
    written: str  # "assembled" | "manifest" | "unchanged"

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if g.status == "failed"]

    def raise_for_gates(self) -> None:
        failed = self.failed_gates
        if failed:
            names = ", ".join(f"{g.gate} of {g.artifact}" for g in failed)
            raise GateFailure(
                f"{len(failed)} verification gate{'s' if len(failed) > 1 else ''} failed: {names}",
                hint=f"artifacts and manifest were written to {self.build_dir}; "
                "loosen verify.tolerances or set verify.parity: warn if the difference is acceptable",
            )


# ---------------------------------------------------------------------------- planning

_NOT_YET = {
    ("data",): "datasets are used by training and accuracy gates, which this version does not run yet",
    ("train",): "training is not available in this version; the model comes from model.import",
    ("export", "coreml"): "CoreML export is not available in this version",
    ("export", "onnx"): "ONNX export is not available in this version",
    ("export", "mace"): "MACE packages are not available in this version",
    ("verify", "accuracy"): "accuracy gates need a dataset and are not available in this version",
    ("app",): "app glue generation is not available in this version",
    ("devices",): "device profiles and push are not available in this version",
    ("bench",): "benchmarking is not available in this version",
}


def pending_sections(recipe: Recipe) -> list[Pending]:
    out = [Pending(k, recipe.where(*k, key=True), reason) for k, reason in _NOT_YET.items() if recipe.given(*k)]
    tflite = recipe.export.tflite
    if tflite is not None:
        from mdeploy.exporters.tflite import BUILT_VARIANTS

        for index, variant in enumerate(tflite.variants):
            if variant not in BUILT_VARIANTS:
                out.append(
                    Pending(
                        ("export", "tflite", "variants", str(index)),
                        recipe.where("export", "tflite", "variants", index),
                        f"the TFLite {variant} variant is not available in this version",
                    )
                )
    return out


def plan_build(recipe: Recipe, cache: Cache) -> Plan:
    if recipe.model.arch is not None:
        raise InputError(
            f"training an architecture ({recipe.model.arch!r}) is not available in this version of mdeploy",
            where=recipe.where("model", "arch"),
            hint="import a trained model with model.import (keras, saved_model or frozen_pb)",
        )
    stages = [_model_stage(recipe, cache)]
    targets = export_targets(recipe)
    samples_key = recipe.section_json("verify", "samples")
    samples_key["files"] = [sha256_path(p) for p in recipe.verify.samples.images if Path(p).is_file()]
    for target in targets:
        stages.append(
            Stage(
                name=target.artifact_id,
                describe=target.describe or f"export {target.artifact_id}",
                run=partial(_export_stage, target),
                key={"name": recipe.name, "settings": target.settings},
                deps=(MODEL_STAGE,),
                tools=target.tools,
                groups=("export", target.format),
            )
        )
        stages.append(
            Stage(
                name=f"parity/{target.artifact_id}",
                describe=f"check {target.artifact_id} against the canonical model",
                run=partial(_parity_stage, recipe, target),
                key={"samples": samples_key},
                deps=(MODEL_STAGE, target.artifact_id),
                tools=PARITY_TOOLS,
                groups=("verify", "parity"),
            )
        )
    return Plan(recipe, stages, targets, pending_sections(recipe))


def _model_stage(recipe: Recipe, cache: Cache) -> Stage:
    section = recipe.model.import_
    where = recipe.where
    if section.path is not None:
        path = Path(section.path)
        if not path.exists():
            raise InputError(f"model file not found: {path}", where=where("model", "import", "path"))
        if section.sha256:
            from mdeploy.importers.fetch import verify_checksum

            verify_checksum(path, section.sha256, where=where("model", "import", "sha256"))
            digest = section.sha256
        else:
            digest = sha256_path(path)
    else:
        digest = section.sha256
    return Stage(
        name=MODEL_STAGE,
        describe=f"import {section.format} {Path(section.path).name if section.path else section.url}",
        run=partial(_run_model_stage, recipe, cache),
        key={"name": recipe.name, "model": recipe.section_json("model"), "file_sha256": digest},
        tools=("tensorflow",),
        groups=("import",),
    )


# ---------------------------------------------------------------------------- stage functions


def _resolve_import(recipe: Recipe, cache: Cache) -> Path:
    from mdeploy.importers.fetch import fetch, is_archive, unpack

    section = recipe.model.import_
    where = recipe.where("model", "import", "url" if section.url else "path")
    path = fetch(section.url, section.sha256, cache.root, where=where) if section.url else Path(section.path)
    if is_archive(path):
        path = unpack(path, where=where)
    return path


def _run_model_stage(recipe: Recipe, cache: Cache, ctx: StageContext) -> dict:
    from mdeploy.importers import IMPORTERS
    from mdeploy.importers.canonical import input_size, make_spec, write_canonical

    section = recipe.model.import_
    path = _resolve_import(recipe, cache)
    loaded = IMPORTERS.get(section.format)(section, path, recipe.where)
    size = input_size(recipe, loaded, recipe.where)
    model_dir = ctx.out / "model"
    model_dir.mkdir(parents=True)
    out_shape = write_canonical(loaded, size, model_dir / "saved_model")
    spec = make_spec(recipe, size, out_shape, dict(loaded.source, file=path.name), recipe.where)
    spec.save(model_dir / "spec.json")
    ctx.log(f"input {list(spec.input.shape)} -> {spec.output.name} {list(spec.output.shape)} (stride {spec.output_stride})")
    return {
        "artifacts": [
            {"id": "model", "path": "model/saved_model", "format": "saved_model", "variant": None},
            {"id": "spec", "path": "model/spec.json", "format": "spec", "variant": None},
        ],
    }


def _spec_of(record: StageRecord):
    from mdeploy.spec import ModelSpec

    return ModelSpec.load(record.out / "model" / "spec.json")


def _export_stage(target: ExportTarget, ctx: StageContext) -> dict:
    model = ctx.dep(MODEL_STAGE)
    details = target.run(target, model.out / "model" / "saved_model", _spec_of(model), ctx.out / target.filename, ctx.log)
    return {
        "artifacts": [
            {"id": target.artifact_id, "path": target.filename, "format": target.format, "variant": target.variant, **details}
        ]
    }


def _parity_stage(recipe: Recipe, target: ExportTarget, ctx: StageContext) -> dict:
    import numpy as np

    from mdeploy.runners import open_runner
    from mdeploy.verify.parity import measure
    from mdeploy.verify.samples import parity_samples

    model = ctx.dep(MODEL_STAGE)
    spec = _spec_of(model)
    samples = parity_samples(spec, recipe.verify.samples, recipe.where)
    batch = np.stack([s.input for s in samples])
    reference = open_runner("saved_model", model.out / "model" / "saved_model")(batch)
    artifact = ctx.dep(target.artifact_id).out / target.filename
    candidate = open_runner(target.format, artifact)(batch)
    metrics = measure(reference, candidate, [s.name for s in samples], spec)
    if metrics["shape_ok"]:
        agree = "n/a" if metrics["agreement"] is None else f"{metrics['agreement']:.3f}"
        ctx.log(f"max_abs {metrics['max_abs']:.3g}, agreement {agree} over {metrics['drawn']} drawn keypoints")
    return {"results": {"parity": metrics}}


# ---------------------------------------------------------------------------- gates


def parity_gates(plan: Plan, records: dict[str, StageRecord]) -> list[GateResult]:
    recipe = plan.recipe
    gates = []
    for target in plan.targets:
        record = records.get(f"parity/{target.artifact_id}")
        if record is None:
            gates.append(GateResult("parity", target.artifact_id, "not run"))
            continue
        override = recipe.verify.tolerances.get(target.artifact_id)
        max_abs = override.max_abs if override and override.max_abs is not None else target.tolerance.max_abs
        min_agree = (
            override.min_agreement if override and override.min_agreement is not None else target.tolerance.min_agreement
        )
        metrics = record.results["parity"]
        checks = evaluate(metrics, max_abs, min_agree)
        ok = all(c.ok for c in checks)
        status = "passed" if ok else ("warned" if recipe.verify.parity == "warn" else "failed")
        gates.append(GateResult("parity", target.artifact_id, status, [c.to_json() for c in checks], metrics))
    return gates


# ---------------------------------------------------------------------------- build


def check_only(plan: Plan, only: list[str] | None) -> set[str] | None:
    if not only:
        return None
    choices = plan.selectable()
    for name in only:
        if name not in choices:
            near = closest(name, choices)
            suggestion = f" (did you mean {near!r}?)" if near else ""
            raise InputError(f"--only {name}: no such stage in this build{suggestion}; choose from: {', '.join(choices)}")
    return set(only)


def build(
    recipe: Recipe,
    *,
    out_root: Path = Path("build"),
    use_cache: bool = True,
    only: list[str] | None = None,
    cache: Cache | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> BuildResult:
    """Build every stage the recipe asks for into `out_root/<name>/` and return what happened."""
    cache = cache or Cache()
    build_dir = Path(out_root).absolute() / recipe.name
    _check_build_dir(build_dir)
    plan = plan_build(recipe, cache)
    selection = check_only(plan, only)
    outcome = Runner(cache, use_cache=use_cache, only=selection, progress=progress).run(plan.stages)
    gates = parity_gates(plan, outcome.records)
    manifest = build_manifest(recipe, plan, outcome, gates)
    written = _write_build(build_dir, outcome, manifest)
    return BuildResult(recipe, build_dir, manifest, outcome, plan, gates, written)


def _check_build_dir(build_dir: Path) -> None:
    recover_dir(build_dir)
    if build_dir.exists() and not build_dir.is_dir():
        raise InputError(f"{build_dir} exists and is not a folder; mdeploy will not replace it", hint="use --out DIR")
    if build_dir.is_dir() and not (build_dir / "manifest.json").is_file() and any(build_dir.iterdir()):
        raise InputError(
            f"{build_dir} exists and is not an mdeploy build folder (no manifest.json); mdeploy will not replace it",
            hint="move it away or build elsewhere with --out DIR",
        )


def _write_build(build_dir: Path, outcome: Outcome, manifest: dict) -> str:
    """Leave an intact, identical build alone; otherwise assemble a new one and swap it in."""
    manifest_path = build_dir / "manifest.json"
    if manifest_path.is_file() and _artifacts_intact(build_dir, outcome):
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old is not None and manifest_matches(old, manifest):
            if old == manifest:
                return "unchanged"
            write_json(manifest_path, manifest)
            return "manifest"
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = unique_sibling(build_dir, "tmp")
    try:
        staging.mkdir()
        for record in outcome.records.values():
            if record.out.is_dir():
                copy_tree_into(record.out, staging)
        write_json(staging / "manifest.json", manifest)
        swap_dir(staging, build_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return "assembled"


def _artifacts_intact(build_dir: Path, outcome: Outcome) -> bool:
    for record in outcome.records.values():
        for rel, meta in record.data.get("files", {}).items():
            try:
                if os.stat(build_dir / rel).st_size != meta["size"]:
                    return False
            except OSError:
                return False
    return True
