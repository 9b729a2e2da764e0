"""The multi-person family next to the single-person CPM: latency, size, params/MACs and accuracy.

    mdeploy build recipes/openpose_thin.yaml      # tf-openpose mobilenet_thin, imported
    python benchmarks/openpose.py [--runs 50]

Latency: one child process loads the openpose_thin TFLite fp32 and the PoseEstimationForMobile
CPM release's model.tflite (../shared) and times them interleaved (A B A B ...) with LiteRT
(XNNPACK, 2 threads) on a fixed input: the median and p90 of --runs each. Params and MACs come
from the registered architectures (`mdeploy models --json`); AP from the build's manifest
(COCO keypoint AP on the real COCO split it names).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys

from common import REPO, interleaved_latency, machine

PEFM_TFLITE = REPO.parent / "shared" / "reference" / "pefm" / "cpm_model" / "model.tflite"
BUILD = REPO / "build" / "openpose_thin"



def architectures() -> dict:
    out = subprocess.run([sys.executable, "-m", "mdeploy", "models", "--json"], capture_output=True, text=True, check=True, cwd=REPO)
    data = json.loads(out.stdout)
    rows = data if isinstance(data, list) else data.get("models", data)
    return {r["name"]: r for r in rows if r["name"] in ("openpose_mobilenet_thin", "openpose_mobilenet_v2", "mv2_cpm")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    print(f"# {datetime.date.today()} on {machine()}")
    for name, row in architectures().items():
        print(f"{name}: {json.dumps({k: row.get(k) for k in ('parameters', 'macs', 'input_size', 'reference')})}")
    manifest = json.loads((BUILD / "manifest.json").read_text())
    for gate in manifest["gates"]["accuracy"]["results"]:
        m = gate["metrics"]
        if m.get("metrics"):
            split = m.get("split", {})
            print(f"AP {gate['artifact']}: {m['metrics']} on {split.get('name')} ({split.get('kind')}, {split.get('people')} people)")
    fp32 = BUILD / "tflite" / "openpose_thin_fp32.tflite"
    paths = [fp32, PEFM_TFLITE] if PEFM_TFLITE.is_file() else [fp32]
    for p in paths:
        print(f"size {p.name}: {p.stat().st_size:,} bytes")
    times = interleaved_latency(paths, threads=2, warmup=5, runs=args.runs, input_range=(0.0, 255.0))
    for p in paths:
        r = times[str(p)]
        print(f"latency {p.name}: median {r['median']:.1f} ms, p90 {r['p90']:.1f} ms (XNNPACK, 2 threads, interleaved)")


if __name__ == "__main__":
    main()
