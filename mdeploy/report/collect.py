"""report.json: every number of a build in one document, read from its manifest and results.

Built from `manifest.json`, `bench/*.json` and the recipe's summary (kept from the build
that wrote the report, so `mdeploy report BUILD_DIR` can regenerate it anywhere).
"""

from __future__ import annotations

from pathlib import Path

from mdeploy import __version__
from mdeploy.devices import results as bench_results
from mdeploy.fsutil import sha256_json
from mdeploy.report.manifest import load_manifest

SCHEMA = "mdeploy.report/1"


def _gate_map(manifest: dict, gate: str) -> dict[str, dict]:
    return {g["artifact"]: g for g in (manifest.get("gates", {}).get(gate) or {}).get("results", [])}


def _accuracy_map(manifest: dict) -> dict[str, dict[str, dict]]:
    """artifact -> split -> accuracy gate result (every validation split of the build)."""
    out: dict[str, dict[str, dict]] = {}
    for g in (manifest.get("gates", {}).get("accuracy") or {}).get("results", []):
        out.setdefault(g["artifact"], {})[g.get("split") or "val"] = g
    return out


def _accuracy_entry(gate: dict) -> dict:
    m = gate.get("metrics") or {}
    values = m.get("metrics") or {}
    metric = m.get("metric") or m.get("primary")
    ref = ((m.get("reference_kernels") or {}).get("metrics") or {}).get(metric) if metric else None
    crops = m.get("crops") or {}  # scored through several crops of each person: the value is their mean
    original = values.get(metric) if metric else None
    return {"status": gate["status"], "metric": metric, "value": crops["metrics"].get(metric) if crops and metric else original,
            "value_original": original, "reference_kernels": ref,
            "pckh": values.get("pckh@0.5"), "pefm_pckh": values.get("pefm_pckh"), "drop": m.get("drop"),
            "per_joint": m.get("per_joint"), "reason": m.get("unverified") or m.get("runtime_error"),
            "changed_joints": m.get("changed_joints"), "crops": crops.get("copies"),
            "drop_se": m.get("drop_se"), "drop_original": m.get("drop_original")}


def artifact_rows(manifest: dict) -> list[dict]:
    """One row per model artifact: format, variant, size, parity, accuracy, GPU fallback, status."""
    parity, accuracy, ops = _gate_map(manifest, "parity"), _accuracy_map(manifest), _gate_map(manifest, "ops")
    rank = {"real": 0, "unknown": 1, "synthetic": 2}  # plots read real people first, where a build has them
    splits = [v["name"] for v in sorted(manifest.get("validation") or [], key=lambda v: rank.get(v.get("kind"), 1))]
    rows = []
    for art in manifest.get("artifacts", []):
        if art["id"].startswith(("glue/", "spec", "train/", "model/")) or art["id"].endswith("/yml"):
            continue
        row = {
            "id": art["id"], "format": art["format"], "variant": art.get("variant"), "path": art["path"],
            "size": art["size"], "sha256": art["sha256"], "reproducible": art.get("reproducible", True),
            "nondeterministic": art.get("nondeterministic"),
            "parity": None,
            "accuracy": None,  # on the first real validation split, else the first one (the plots read it)
            "accuracy_by_split": {},
            "gpu_fallback": None,
            "xnnpack": None,  # TFLite: how XNNPACK takes the file (exporters/tflite.py: xnnpack_plan)
        }
        p = parity.get(art["id"])
        if art["id"] == "model":
            row["parity"] = {"status": "reference"}
        elif p is not None:
            m = p.get("metrics") or {}
            ref = m.get("reference_kernels") or {}
            row["parity"] = {"status": p["status"], "max_abs": m.get("max_abs"), "agreement": m.get("agreement"),
                             "reason": m.get("unverified") or m.get("runtime_error"), "kernels": m.get("kernels"),
                             "reference_kernels": {k: ref.get(k) for k in ("max_abs", "agreement", "runtime_error") if k in ref} or None}
        by_split = {split: _accuracy_entry(g) for split, g in accuracy.get(art["id"], {}).items()}
        row["accuracy_by_split"] = by_split
        first = next((by_split[s] for s in splits if s in by_split), next(iter(by_split.values()), None))
        row["accuracy"] = first
        o = ops.get(art["id"])
        details = art.get("details") or {}
        row["calibration"] = details.get("calibration")
        row["mixed_precision"] = details.get("mixed_precision")
        row["int8_rewrites"] = _int8_rewrites(details)
        row["xnnpack"] = details.get("xnnpack")
        if "gpu_fallback" in details:
            row["gpu_fallback"] = sorted({f["op"] for f in details["gpu_fallback"]})
        if o is not None:
            row["ops_status"] = o["status"]
        statuses = [(row["parity"] or {}).get("status"), row.get("ops_status")] + [a["status"] for a in by_split.values()]
        statuses = [s for s in statuses if s]
        row["status"] = "failed" if "failed" in statuses else "warned" if "warned" in statuses else \
            "unverified" if "unverified" in statuses else "ok"
        rows.append(row)
    return rows


def bench_section(build_dir: Path, manifest: dict) -> dict:
    hashes = {a["sha256"] for a in manifest.get("artifacts", [])}
    out = {}
    for device, data in sorted(bench_results.load(build_dir).items()):
        valid = bench_results.still_valid(data, hashes)
        if valid is None:
            continue
        out[device] = {
            "info": valid.get("info", {}),
            "settings": valid.get("settings", {}),
            "date": valid.get("date"),
            "results": [
                {k: r.get(k) for k in ("artifact", "sha256", "format", "threads", "delegate", "latency", "peak_memory_mb",
                                       "init_ms", "state", "throttled")}
                for r in valid.get("results", [])
            ],
            "failures": valid.get("failures", []),
        }
    return out


def collect(build_dir: Path, summary: list | None = None) -> dict:
    """The report document of the build in `build_dir` (without plots and overlays)."""
    manifest = load_manifest(build_dir)
    rows = artifact_rows(manifest)
    gates = []
    for name, section in manifest.get("gates", {}).items():
        for g in (section or {}).get("results", []):
            gates.append({"gate": name, "artifact": g["artifact"], "status": g["status"], "checks": g.get("checks", []),
                          "split": g.get("split")})
    doc = {
        "schema": SCHEMA,
        "name": manifest["name"],
        "recipe": {"path": None, "sha256": None, **(manifest.get("recipe") or {}), "summary": summary or []},
        "mdeploy": manifest.get("mdeploy"),
        "report_by": __version__,
        "tools": manifest.get("tools", {}),
        "training": manifest.get("training"),
        "provenance": manifest.get("provenance"),
        "validation": manifest.get("validation") or [],
        "artifacts": rows,
        "gates": gates,
        "bench": bench_section(build_dir, manifest),
        "not_built": manifest.get("not_built", []),
        "plots": {},
        "overlays": [],
        "compare": None,
    }
    doc["ok"] = not any(g["status"] == "failed" for g in gates)
    doc["inputs"] = sha256_json({k: doc[k] for k in ("artifacts", "gates", "bench", "recipe", "tools", "provenance", "validation")})
    return doc


def _int8_rewrites(details: dict) -> list[str]:
    """What the int8 graph rewrites changed in an artifact, one phrase each (exporters/xnnpack_rewrites.py)."""
    out = []
    concat = details.get("int8_concat")
    if concat:
        if "mode" not in concat:  # a manifest written before int8_concat: auto (the split's record alone)
            concat = {"split": concat}
        scaled, split = concat.get("scaled"), concat.get("split")
        if scaled:
            out.append(f"{scaled['parts_scaled']} faint concatenation part(s) scaled up to share its int8 range")
        if split and "undone" in split:
            out.append(f"concatenation split undone: {split['undone']}")
        elif split:
            out.append(f"{split['concatenations']} concatenation(s) split into per-part convolutions")
    prelu = details.get("int8_prelu")
    if prelu:
        out.append(f"{prelu['layers']} PReLU layer(s) as LeakyReLU")
    equalize = details.get("int8_equalize")
    if equalize:
        out.append(f"{equalize['pairs']} layer pair(s) rescaled across their ReLU ({equalize['channels']} channels, "
                   f"smallest scale {equalize['smallest_scale']:g})")
    tuned = details.get("int8_finetune")
    if tuned and "skipped" in tuned:
        out.append(f"int8 fine-tuning skipped: {tuned['skipped']}")
    elif tuned:
        rmse = tuned["int8_output_rmse"]
        out.append(f"{tuned['layers']} layer(s) fine-tuned for int8 ({tuned['steps']} steps on {tuned['images']} calibration "
                   f"images; emulated int8 output error {rmse['before']:g} -> {rmse['after']:g} rms)")
    return out
