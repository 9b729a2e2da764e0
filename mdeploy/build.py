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
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from mdeploy import stages as fn
from mdeploy.errors import DeviceError, EnvironmentProblem, GateFailure, InputError, MdeployError
from mdeploy.exporters import ExportTarget, export_targets
from mdeploy.fsutil import (
    carry_over_others,
    copy_tree_into,
    exclusive_lock,
    recover_dir,
    sha256_file,
    sha256_json,
    sha256_path,
    swap_dir,
    unique_sibling,
    write_json,
)
from mdeploy.limits import check_input_path
from mdeploy.pipeline import RECORD, Cache, Outcome, Runner, Stage, StageRecord
from mdeploy.recipe import Recipe
from mdeploy.registry import closest
from mdeploy.report.manifest import build_manifest, manifest_matches
from mdeploy.stages import MODEL_STAGE, TRAIN_STAGE, data_stage_name

PARITY_TOOLS = ("tensorflow", "ai-edge-litert", "numpy", "pillow", "scikit-image", "matplotlib")
ACCURACY_TOOLS = ("tensorflow", "ai-edge-litert", "numpy", "pillow")
PEOPLE_STAGE = "people/model"


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
    status: str  # passed | failed | warned | measured | unverified | not run
    checks: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    split: str | None = None  # accuracy gates: the validation split measured

    def to_json(self) -> dict:
        out = {"gate": self.gate, "artifact": self.artifact, "status": self.status, "checks": self.checks, "metrics": self.metrics}
        if self.split is not None:
            out["split"] = self.split
        return out


@dataclass
class BuildResult:
    recipe: Recipe
    build_dir: Path
    manifest: dict
    outcome: Outcome
    plan: Plan
    gates: list[GateResult]
    written: str  # "assembled" | "manifest" | "unchanged"
    apps: list = field(default_factory=list)  # codegen.apps.AppUpdate per app of the recipe
    bench: dict | None = None  # the bench step's outcome (recipes with a bench section)
    bench_skipped: str | None = None
    bench_error: MdeployError | None = None  # the bench step could not start (no device, no tool)
    report: str | None = None  # "written" | "unchanged"

    @property
    def bench_failures(self) -> list:
        return [o for o in (self.bench or {}).get("outcomes", []) if not o.ok or (o.document and o.document["failures"])]

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if g.status == "failed"]

    def raise_for_gates(self) -> None:
        """Exit 1 for a failed gate; exit 3 when a bench device failed (everything else was written)."""
        failed = self.failed_gates
        if failed:
            names = ", ".join(f"{g.gate} of {g.artifact}" + (f" on {g.split}" if g.split else "") for g in failed)
            hints = []
            if any(g.gate == "people" for g in failed):
                from mdeploy.verify.people import HINT

                hints.append(HINT)
            checked = [g for g in failed if g.gate in ("parity", "accuracy")]
            if checked:
                hints.append("loosen verify.tolerances or verify.accuracy.max_drop, or set verify.parity: warn, if the difference is acceptable")
                tflite = self.recipe.export.tflite
                if any(g.artifact == "tflite/int8" for g in checked) and tflite is not None and not tflite.int8_finetune.steps:
                    hints.append("to take back what int8 lost, set export.tflite.int8_finetune: {steps: 300} (the weights "
                                 "trained to tolerate int8 on the calibration images; minutes of CPU, docs/formats.md)")
            if any(g.gate == "ops" for g in failed):
                hints.append("set verify.gpu_ops: warn (or off) if the app will not use the GPU delegate")
            if any(g.gate == "bench" for g in failed):
                hints.append("raise bench.max_latency_ms or make the model faster (docs/benchmarks.md)")
            raise GateFailure(
                f"{len(failed)} verification gate{'s' if len(failed) > 1 else ''} failed: {names}",
                hint=f"artifacts and manifest were written to {self.build_dir}; " + "; ".join(hints),
            )
        if self.bench_error is not None:
            raise self.bench_error
        if self.bench_failures:
            first = self.bench_failures[0]
            why = first.error or first.document["failures"][0]["error"]
            raise DeviceError(f"benchmarking on {first.target.name} failed: {why}", hint=first.hint or "`mdeploy devices` shows the phones' state")


_NOT_YET: dict[tuple[str, ...], str] = {}  # recipe keys validated but not acted on by this version (none at present)


# ---------------------------------------------------------------------------- planning

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
    if recipe.model.import_ is not None:
        calibrates = tflite is not None and "int8" in tflite.variants and recipe.calibration_split() == "train"
        for key in (("train",), ("data", "train")):
            if recipe.given(*key) and not (key == ("data", "train") and calibrates):
                out.append(Pending(key, recipe.where(*key, key=True), "not used: the model is imported, nothing is trained"))
    for name, section, keypath in recipe.val_splits(absent=True):
        if section.absent:
            files = getattr(section, section.source).annotations
            out.append(Pending(tuple(map(str, keypath)), recipe.where(*keypath, key=True), f"optional split {name} not measured: {files} is not on this machine"))
    if recipe.verify.accuracy is not None and not recipe.val_splits():
        out.append(Pending(("verify", "accuracy"), recipe.where("verify", "accuracy", key=True), "accuracy gates need a data.val split"))
    return sorted(out, key=_position)


def _position(pending: Pending) -> tuple:
    """Order notices as they appear in the files (then by key)."""
    if pending.where:
        file, line, col = pending.where.rsplit(":", 2)
        if line.isdigit() and col.isdigit():
            return (file, int(line), int(col), pending.keypath)
    return ("", 0, 0, pending.keypath)


# The mdeploy modules each kind of stage runs (Stage.code): their source enters the stage's cache
# key, so changed code never reuses an entry the old code made. Generous on purpose: a stage that
# reruns costs time, one that is wrongly cached gives a wrong artifact.
_SHARED = ("stages.py", "spec.py", "families", "keypoints.py", "images.py", "units.py", "camera.py", "limits.py",
           "fsutil.py", "recipe", "exporters/reproducible.py")
STAGE_CODE = {
    "data": ("data", "keypoints.py", "images.py", "camera.py", "fsutil.py"),
    "train": _SHARED + ("data", "train", "models", "evaluate"),
    "model": _SHARED + ("importers", "models", "data", "exporters", "runners"),
    "export": _SHARED + ("exporters", "importers", "data", "evaluate", "runners", "verify", "mace_rules.py", "predict.py",
                         "templates/mace"),
    "verify": _SHARED + ("verify", "runners", "evaluate", "data", "predict.py"),
    "glue": _SHARED + ("codegen", "templates/glue", "templates/apps"),
}


def plan_build(recipe: Recipe, cache: Cache, build_dir: Path | None = None) -> Plan:
    stages: list[Stage] = []
    data_keys = _data_stages(recipe, stages)
    if recipe.model.arch is not None:
        stages.append(_train_stage(recipe, cache, data_keys))
        stages.append(
            Stage(
                name=MODEL_STAGE,
                describe="export the trained model as the canonical SavedModel",
                run=partial(fn.run_trained, recipe),
                key={"name": recipe.name, "model": recipe.section_json("model")},
                deps=(TRAIN_STAGE,),
                tools=("tensorflow", "keras"),
                groups=("train",),
                code=STAGE_CODE["model"],
            )
        )
    else:
        stages.append(_import_stage(recipe, cache))
    targets = export_targets(recipe, build_dir or Path("build").absolute() / recipe.name)
    samples_key = recipe.section_json("verify", "samples")
    samples_key["files"] = [sha256_path(p) for p in recipe.verify.samples.images if Path(p).is_file()]
    if recipe.verify.find_people != "off":
        stages.append(
            Stage(
                name=PEOPLE_STAGE,
                describe="check that the canonical model finds people on the photos",
                run=partial(fn.run_people, recipe),
                key={"samples": samples_key, "threshold": recipe.model.decode.threshold},
                deps=(MODEL_STAGE,),
                tools=PARITY_TOOLS,
                groups=("verify", "people"),
                code=STAGE_CODE["verify"],
            )
        )
    for target in targets:
        deps, key = (MODEL_STAGE,), {"name": recipe.name, "settings": target.settings}
        if target.calibration_split:
            split_deps, split_key = data_keys[target.calibration_split]
            deps += split_deps
            key["calibration_data"] = split_key
        calibration = getattr(recipe.data, target.calibration_split) if target.calibration_split else None
        # The search scores candidates on the validation splits, and calibration on the user's own
        # images is checked against them (stages._check_held_out): either reads them.
        if "mixed_precision" in target.settings or (calibration is not None and calibration.synthetic is None):
            for split, _, _ in recipe.val_splits():
                split_deps, split_key = data_keys[split]
                deps += tuple(d for d in split_deps if d not in deps)
                key.setdefault("validation_data", {})[split] = split_key
        stages.append(
            Stage(
                name=target.artifact_id,
                describe=target.describe or f"export {target.artifact_id}",
                run=partial(fn.run_export, recipe, target),
                key=key,
                deps=deps,
                tools=target.tools,
                groups=("export", target.format),
                code_version=3,  # 3: TFLite depthwise bands XNNPACK takes whole; details say how XNNPACK takes the file
                code=STAGE_CODE["export"],
            )
        )
        stages.append(
            Stage(
                name=f"parity/{target.artifact_id}",
                describe=f"check {target.artifact_id} against the canonical model",
                run=partial(fn.run_parity, recipe, target),
                key={"samples": samples_key, "unverified": target.runnable_here()},
                deps=(MODEL_STAGE, target.artifact_id),
                tools=PARITY_TOOLS,
                groups=("verify", "parity"),
                code_version=3,  # 3: moved keypoints say whether the reference's peak was clear
                code=STAGE_CODE["verify"],
            )
        )
    stages += _glue_stages(recipe, targets, build_dir or Path("build").absolute() / recipe.name)
    evaluated = [(MODEL_STAGE, *fn.canonical_model(recipe), None)]
    evaluated += [(t.artifact_id, t.format, t.filename, t.runnable_here()) for t in targets]
    for split, _, _ in recipe.val_splits():
        val_deps, val_key = data_keys[split]
        for artifact, fmt, rel, why_not in evaluated:
            stages.append(
                Stage(
                    name=accuracy_stage_name(split, artifact),
                    describe=f"score {artifact} on the validation split {split}",
                    run=partial(fn.run_accuracy, recipe, split, artifact, fmt, rel, why_not),
                    key={"val": val_key, "split": recipe.section_json(*_split_keypath(recipe, split)), "format": fmt,
                         "unverified": why_not, "keypoints": recipe.model.keypoints,
                         "crops": fn.crops_setting(recipe)},
                    deps=(MODEL_STAGE,) + ((artifact,) if artifact != MODEL_STAGE else ()) + val_deps,
                    tools=ACCURACY_TOOLS,
                    groups=("verify", "accuracy"),
                    code_version=3,  # 3: per-joint hits (and the canonical model's clear peaks) for changed_joints
                    code=STAGE_CODE["verify"],
                )
            )
    return Plan(recipe, stages, targets, pending_sections(recipe))


def accuracy_stage_name(split: str, artifact: str) -> str:
    return f"accuracy/{split}/{artifact}"


def _split_keypath(recipe: Recipe, split: str) -> tuple:
    return fn.split_section(recipe, split)[1]


def _glue_stages(recipe: Recipe, targets: list[ExportTarget], build_dir: Path) -> list[Stage]:
    """One stage per app in the recipe: the glue for the artifact that app runs."""
    if recipe.app is None:
        return []
    from mdeploy.codegen.apps import PLATFORMS, app_target
    from mdeploy.codegen.render import templates_dir

    out = []
    has_mace = any(t.artifact_id == "mace" for t in targets)
    for platform in PLATFORMS:
        if getattr(recipe.app, platform) is None:
            continue
        target = app_target(recipe, platform, build_dir)
        deps = (MODEL_STAGE, target.artifact_id) + (("mace",) if has_mace and platform == "android" else ())
        out.append(
            Stage(
                name=f"glue/{platform}",
                describe=f"generate the {platform} app sources for {target.artifact_id}",
                run=partial(fn.run_glue, recipe, platform, target),
                key={
                    "app": recipe.section_json("app", platform),
                    "name": recipe.name,
                    "description": recipe.description,
                    "export": recipe.section_json("export"),
                    "templates": sha256_path(templates_dir() / "glue" / platform),
                },
                deps=deps,
                tools=("jinja2",),
                groups=("app", "glue"),
                code=STAGE_CODE["glue"],
            )
        )
    return out


def _data_stages(recipe: Recipe, stages: list[Stage]) -> dict[str, tuple[tuple[str, ...], object]]:
    """Stages that generate synthetic splits; for each split, (stage deps, key material)."""
    keys: dict[str, tuple[tuple[str, ...], object]] = {}
    if recipe.data is None:
        return keys
    splits = [(role, getattr(recipe.data, role), ("data", role)) for role in ("train", "calibration") if getattr(recipe.data, role) is not None]
    for split, source, keypath in splits + recipe.val_splits():
        if source.synthetic is not None:
            name = data_stage_name(split)
            stages.append(
                Stage(
                    name=name,
                    describe=f"generate {source.synthetic.count} synthetic images",
                    run=partial(fn.run_synthetic, recipe, split),
                    key={"synthetic": recipe.section_json(*keypath, "synthetic")},
                    tools=("pillow", "numpy"),
                    groups=("data",),
                    publish=False,
                    code=STAGE_CODE["data"],
                )
            )
            keys[split] = ((name,), None)
        elif source.images is not None:
            from mdeploy.data.folder import image_listing

            listing = image_listing(source.images, recipe.where(*keypath, "images"))
            keys[split] = ((), {"images": sha256_json(listing), "reader": "images"})
        else:
            files = getattr(source, source.source)
            keys[split] = ((), data_fingerprint(files, recipe.where(*keypath, source.source)) | {"reader": source.source})
    return keys


def data_fingerprint(files, where: str | None) -> dict:
    """Annotation hash + the size and time of every file in the image folder (not their bytes)."""
    ann = Path(files.annotations)
    images = Path(files.images)
    if not ann.is_file():
        raise InputError(
            f"annotations not found: {ann}",
            where=where,
            hint="the dataset is not bundled: convert downloaded AI Challenger annotations with "
            "`mdeploy data convert ANNOTATIONS.json --images IMAGE_DIR --out FILE.json`, "
            "or train on generated figures with data.train: {synthetic: {count: N}}",
        )
    if not images.is_dir():
        raise InputError(f"image folder not found: {images}", where=where)
    listing = sorted((p.name, st.st_size, int(st.st_mtime)) for p in images.iterdir() if p.is_file() for st in [p.stat()])
    return {"annotations": sha256_path(ann), "images": sha256_json(listing)}


def _train_stage(recipe: Recipe, cache: Cache, data_keys: dict) -> Stage:
    deps: tuple[str, ...] = ()
    material = {}
    for split, (split_deps, key) in data_keys.items():
        if split == "calibration":  # calibration images never reach training
            continue
        deps += split_deps
        material[split] = key
    return Stage(
        name=TRAIN_STAGE,
        describe=f"train {recipe.model.arch}",
        run=partial(fn.run_train, recipe, cache),
        key={
            "model": recipe.section_json("model"),
            "train": recipe.section_json("train"),
            "data": material,
            "init": _init_digest(recipe),
        },
        deps=deps,
        tools=("tensorflow", "keras"),
        groups=("train",),
        code=STAGE_CODE["train"],
    )


def _init_digest(recipe: Recipe) -> str | None:
    """The checksum of the release weights a model starts from (checked now when the recipe states one)."""
    section = recipe.model.init
    if section is None:
        return None
    if section.path is None:
        return section.sha256
    path = Path(section.path)
    where = recipe.where("model", "init", "path")
    if path.exists() and not path.is_dir():
        check_input_path(path, "release weights", where=where)  # no FIFO or device is read
    if not path.is_file():
        raise InputError(f"release weights not found: {path}", where=where, hint="model.init.path names a TF1 frozen graph (.pb)")
    if section.sha256:
        from mdeploy.importers.fetch import verify_checksum

        verify_checksum(path, section.sha256, where=recipe.where("model", "init", "sha256"))
        return section.sha256
    return sha256_path(path)


def _import_stage(recipe: Recipe, cache: Cache) -> Stage:
    section = recipe.model.import_
    where = recipe.where
    if section.path is not None:
        path = Path(section.path)
        if not path.exists():
            raise InputError(f"model file not found: {path}", where=where("model", "import", "path"))
        check_input_path(path, "model file", where=where("model", "import", "path"))  # no FIFO or device
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
        run=partial(fn.run_import, recipe, cache),
        key={"name": recipe.name, "model": recipe.section_json("model"), "file_sha256": digest},
        tools=("ai-edge-litert",) if section.format == "tflite" else ("tensorflow",),
        groups=("import",),
        code=STAGE_CODE["model"],
    )


# ---------------------------------------------------------------------------- gates


def _family(records: dict[str, StageRecord]):
    """The model's family (from its spec), which judges parity and people; heatmap before the model exists."""
    from mdeploy.families import family_of, get_family

    model = records.get(MODEL_STAGE)
    return family_of(fn.spec_of(model)) if model is not None else get_family("heatmap")


def parity_gates(plan: Plan, records: dict[str, StageRecord]) -> list[GateResult]:
    recipe = plan.recipe
    gates = []
    family = _family(records)
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
        if "unverified" in metrics:
            gates.append(GateResult("parity", target.artifact_id, "unverified", [], metrics))
            continue
        if "runtime_error" in metrics:
            gates.append(GateResult("parity", target.artifact_id, "failed", [runtime_check(metrics)], metrics))
            continue
        checks = family.parity_checks(metrics, max_abs, min_agree)
        ok = all(c.ok for c in checks)
        status = "passed" if ok else ("warned" if recipe.verify.parity == "warn" else "failed")
        gates.append(GateResult("parity", target.artifact_id, status, [c.to_json() for c in checks], metrics))
    return gates


def people_gates(plan: Plan, records: dict[str, StageRecord]) -> list[GateResult]:
    """The canonical model must find a person on the photos (verify.find_people)."""
    policy = plan.recipe.verify.find_people
    if policy == "off":
        return []
    record = records.get(PEOPLE_STAGE)
    if record is None:
        return [GateResult("people", MODEL_STAGE, "not run")]
    metrics = record.results["people"]
    check = _family(records).people_check(metrics)
    status = "passed" if check["ok"] else ("failed" if policy == "fail" else "warned")
    return [GateResult("people", MODEL_STAGE, status, [check], metrics)]


def runtime_check(metrics: dict) -> dict:
    """The check of an artifact its runtime could not load or run."""
    return {"check": "runs", "ok": False, "value": None, "limit": "loads and runs on the host runtime",
            "detail": metrics["runtime_error"]}


def ops_gates(plan: Plan, records: dict[str, StageRecord]) -> list[GateResult]:
    """TFLite ops the GPU delegate would leave to the CPU (a split graph), per `verify.gpu_ops`."""
    policy = plan.recipe.verify.gpu_ops
    if policy == "off":
        return []
    out = []
    for target in plan.targets:
        if target.format != "tflite":
            continue
        record = records.get(target.artifact_id)
        if record is None:
            continue
        entry = next((a for a in record.artifacts if a["id"] == target.artifact_id), {})
        fallback = sorted({f["op"] for f in entry.get("gpu_fallback", [])})
        check = {"check": "GPU delegate runs every op", "ok": not fallback, "value": fallback, "limit": "none left to the CPU",
                 "detail": f"left to the CPU: {', '.join(fallback)}" if fallback else "every op runs on the GPU delegate"}
        status = "passed" if not fallback else ("failed" if policy == "fail" else "warned")
        out.append(GateResult("ops", target.artifact_id, status, [check], {"gpu_fallback": fallback}))
    return out


def accuracy_gates(plan: Plan, records: dict[str, StageRecord]) -> list[GateResult]:
    """Accuracy of the canonical model and of every artifact on every validation split; with
    verify.accuracy, a drop limit per split (the split's primary metric unless the gate names one)."""
    from mdeploy.evaluate.crops import gate_drop
    from mdeploy.evaluate.metrics import unit

    recipe = plan.recipe
    gate = recipe.verify.accuracy
    out = []
    for split, _, _ in recipe.val_splits():
        reference = records.get(accuracy_stage_name(split, MODEL_STAGE))
        ref_result = reference.results["accuracy"] if reference else {}
        metric = _gate_metric(gate, ref_result)
        ref_value = (ref_result.get("metrics") or {}).get(metric) if metric else None
        ref_instances = ref_result.get("instances")
        ref_result = {k: v for k, v in ref_result.items() if k != "instances"}
        out.append(GateResult("accuracy", MODEL_STAGE, "measured" if reference else "not run", [], ref_result | {"metric": metric}, split))
        max_drop = None
        if gate is not None:
            max_drop = gate.splits[split].max_drop if split in gate.splits else gate.max_drop
        for target in plan.targets:
            record = records.get(accuracy_stage_name(split, target.artifact_id))
            if record is None or reference is None:
                out.append(GateResult("accuracy", target.artifact_id, "not run", [], {}, split))
                continue
            result = dict(record.results["accuracy"])
            if "unverified" in result:
                out.append(GateResult("accuracy", target.artifact_id, "unverified", [], result, split))
                continue
            if "runtime_error" in result:
                out.append(GateResult("accuracy", target.artifact_id, "failed", [runtime_check(result)], result | {"metric": metric}, split))
                continue
            value = (result.get("metrics") or {}).get(metric) if metric else None
            dropped = gate_drop(metric, ref_result, result)
            drop = dropped["drop"]
            result.update(metric=metric, reference=ref_value, drop=drop)
            if "crops" in dropped:
                result.update(drop_se=dropped["se"], drop_original=dropped["original"])
            changes = changed_joints(ref_instances, result.pop("instances", None), metric)
            if changes:
                result["changed_joints"] = changes
            if max_drop is None:
                out.append(GateResult("accuracy", target.artifact_id, "measured", [], result, split))
                continue
            ok = drop is not None and drop <= max_drop
            label = metric or "accuracy"
            detail = (f"{over_crops(metric, ref_result, result, dropped)}{value}{unit(metric)} vs {ref_value}{unit(metric)} on "
                      f"{split}{' (its original crops)' if 'crops' in dropped else ''}{resolution(ref_result, metric)}"
                      f"{describe_changes(changes, unit(metric))}"
                      if drop is not None else f"{label} is not defined on split {split}")
            check = {"check": f"{label} drop on {split}", "ok": ok, "value": drop, "limit": max_drop, "detail": detail}
            out.append(GateResult("accuracy", target.artifact_id, "passed" if ok else "failed", [check], result, split))
    return out


def over_crops(metric: str, reference: dict, result: dict, dropped: dict) -> str:
    """'mean of 23 crops of each person: 75.217% vs 78.261% (drop 3.044 +- 0.72); ' where the gate
    compared means over crops (evaluate/crops.py), else ''."""
    from mdeploy.evaluate.metrics import unit

    if "crops" not in dropped:
        return ""
    se = f" +- {dropped['se']:g}" if dropped["se"] is not None else ""
    return (f"mean of {dropped['crops']} crops of each person: {result['crops']['metrics'][metric]}{unit(metric)} vs "
            f"{reference['crops']['metrics'][metric]}{unit(metric)} (drop {dropped['drop']:g}{se}); ")


def changed_joints(reference: dict | None, artifact: dict | None, metric: str | None) -> dict | None:
    """Which scored joints an artifact gets right or wrong where its source model did not, and
    how many of those the source model's heatmap finds only weakly (evaluator.EvalResult.instances);
    with the metric on the joints the source finds clearly. None when either run lacks them."""
    if not reference or not artifact or reference.get("metric") != metric or artifact.get("metric") != metric:
        return None
    ref_hits, hits, clear = reference["hits"], artifact["hits"], reference["clear"]
    if len(ref_hits) != len(hits) or len(clear) != len(hits):
        return None
    lost = gained = weak = 0
    clear_ref = clear_art = clear_n = 0
    for ref_row, row, clear_row in zip(ref_hits, hits, clear):
        for a, b, c in zip(ref_row, row, clear_row):
            if a == "-" or b == "-":
                continue
            if a != b:
                lost += a == "1"
                gained += b == "1"
                weak += c == "0"
            if c == "1":
                clear_n += 1
                clear_ref += a == "1"
                clear_art += b == "1"
    out = {"lost": lost, "gained": gained, "weak_in_source": weak, "clear_joints": clear_n}
    if clear_n:
        out |= {"clear_reference": round(100.0 * clear_ref / clear_n, 3), "clear_value": round(100.0 * clear_art / clear_n, 3)}
    return out


def describe_changes(changes: dict | None, unit: str) -> str:
    """'; 5 joints lost, 1 gained; 6 of these 6 weak in the source model (heatmap peak < 0.3 or a
    second peak); on the 44 it finds clearly: 90.9% vs 90.9%' ('' when no joint changed)."""
    from mdeploy.evaluate.decode import CLEAR_PEAK

    if not changes or not changes["lost"] + changes["gained"]:
        return ""
    n = changes["lost"] + changes["gained"]
    text = (f"; {changes['lost']} joint{'' if changes['lost'] == 1 else 's'} lost, {changes['gained']} gained; "
            f"{changes['weak_in_source']} of these {n} weak in the source model (heatmap peak < {CLEAR_PEAK:g} or a second peak)")
    if changes.get("clear_joints"):
        text += (f"; on the {changes['clear_joints']} it finds clearly: {changes['clear_value']:.1f}{unit} "
                 f"vs {changes['clear_reference']:.1f}{unit}")
    return text


def resolution(result: dict, metric: str | None) -> str:
    """How coarse a percentage metric is on a small split: ' (69 joints: one is 1.4 points)'."""
    joints = (result.get("joints") or {}).get(metric) if metric else None
    return f" ({joints} joints: one is {100.0 / joints:.1f} points)" if joints and joints < 1000 else ""


def _gate_metric(gate, reference: dict) -> str | None:
    """The metric a split is gated on: the recipe's choice, or the split's primary metric."""
    if gate is not None and gate.metric != "auto":
        return gate.metric
    return reference.get("primary")


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
    """Build every stage the recipe asks for into `out_root/<name>/` and return what happened.

    One build of a build folder at a time (a second one waits, saying so); the cache entries
    it uses are held until it returns (`Cache`)."""
    cache = cache or Cache()
    build_dir = Path(out_root).absolute() / recipe.name
    lock = build_dir.parent / f".{build_dir.name}.lock"
    waiting = partial(progress, f"waiting for another build of {build_dir} to finish ...")
    with ExitStack() as held:
        try:
            held.enter_context(exclusive_lock(lock, on_wait=waiting))
        except (NotADirectoryError, FileExistsError) as err:
            raise InputError(f"{build_dir.parent} is not a folder", hint="use --out DIR") from err
        except OSError as err:
            raise EnvironmentProblem(f"cannot write to {build_dir.parent}: {err.strerror or err}", hint="use --out DIR") from err
        held.enter_context(cache)
        return _build(recipe, build_dir, use_cache=use_cache, only=only, cache=cache, progress=progress)


def _build(
    recipe: Recipe,
    build_dir: Path,
    *,
    use_cache: bool,
    only: list[str] | None,
    cache: Cache,
    progress: Callable[[str], None],
) -> BuildResult:
    _check_build_dir(build_dir)
    plan = plan_build(recipe, cache, build_dir)
    selection = check_only(plan, only)
    outcome = Runner(cache, use_cache=use_cache, only=selection, progress=progress).run(plan.stages)
    train = outcome.records.get(TRAIN_STAGE)
    if train is not None and train.status == "ran":
        shutil.rmtree(fn.checkpoint_dir(cache, train.key), ignore_errors=True)  # stored: no longer needed
    gates = (people_gates(plan, outcome.records) + parity_gates(plan, outcome.records) + accuracy_gates(plan, outcome.records)
             + ops_gates(plan, outcome.records))
    from mdeploy.devices import results as bench_results

    manifest = bench_results.attach(build_manifest(recipe, plan, outcome, gates), build_dir)
    published = {s.name: outcome.records[s.name] for s in plan.stages if s.publish and s.name in outcome.records}
    written = _write_build(build_dir, published, manifest, cache)
    result = BuildResult(recipe, build_dir, manifest, outcome, plan, gates, written)
    if recipe.app is not None:
        from mdeploy.codegen.apps import install_apps

        blocked = None
        if result.failed_gates:
            blocked = "a verification gate failed"
        elif selection is not None and not any(s.name.startswith("glue/") and s.selected_by(selection) for s in plan.stages):
            blocked = "--only left out the app stage"
        result.apps = install_apps(recipe, build_dir, blocked=blocked)
    if recipe.bench is not None:
        _bench_step(result, selection, use_cache, progress)
    _report_step(result, outcome)
    return result


def _report_step(result: BuildResult, outcome: Outcome) -> None:
    """report/ for people (report.html) and CI (report.json, junit.xml); skipped when current."""
    from mdeploy.recipe.summary import summarize
    from mdeploy.report.html import is_current, write_report

    summary = [list(row) for row in summarize(result.recipe)]
    if result.recipe.description:
        summary.insert(1, ["description", result.recipe.description])
    if is_current(result.build_dir, summary):
        result.report = "unchanged"
        return
    write_report(result.build_dir, summary=summary, extra_images=_validation_images(result.recipe, outcome))
    result.report = "written"


def _validation_images(recipe: Recipe, outcome: Outcome, count: int = 2) -> list[Path]:
    """The first images of each validation split (real photos first), for the report's overlays."""
    kinds = {"real": 0, "unknown": 1, "synthetic": 2}
    out: list[Path] = []
    for split, section, _ in sorted(recipe.val_splits(), key=lambda s: kinds[s[1].kind_of]):
        record = outcome.records.get(data_stage_name(split))
        if section.synthetic is not None:
            folder = record.out / "data" / split / "images" if record is not None else None
        else:
            folder = Path(getattr(section, section.source).images)
        if folder is None or not folder.is_dir():
            continue
        out += sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
    return out[: 2 * count]


def _bench_step(result: BuildResult, selection: set[str] | None, use_cache: bool, progress: Callable[[str], None]) -> None:
    """Measure on the recipe's devices (`bench` section) and apply bench.max_latency_ms as gates."""
    from mdeploy.devices.plan import bench_for_build

    if result.failed_gates:
        result.bench_skipped = "a verification gate failed"
        return
    if selection is not None:
        result.bench_skipped = "--only builds part of the recipe (`mdeploy bench RECIPE` measures)"
        return
    try:
        step = bench_for_build(result.recipe, result.build_dir, result.manifest, use_cache=use_cache, log=progress)
    except MdeployError as err:  # reported after the build's summary: the artifacts are there
        result.bench_error = err
        return
    result.bench = step
    for check in step["checks"]:
        name = f"{check['artifact']}@{check['device']} threads={check['threads']} {check['delegate']}"
        if check["limit_ms"] is None:
            result.gates.append(GateResult("bench", name, "measured", [], {"median_ms": check["median_ms"]}))
            continue
        detail = {"check": "median latency", "ok": check["ok"], "value": check["median_ms"], "limit": check["limit_ms"],
                  "detail": f"{check['median_ms']:.3f} ms vs {check['limit_ms']:g} ms"}
        result.gates.append(GateResult("bench", name, "passed" if check["ok"] else "failed", [detail], {"median_ms": check["median_ms"]}))
    manifest_path = result.build_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    bench_gates = {
        "max_latency_ms": dict(result.recipe.bench.max_latency_ms),
        "results": [g.to_json() for g in result.gates if g.gate == "bench"],
    }
    if manifest["gates"].get("bench") != json.loads(json.dumps(bench_gates)):
        manifest["gates"]["bench"] = bench_gates
        write_json(manifest_path, manifest)
    result.manifest = manifest


def _check_build_dir(build_dir: Path) -> None:
    if build_dir.is_symlink():  # a build swaps its folder whole: it would move the link aside, not build in it
        raise InputError(
            f"{build_dir} is a symbolic link; mdeploy replaces a build folder whole and will not replace a link",
            hint=f"remove the link (it points to {os.path.realpath(build_dir)}), or choose another folder with --out DIR",
        )
    recover_dir(build_dir)
    if build_dir.exists() and not build_dir.is_dir():
        raise InputError(f"{build_dir} exists and is not a folder; mdeploy will not replace it", hint="use --out DIR")
    if build_dir.is_dir() and not (build_dir / "manifest.json").is_file() and any(build_dir.iterdir()):
        raise InputError(
            f"{build_dir} exists and is not an mdeploy build folder (no manifest.json); mdeploy will not replace it",
            hint="move it away or build elsewhere with --out DIR",
        )


def _write_build(build_dir: Path, records: dict[str, StageRecord], manifest: dict, cache: Cache | None = None) -> str:
    """Leave an intact, identical build alone; otherwise assemble a new one and swap it in.

    Benchmark results of artifacts whose bytes did not change are kept (`bench/`), and so is
    everything in the old folder that is not mdeploy's (files and folders a user put there).
    """
    from mdeploy.devices import results as bench_results

    manifest_path = build_dir / "manifest.json"
    if manifest_path.is_file() and _artifacts_intact(build_dir, records):
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old is not None and manifest_matches(old, manifest):
            if "bench" in old.get("gates", {}):  # the bench step (after this) brings them up to date
                manifest = dict(manifest, gates=dict(manifest["gates"], bench=old["gates"]["bench"]))
            if old == manifest:
                return "unchanged"
            write_json(manifest_path, manifest)
            return "manifest"
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = unique_sibling(build_dir, "tmp")
    try:
        staging.mkdir()
        for record in records.values():
            if record.out.is_dir():
                copy_tree_into(record.out, staging)
        bench_results.carry_over(build_dir, staging, manifest)
        if build_dir.is_dir():
            carry_over_others(build_dir, staging, _owned_by_mdeploy(build_dir, records, cache))
        write_json(staging / "manifest.json", manifest)
        swap_dir(staging, build_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return "assembled"


def _artifacts_intact(build_dir: Path, records: dict[str, StageRecord]) -> bool:
    """Every file of the records is in the build folder with the sha256 its record gives."""
    for record in records.values():
        for rel, meta in record.data.get("files", {}).items():
            try:
                path = build_dir / rel
                if os.stat(path).st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
                    return False
            except OSError:
                return False
    return True


def _owned_by_mdeploy(build_dir: Path, records: dict[str, StageRecord], cache: Cache | None):
    """A test for relative paths in an old build folder: True for what mdeploy wrote there
    (manifest.json, report/, bench/, the files of this build's and of the old manifest's
    stages, the old manifest's artifacts); the rest is the user's and is kept."""
    files = {"manifest.json"}
    folders = ["report/", "bench/"]
    for record in records.values():
        files.update(record.data.get("files", {}))
    try:
        old = json.loads((build_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    if not isinstance(old, dict):
        old = {}
    for stage in old.get("stages", []) if isinstance(old.get("stages"), list) else []:
        key = stage.get("key") if isinstance(stage, dict) else None
        if cache is None or not isinstance(key, str) or len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            continue
        try:
            files.update(json.loads((cache.entry(key) / RECORD).read_text(encoding="utf-8"))["files"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    for art in old.get("artifacts", []) if isinstance(old.get("artifacts"), list) else []:
        path = art.get("path") if isinstance(art, dict) else None
        if isinstance(path, str) and path.strip("/"):
            files.add(path.strip("/"))
            folders.append(path.strip("/") + "/")
    folders_t = tuple(folders)
    return lambda rel: rel in files or rel.startswith(folders_t)
