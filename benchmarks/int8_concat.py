"""Int8 concatenations: kept, split into per-part convolutions, or with faint parts scaled up.

A CPM or OpenPose stage reads concat(features, previous heatmaps, ...) and TFLite's int8
concatenation gives all its inputs one scale (`export.tflite.int8_concat`,
exporters/xnnpack_rewrites.py). This builds, as a user would (`mdeploy build ... --set
export.tflite.int8_concat=MODE`), both imported releases with TFLite fp32 and int8 once per mode:

- the PoseEstimationForMobile CPM (recipes/pefm_cpm.yaml), calibrated on the 12 COCO people of
  ../shared/data/realkp plus the package photos; per set of people (AI Challenger, MPII, COCO)
  on XNNPACK and on TFLite's reference kernels: PCKh@0.5 where the set has head sizes, the mean
  distance each int8 keypoint moves from fp32's (model-input pixels, 192 x 192), the share moved
  more than 8 px, and the mean absolute heatmap difference;
- tf-openpose mobilenet_thin (recipes/openpose_thin.yaml, calibrated on the AI Challenger photos
  as the recipe says): COCO keypoint AP on the 12 COCO people, from each build's manifest.

What `auto` (the default) did to each model is read from its manifest. Then each model's files
are timed on XNNPACK, interleaved in one process (median, 1 and 2 threads).

    python benchmarks/int8_concat.py [--out /tmp/mdeploy-int8-concat] [--runs 100] [--models pefm openpose]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
from common import REPO, build_with, machine
from int8_fidelity import REALKP, latency, outputs, people

MODES = ("keep", "split", "scale", "auto")


def build(recipe: str, out: Path, mode: str, extra: list[str]) -> Path:
    folder = out / f"{Path(recipe).stem}_{mode}"
    build_with(REPO / "recipes" / recipe, folder, ["export.tflite.variants=[fp32, int8]",
                                                  f"export.tflite.int8_concat={mode}", *extra])
    return next(p for p in folder.iterdir() if (p / "manifest.json").is_file())


def concat_details(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    (int8,) = [a for a in manifest["artifacts"] if a["id"] == "tflite/int8"]
    return int8["details"].get("int8_concat", {})


def accuracy(folder: Path) -> dict:
    """{artifact: its primary metric} on each split, from the build's manifest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    out = {}
    for result in manifest["gates"]["accuracy"]["results"]:
        metrics = result["metrics"]
        if metrics.get("metrics"):
            out[(result["artifact"], metrics.get("split", {}).get("name"))] = metrics["metrics"][metrics["primary"]]
    return out


def timing(files: dict, x: np.ndarray, runs: int) -> None:
    print("\n| file | 1 thread ms | x fp32 | 2 threads ms | x fp32 |\n|---|---|---|---|---|")
    timed = {threads: latency(files, x, threads, runs) for threads in (1, 2)}
    for name in files:
        one, two = timed[1][name], timed[2][name]
        print(f"| {name} | {one:.2f} | {one / timed[1]['fp32']:.2f} | {two:.2f} | {two / timed[2]['fp32']:.2f} |")


def pckh(points: np.ndarray, affines, ds, spec) -> str:
    from mdeploy.evaluate.decode import to_source
    from mdeploy.evaluate.evaluator import score

    source = np.stack([to_source(points[j], affines[j]) for j in range(len(points))])
    value = score(source, np.zeros((len(points), points.shape[1], 2)), ds, spec).metrics.get("pckh@0.5")
    return "-" if value is None else f"{value:.1f}"


def pefm(out: Path, runs: int) -> None:
    from mdeploy.evaluate.decode import decode_spec
    from mdeploy.evaluate.evaluator import prepare
    from mdeploy.spec import ModelSpec

    coco = REALKP / "coco"
    calibration = f"data.calibration={{coco: {{annotations: {coco / 'test_coco.json'}, images: {coco}}}}}"
    folders = {mode: build("pefm_cpm.yaml", out, mode, [calibration]) for mode in MODES}
    print("PEFM CPM release, calibrated on the 12 COCO people + 2 photos; what auto did: "
          f"{json.dumps(concat_details(folders['auto']))}\n")
    first = folders["keep"]
    spec = ModelSpec.load(first / "model" / "spec.json")
    fp32 = first / "tflite" / "pefm_cpm_fp32.tflite"
    print("| set | int8_concat | kernels | PCKh@0.5 (fp32) | mean move px | moved > 8 px | heatmap MAE |")
    print("|---|---|---|---|---|---|---|")
    for set_name, ds in people().items():
        x, affines = prepare(spec, ds, range(len(ds)))
        ref_hm = outputs(fp32, "xnnpack", x)
        ref_points = decode_spec(ref_hm, spec.output_stride, spec.decode)

        for mode, folder in folders.items():
            for kernels in ("xnnpack", "reference"):
                hm = outputs(folder / "tflite" / "pefm_cpm_int8.tflite", kernels, x)
                points = decode_spec(hm, spec.output_stride, spec.decode)
                move = np.linalg.norm(points[..., :2] - ref_points[..., :2], axis=-1)
                print(f"| {set_name} | {mode} | {'XNNPACK' if kernels == 'xnnpack' else 'reference'} "
                      f"| {pckh(points, affines, ds, spec)} ({pckh(ref_points, affines, ds, spec)}) | {move.mean():.1f} | {np.mean(move > 8):.2f} "
                      f"| {np.abs(hm - ref_hm).mean():.4f} |")
    files = {"fp32": fp32, **{f"int8, {mode}": f / "tflite" / "pefm_cpm_int8.tflite" for mode, f in folders.items()}}
    timing(files, prepare(spec, next(iter(people().values())), [0])[0], runs)


def openpose(out: Path, runs: int) -> None:
    folders = {mode: build("openpose_thin.yaml", out, mode, []) for mode in MODES}
    print(f"\ntf-openpose mobilenet_thin; what auto did: {json.dumps(concat_details(folders['auto']))}\n")
    print("| int8_concat | AP real_coco, int8 (fp32) |\n|---|---|")
    for mode, folder in folders.items():
        scores = accuracy(folder)
        int8 = next(v for (artifact, _), v in scores.items() if artifact == "tflite/int8")
        fp32 = next(v for (artifact, _), v in scores.items() if artifact == "tflite/fp32")
        print(f"| {mode} | {int8:.1f} ({fp32:.1f}) |")
    first = folders["keep"]
    files = {"fp32": first / "tflite" / "openpose_thin_fp32.tflite",
             **{f"int8, {mode}": f / "tflite" / "openpose_thin_int8.tflite" for mode, f in folders.items()}}
    x = np.random.default_rng(0).uniform(0, 255, (1, 368, 432, 3)).astype(np.float32)
    timing(files, x, max(runs // 4, 10))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/mdeploy-int8-concat"))
    parser.add_argument("--runs", type=int, default=100, help="timed runs per file and thread count (a quarter for openpose)")
    parser.add_argument("--models", nargs="+", choices=("pefm", "openpose"), default=["pefm", "openpose"])
    args = parser.parse_args()
    if not REALKP.is_dir():
        raise SystemExit(f"{REALKP} is absent: these measurements need ../shared")
    sys.path.insert(0, str(REPO))
    print(f"Machine: {machine()}; {datetime.date.today()}\n")
    if "pefm" in args.models:
        pefm(args.out, args.runs)
    if "openpose" in args.models:
        openpose(args.out, args.runs)


if __name__ == "__main__":
    main()
