"""What the CPM's `refine_kernel` costs in accuracy and buys in latency.

Trains the quickstart recipe (recipes/cpm_android.yaml: mv2_cpm width 0.5 on synthetic figures,
4 epochs on CPU) with 7x7 refinement kernels (the release's choice) and with 3x3, for each
training seed given, then reads PCKh@0.5 of the fp32 TFLite artifact from the manifest and its
host latency from the build's bench step (LiteRT, 1 thread, XNNPACK). The recipe is copied to
a temporary folder so the demo app in the repository is left alone.

    python benchmarks/refine_kernel.py [SEED ...]      # default seeds: 0 1
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from common import MDEPLOY, REPO, machine, timed

BENCH = "bench={runs: 50, warmup: 5, trials: 3, artifacts: [tflite/fp32]}"


def run(kernel: int, seed: int, tmp: Path) -> dict:
    folder = tmp / f"k{kernel}_s{seed}"
    folder.mkdir()
    recipe = folder / "recipes" / "cpm_android.yaml"
    recipe.parent.mkdir()
    shutil.copy(REPO / "recipes" / "cpm_android.yaml", recipe)
    env = dict(os.environ, MDEPLOY_CACHE_DIR=str(folder / "cache"))
    overrides = ["--set", f"model.params.refine_kernel={kernel}", "--set", f"train.seed={seed}", "--set", BENCH]
    seconds = timed(MDEPLOY + ["build", str(recipe), "--out", str(folder / "build"), *overrides], env=env, cwd=folder)
    manifest = json.loads((folder / "build" / "cpm_android" / "manifest.json").read_text())
    (accuracy,) = [g for g in manifest["gates"]["accuracy"]["results"] if g["artifact"] == "tflite/fp32"]
    metrics = accuracy["metrics"]["metrics"]
    bench = json.loads((folder / "build" / "cpm_android" / "bench" / "host.json").read_text())
    (result,) = bench["results"]
    return {
        "kernel": kernel,
        "seed": seed,
        "pckh": metrics["pckh@0.5"],
        "labelled": metrics["pckh@0.5_labelled"],
        "latency_ms": result["latency"]["median_ms"],
        "p90_ms": result["latency"]["p90_ms"],
        "final_loss": (manifest["training"]["history"] or [{}])[-1].get("loss"),
        "seconds": seconds,
    }


def main(seeds: list[int]) -> None:
    print(f"# refine_kernel 7 vs 3, {datetime.date.today()}, {machine()}")
    rows = []
    with tempfile.TemporaryDirectory() as name:
        for seed in seeds:
            for kernel in (7, 3):
                row = run(kernel, seed, Path(name))
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| refine_kernel | seed | PCKh@0.5 | labelled PCKh | fp32 host latency (median / p90) | build wall |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kernel']}x{r['kernel']} | {r['seed']} | {r['pckh']:.1f}% | {r['labelled']:.1f}% | {r['latency_ms']:.2f} / {r['p90_ms']:.2f} ms | {r['seconds']:.0f} s |")
    for kernel in (7, 3):
        mine = [r["pckh"] for r in rows if r["kernel"] == kernel]
        print(f"refine_kernel {kernel}: mean PCKh@0.5 {statistics.mean(mine):.1f}% over {len(mine)} seed(s)")


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [0, 1])
