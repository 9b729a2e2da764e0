"""Every format for a trained recipe: conversion wall time, size, parity and PCKh per artifact.

    python formats.py ../recipes/cpm_android.yaml [--out DIR]

Builds the recipe with every TFLite variant, ONNX, Core ML and MACE (training comes from
the cache when the recipe was built before with the same cache), then reads the manifest:
stage seconds are the conversion times measured by the build itself.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

from common import MDEPLOY, REPO, machine

ALL = [
    "export.tflite={variants: [fp32, fp16, dynamic, int8], calibration: {samples: 200}}",
    "export.onnx={opset: 17}",
    "export.coreml={precision: fp16}",
    "export.mace={runtime: cpu+gpu}",
    "app=",  # measure the formats; leave the committed demo apps alone
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "build")
    args = ap.parse_args()
    cmd = MDEPLOY + ["build", str(args.recipe.absolute()), "--out", str(args.out), "--json"] + [a for s in ALL for a in ("--set", s)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), cwd=REPO)
    if proc.returncode not in (0, 1):
        raise SystemExit(proc.stderr[-3000:])
    summary = json.loads(proc.stdout)
    manifest = json.loads((Path(summary["build_dir"]) / "manifest.json").read_text())
    seconds = {s["name"]: s.get("seconds") for s in manifest["stages"]}
    gates = {(g["gate"], g["artifact"]): g for g in summary["gates"]}
    print(f"# formats of {args.recipe.name}, {datetime.date.today()}, {machine()}")
    print("| artifact | conversion | size | parity max_abs | agreement | PCKh@0.5 | drop | status |")
    for art in manifest["artifacts"]:
        p, a = gates.get(("parity", art["id"])), gates.get(("accuracy", art["id"]))
        pm = p["metrics"] if p else {}
        am = a["metrics"] if a else {}
        pck = am.get("metrics", {}).get("pckh@0.5") if am else None
        conv = seconds.get(art["stage"])
        print(
            f"| {art['id']} | {'' if art['stage'] in ('model', 'train') or conv is None else f'{conv:.1f} s'} | {art['size'] / 1e6:.2f} MB | "
            f"{pm.get('max_abs', '-') if 'max_abs' in pm else pm.get('unverified', '-')} | {pm.get('agreement', '-')} | "
            f"{pck if pck is not None else '-'} | {am.get('drop', '-') if am else '-'} | {(p or a or {}).get('status', '-')} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
