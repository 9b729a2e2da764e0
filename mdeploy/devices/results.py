"""Benchmark results in a build: `bench/<device>.json` and the manifest's `bench` section.

A result names the artifact's sha256, so it stays attached to exactly the bytes it measured:
a later build keeps the results of artifacts it left unchanged and drops the others.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from mdeploy.fsutil import write_json
from mdeploy.limits import read_build_file

BENCH_DIR = "bench"
SCHEMA = "mdeploy.bench/1"


def result_key(result: dict) -> tuple:
    return (result.get("artifact"), result.get("sha256"), result.get("threads"), result.get("delegate"))


def device_file(build_dir: Path, device: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", device)
    return Path(build_dir) / BENCH_DIR / f"{safe}.json"


def load(build_dir: Path) -> dict[str, dict]:
    """device -> its results document, for every readable bench/*.json of a build."""
    out = {}
    folder = Path(build_dir) / BENCH_DIR
    if not folder.is_dir() or folder.is_symlink():
        return out
    for path in sorted(folder.glob("*.json")):
        try:  # a symlink, FIFO or device here is skipped, never read (mdeploy.limits)
            data = json.loads(read_build_file(path))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            out[data.get("device", path.stem)] = data
    return out


def still_valid(data: dict, artifact_hashes: set[str]) -> dict | None:
    """`data` with only the results whose artifact bytes are still in the build (None if none remain)."""
    kept = [r for r in data.get("results", []) if r.get("sha256") in artifact_hashes]
    if not kept:
        return None
    return dict(data, results=kept)


def summary(documents: dict[str, dict]) -> dict:
    """The manifest's view of the results: one line per measurement."""
    out = {}
    for device, data in sorted(documents.items()):
        out[device] = {
            "file": f"{BENCH_DIR}/{device_file(Path('.'), device).name}",
            "model": (data.get("info") or {}).get("model"),
            "results": [
                {
                    "artifact": r.get("artifact"),
                    "sha256": r.get("sha256"),
                    "threads": r.get("threads"),
                    "delegate": r.get("delegate"),
                    "median_ms": r["latency"]["median_ms"],
                    "p90_ms": r["latency"]["p90_ms"],
                    "spread_pct": r["latency"]["spread_pct"],
                    "throttled": bool(r.get("throttled")),
                }
                for r in data.get("results", [])
            ],
        }
    return out


def attach(manifest: dict, build_dir: Path) -> dict:
    """The manifest with the `bench` section of the still-valid results found in `build_dir`."""
    hashes = {a["sha256"] for a in manifest.get("artifacts", [])}
    docs = {}
    for device, data in load(build_dir).items():
        valid = still_valid(data, hashes)
        if valid is not None:
            docs[device] = valid
    manifest = dict(manifest)
    if docs:
        manifest["bench"] = summary(docs)
    else:
        manifest.pop("bench", None)
    return manifest


def carry_over(old_build: Path, staging: Path, manifest: dict) -> None:
    """Copy the still-valid results of the previous build folder into the one being assembled."""
    hashes = {a["sha256"] for a in manifest.get("artifacts", [])}
    for device, data in load(old_build).items():
        valid = still_valid(data, hashes)
        if valid is not None:
            write_json(device_file(staging, device), valid)


def record(build_dir: Path, document: dict) -> Path:
    """Merge one device's new results into the build (same artifact bytes, threads and delegate: replaced)."""
    path = device_file(build_dir, document["device"])
    merged = dict(document)
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if old.get("schema") == SCHEMA:
            fresh = {result_key(r) for r in document.get("results", [])}
            merged["results"] = [r for r in old.get("results", []) if result_key(r) not in fresh] + list(document.get("results", []))
    write_json(path, merged)
    manifest_path = Path(build_dir) / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        write_json(manifest_path, attach(manifest, build_dir))
    return path


def build_of(path: Path) -> Path | None:
    """The build folder an artifact file lies in (the nearest parent holding manifest.json)."""
    for parent in Path(os.path.abspath(path)).parents:
        if (parent / "manifest.json").is_file():
            return parent
    return None
