"""manifest.json: what a build holds and how it was made.

Recipe hash, every artifact with sha256, size and the stage that made it, each stage's
cache key, the versions of the tools involved, gate results, and the recipe keys this
version did not act on. The manifest holds no timestamps, so the same inputs give the
same manifest byte for byte.
"""

from __future__ import annotations

from pathlib import Path

from mdeploy import __version__
from mdeploy.fsutil import digest_entries, sha256_json
from mdeploy.pipeline import environment_versions
from mdeploy.recipe.source import display_path

SCHEMA = "mdeploy.manifest/1"
TOOLS = ("tensorflow", "keras", "ai-edge-litert", "numpy", "pydantic")


def load_manifest(build_dir: Path, hint: str = "run `mdeploy build` again") -> dict:
    """The manifest of the build in `build_dir`; a missing, unreadable or foreign one is bad input."""
    import json

    from mdeploy.errors import InputError

    path = Path(build_dir) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{build_dir} is not a build folder (no manifest.json)", hint=hint)
    try:  # never through a symlink, never a FIFO or device, within `build_json_bytes` (mdeploy.limits)
        from mdeploy.limits import read_build_file

        manifest = json.loads(read_build_file(path).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path} cannot be read as JSON ({err})", hint=hint) from None
    if not isinstance(manifest, dict):
        raise InputError(f"{path} holds a JSON {type(manifest).__name__}, not an mdeploy manifest", hint=hint)
    if manifest.get("schema") != SCHEMA or not isinstance(manifest.get("artifacts"), list):
        raise InputError(f"{path} is not an mdeploy manifest (schema {manifest.get('schema')!r}, expected {SCHEMA!r})", hint=hint)
    problem = _missing_fields(manifest)
    if problem:
        raise InputError(f"{path} is incomplete: {problem}", hint=hint)
    return manifest


_ARTIFACT_FIELDS = {"id": str, "path": str, "format": str, "sha256": str, "size": int}


def _missing_fields(manifest: dict) -> str | None:
    """What a manifest lacks that its readers (report, compare, apps, eval) index directly."""
    if not isinstance(manifest.get("name"), str):
        return "no 'name' (a string)"
    for i, art in enumerate(manifest["artifacts"]):
        if not isinstance(art, dict):
            return f"artifacts[{i}] is not a mapping"
        for key, kind in _ARTIFACT_FIELDS.items():
            value = art.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"artifacts[{i}] has no {key!r} ({'a string' if kind is str else 'an integer'})"
    gates = manifest.get("gates", {})
    if not isinstance(gates, dict):
        return "'gates' is not a mapping"
    for name, section in gates.items():
        results = (section or {}).get("results", []) if isinstance(section, (dict, type(None))) else None
        if not isinstance(results, list) or not all(
            isinstance(g, dict) and isinstance(g.get("artifact"), str) and isinstance(g.get("status"), str) for g in results
        ):
            return f"gates.{name}.results is not a list of results with 'artifact' and 'status'"
    return None


def recipe_digest(recipe) -> str:
    """sha256 of the validated recipe (defaults filled, paths relative to the recipe)."""
    return sha256_json(recipe.model_dump(mode="json", by_alias=True, context={"root": recipe.root}))


def artifact_entries(record) -> list[dict]:
    files = record.data.get("files", {})
    out = []
    for art in record.artifacts:
        path = art["path"]
        if path in files:
            sha, size = files[path]["sha256"], files[path]["size"]
        else:
            prefix = path.rstrip("/") + "/"
            inside = {rel[len(prefix):]: meta for rel, meta in files.items() if rel.startswith(prefix)}
            sha = digest_entries((rel, meta["sha256"]) for rel, meta in inside.items())
            size = sum(meta["size"] for meta in inside.values())
        entry = {"id": art["id"], "path": path, "format": art["format"], "variant": art.get("variant")}
        entry.update({"sha256": sha, "size": size, "stage": record.name})
        why = nondeterminism(art["id"], art["format"])
        entry["reproducible"] = why is None
        if why is not None:
            entry["nondeterministic"] = why
        extra = {k: v for k, v in art.items() if k not in entry}
        if extra:
            entry["details"] = extra
        out.append(entry)
    return out


def nondeterminism(artifact_id: str, fmt: str) -> str | None:
    """Why an artifact can differ between two builds of the same inputs (None: byte-identical)."""
    from mdeploy.exporters.reproducible import NONDETERMINISTIC

    if fmt == "saved_model":
        return NONDETERMINISTIC["saved_model"]
    return NONDETERMINISTIC.get(artifact_id)


def build_manifest(recipe, plan, outcome, gates) -> dict:
    stages = []
    artifacts = []
    for stage in plan.stages:
        record = outcome.records.get(stage.name)
        if record is None:
            stages.append({"name": stage.name, "status": "skipped"})
            continue
        stages.append({"name": stage.name, "key": record.key, "seconds": record.data.get("seconds")})
        if stage.publish:
            artifacts += artifact_entries(record)
    by_gate: dict[str, list] = {}
    for g in gates:
        by_gate.setdefault(g.gate, []).append(g.to_json())
    return {
        "schema": SCHEMA,
        "name": recipe.name,
        "recipe": {
            "path": display_path(recipe.path) if recipe.path else None,
            "sha256": recipe_digest(recipe),
            "overrides": list(recipe.overrides),
        },
        "mdeploy": __version__,
        "tools": environment_versions(TOOLS),
        "spec": "model/spec.json" if "model" in outcome.records else None,
        "artifacts": artifacts,
        "stages": stages,
        "gates": {
            "parity": {"policy": recipe.verify.parity, "results": by_gate.get("parity", [])},
            "accuracy": {
                "max_drop": recipe.verify.accuracy.max_drop if recipe.verify.accuracy else None,
                "splits": {k: v.max_drop for k, v in recipe.verify.accuracy.splits.items()} if recipe.verify.accuracy else {},
                "results": by_gate.get("accuracy", []),
            },
            "ops": {"policy": recipe.verify.gpu_ops, "results": by_gate.get("ops", [])},
            "people": {"policy": recipe.verify.find_people, "results": by_gate.get("people", [])},
        },
        "training": _training(outcome),
        "provenance": _provenance(outcome),
        "validation": _validation(recipe, gates),
        "not_built": [p.to_json() for p in plan.pending],
    }


def manifest_matches(old: dict, new: dict) -> bool:
    """Whether two manifests describe the same files (then only manifest.json may need writing)."""

    def files(m: dict) -> list:
        return sorted((a["path"], a["sha256"]) for a in m.get("artifacts", []))

    def keys(m: dict) -> list:
        return [(s["name"], s.get("key")) for s in m.get("stages", [])]

    return files(old) == files(new) and keys(old) == keys(new)


def _provenance(outcome) -> dict | None:
    """What the model was trained on (from spec.json), so reports can say what a number means."""
    from mdeploy.spec import ModelSpec, provenance

    record = outcome.records.get("model")
    if record is None or not (record.out / "model" / "spec.json").is_file():
        return None
    return provenance(ModelSpec.load(record.out / "model" / "spec.json").source)


def _validation(recipe, gates) -> list[dict]:
    """Every validation split: name, kind, size, the metric its gate reads, normalisers."""
    out = []
    for name, section, _ in recipe.val_splits():
        ref = next((g for g in gates if g.gate == "accuracy" and g.artifact == "model" and g.split == name), None)
        metrics = ref.metrics if ref is not None else {}
        info = metrics.get("split") or {"name": name, "kind": section.kind_of, "source": section.source}
        out.append(info | {"metric": metrics.get("metric"), "normalisers": metrics.get("normalisers", {})})
    return out


def _training(outcome) -> dict | None:
    record = outcome.records.get("train")
    return record.results.get("train") if record else None
