"""Accuracy on real labelled people (../shared/data/realkp), every split, every artifact.

Builds the PoseEstimationForMobile CPM release (recipes/pefm_cpm.yaml, whose optional real
splits are the shared AI Challenger and MPII people), adds the COCO people, and prints one
Markdown row per (model, split): the split's primary metric, PEFM's own metric where it
applies, and what the split is. Pass `--build DIR` (repeatable) to add builds made elsewhere,
e.g. the quickstart's build/cpm_android (its real split is in its recipe).

    python benchmarks/real_accuracy.py [--build build/cpm_android] [--out /tmp/mdeploy-real]
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from common import REPO, build_with, machine

REALKP = REPO.parent / "shared" / "data" / "realkp"


def pefm_build(out: Path) -> Path:
    coco = REALKP / "coco"
    overrides = [
        "export.tflite.variants=[fp32, fp16]",
        "data.val=[{name: real_aic, kind: real, coco: {annotations: %s, images: %s}}, "
        "{name: real_coco, kind: real, coco: {annotations: %s, images: %s}}, "
        "{name: real_mpii, kind: real, mpii: {annotations: %s, images: %s}}]"
        % (REALKP / "aic" / "test_aic.json", REALKP / "aic", coco / "test_coco.json", coco,
           REALKP / "mpii" / "test_mpii.json", REALKP / "mpii"),
    ]
    build_with(REPO / "recipes" / "pefm_cpm.yaml", out, overrides)
    return out / "pefm_cpm"


def rows(build_dir: Path) -> list[str]:
    manifest = json.loads((build_dir / "manifest.json").read_text())
    out = []
    for split in manifest.get("validation", []):
        for g in manifest["gates"]["accuracy"]["results"]:
            if g.get("split") != split["name"] or "metrics" not in g["metrics"]:
                continue
            m = g["metrics"]["metrics"]
            metric = split["metric"]
            pefm = m.get("pefm_pckh")
            out.append(
                f"| {manifest['name']} | {g['artifact']} | {split['name']} ({split['kind']}, {split['people']} people) "
                f"| {metric} | {m[metric]:.1f} | {'-' if pefm is None else f'{pefm:.1f}'} |"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", action="append", default=[], type=Path)
    parser.add_argument("--out", type=Path, default=Path("/tmp/mdeploy-real"))
    args = parser.parse_args()
    if not REALKP.is_dir():
        raise SystemExit(f"{REALKP} is absent: these measurements need ../shared")
    builds = [pefm_build(args.out)] + args.build
    print(f"Machine: {machine()}; {datetime.date.today()}\n")
    print("| model | artifact | split | metric | value % | PEFM PCKh % |")
    print("|---|---|---|---|---|---|")
    for b in builds:
        print("\n".join(rows(b)))


if __name__ == "__main__":
    main()
