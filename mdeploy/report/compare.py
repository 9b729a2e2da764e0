"""`mdeploy report BUILD --compare OTHER`: what changed between two builds.

Size and accuracy deltas per artifact id; latency per (device, artifact, threads, delegate)
measured in both, with the change called significant only when it exceeds the spread of
both measurements' trials (`mdeploy.devices.stats.significant`).
"""

from __future__ import annotations

import json
from pathlib import Path

from mdeploy.devices import stats


def compare(new: dict, old: dict, other: str) -> dict:
    old_artifacts = {a["id"]: a for a in old.get("artifacts", [])}
    artifacts = []
    for a in new.get("artifacts", []):
        before = old_artifacts.get(a["id"])
        if before is None:
            continue
        pckh_new = (a.get("accuracy") or {}).get("value")
        pckh_old = (before.get("accuracy") or {}).get("value")
        artifacts.append({
            "id": a["id"],
            "size_delta": a["size"] - before["size"],
            "same_bytes": a["sha256"] == before["sha256"],
            "pckh_delta": None if pckh_new is None or pckh_old is None else round(pckh_new - pckh_old, 3),
        })
    latency = []
    for device, data in new.get("bench", {}).items():
        previous = {(r.get("artifact"), r.get("threads"), r.get("delegate")): r for r in old.get("bench", {}).get(device, {}).get("results", [])}
        for r in data.get("results", []):
            before = previous.get((r.get("artifact"), r.get("threads"), r.get("delegate")))
            if before is None:
                continue
            a, b = before.get("latency") or {}, r.get("latency") or {}
            if not all(isinstance(x.get("median_ms"), (int, float)) for x in (a, b)):
                continue  # a result without a measurement (failed run, older or edited file)
            latency.append({
                "device": device, "artifact": r["artifact"], "threads": r["threads"], "delegate": r["delegate"],
                "before_ms": a["median_ms"], "after_ms": b["median_ms"],
                "change_pct": round((b["median_ms"] - a["median_ms"]) / a["median_ms"] * 100, 2) if a["median_ms"] else 0.0,
                "significant": stats.significant(a, b),
            })
    from mdeploy.report.plots import metric_label

    return {"other": other, "other_name": old.get("name"), "artifacts": artifacts, "latency": latency,
            "accuracy": metric_label(new).rpartition(", ")[0],  # what pckh_delta is a change of (points)
            "only_here": sorted(set(a["id"] for a in new.get("artifacts", [])) - set(old_artifacts)),
            "only_there": sorted(set(old_artifacts) - set(a["id"] for a in new.get("artifacts", [])))}


def model_identity(build_dir: Path) -> dict | None:
    """What model a build holds, from its model/spec.json: where it came from (the architecture
    trained, or the file imported), its keypoint set and input shape; None without a spec."""
    from mdeploy.limits import read_build_file

    try:
        spec = json.loads(read_build_file(Path(build_dir) / "model" / "spec.json"))
    except (OSError, ValueError):
        return None
    if not isinstance(spec, dict):
        return None
    source = spec.get("source") or {}
    origin = f"{source['arch']} trained" if source.get("arch") else \
        f"{source.get('format', '?')} {source['file']}" if source.get("file") else source.get("format")
    return {"origin": origin, "keypoints": (spec.get("keypoints") or {}).get("name"),
            "input": "x".join(str(d) for d in (spec.get("input") or {}).get("shape") or [])}


def differences(build_dir: Path, other_dir: Path, new: dict, old: dict) -> list[str]:
    """How two builds differ in what they are builds of (recipe name, model): empty when alike.

    A field either build does not record (an older build, a build without a model stage) is
    not called a difference."""
    out = []
    if new.get("name") != old.get("name"):
        out.append(f"recipe {new.get('name')!r} here, {old.get('name')!r} there")
    here, there = model_identity(build_dir), model_identity(other_dir)
    if here and there:
        for key, what in (("origin", "model"), ("keypoints", "keypoints"), ("input", "input")):
            if here[key] and there[key] and here[key] != there[key]:
                out.append(f"{what} {here[key]} here, {there[key]} there")
    return out
