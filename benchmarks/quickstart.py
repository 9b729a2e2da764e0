"""The quickstart, timed as a user runs it: `mdeploy build recipes/cpm_android.yaml` from an
empty cache (data generation, training, export, parity, accuracy), and its PCKh."""

from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

from common import MDEPLOY, REPO, machine, timed


def main(recipe: str = "recipes/cpm_android.yaml") -> None:
    print(f"# quickstart, {datetime.date.today()}, {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, MDEPLOY_CACHE_DIR=str(Path(tmp) / "cache"))
        seconds = timed(MDEPLOY + ["build", recipe, "--out", str(Path(tmp) / "build")], env=env, cwd=REPO)
        name = Path(recipe).stem
        manifest = json.loads((Path(tmp) / "build" / name / "manifest.json").read_text())
    print(f"{recipe}: {seconds:.0f} s wall")
    stages = {s["name"]: s.get("seconds") for s in manifest["stages"]}
    print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items() if v))
    t = manifest["training"]
    print(f"training: {t['steps']} steps, {t['images_per_second']} images/s")
    for g in manifest["gates"]["accuracy"]["results"]:
        m = g["metrics"].get("metrics", {})
        print(f"{g['artifact']}: PCKh@0.5 {m.get('pckh@0.5')}%, labelled {m.get('pckh@0.5_labelled')}%, PEFM PCKh {m.get('pefm_pckh')}%")
    for g in manifest["gates"]["parity"]["results"]:
        print(f"parity {g['artifact']}: max_abs {g['metrics'].get('max_abs'):.3g}, agreement {g['metrics'].get('agreement')}")


if __name__ == "__main__":
    main(*sys.argv[1:])
