"""Int8 fine-tuning on the multi-person tf-openpose mobilenet_thin release.

Builds recipes/openpose_thin.yaml with TFLite fp32 and int8 (calibrated on the 3 AI Challenger
photos the recipe names, plus the package photos), once plain and once per fine-tuning setting
given (`export.tflite.int8_finetune`), and prints for each int8 file: AP (OKS) on the 12 COCO
people of ../shared/data/realkp (held out: never calibrated or tuned on) on XNNPACK and on
TFLite's reference kernels, AP50, AR, the parity agreement on the package photos, the emulated
int8 output error before and after the training, and how long the int8 stage took. Then every
file is timed on XNNPACK in one process, interleaved (median, 1 and 2 threads).

    python benchmarks/openpose_int8_finetune.py [--out /tmp/mdeploy-openpose-ft] [--runs 20] \
        [--tune STEPS:LEARNING_RATE ...] [--calibrate-on FOLDER ...]

`--calibrate-on` calibrates and fine-tunes on the images of those folders and their subfolders
instead (`data.calibration: {images: ...}`, unlabelled), plus the package photos.

A folder that already holds a build's manifest is scored as it is (delete it to rebuild).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
from common import REPO, build_with, machine
from int8_concat import timing
from int8_fidelity import REALKP


def build(out: Path, steps: int, learning_rate: float, folders: list[Path]) -> Path:
    folder = out / (f"finetuned{steps}_lr{learning_rate:g}" if steps else "plain")
    if not (folder / "openpose_thin" / "manifest.json").is_file():
        sets = ["export.tflite.variants=[fp32, int8]", "export.onnx=null", "export.coreml=null", "export.mace=null"]
        if folders:
            listed = ", ".join(str(f.absolute()) for f in folders)
            sets.append(f"data.calibration={{kind: real, images: {{folders: [{listed}], recursive: true}}}}")
        if steps:
            sets.append(f"export.tflite.int8_finetune={{steps: {steps}, learning_rate: {learning_rate}}}")
        build_with(REPO / "recipes" / "openpose_thin.yaml", folder, sets)
    return folder / "openpose_thin"


def row(name: str, folder: Path) -> str:
    manifest = json.loads((folder / "manifest.json").read_text())
    (result,) = [r for r in manifest["gates"]["accuracy"]["results"] if r["artifact"] == "tflite/int8"]
    metrics = result["metrics"]
    xnn, ref = metrics["metrics"], metrics["reference_kernels"]["metrics"]
    (artifact,) = [a for a in manifest["artifacts"] if a["id"] == "tflite/int8"]
    tuned = artifact["details"].get("int8_finetune", {})
    rmse = tuned.get("int8_output_rmse")
    error = f"{rmse['before']:.4f} -> {rmse['after']:.4f}" if rmse else "-"
    (parity,) = [r for r in manifest["gates"]["parity"]["results"] if r["artifact"] == "tflite/int8"]
    agree = parity.get("metrics", {}).get("agreement")
    stage = next((s for s in manifest.get("stages", []) if s.get("name") == "tflite/int8"), {})
    seconds = stage.get("seconds")
    return (f"| {name} | {xnn['ap_oks']:.1f} ({metrics['reference']:.1f}) | {ref['ap_oks']:.1f} | {xnn['ap50_oks']:.1f} | "
            f"{xnn['ar_oks']:.1f} | {'-' if agree is None else f'{100 * agree:.1f}%'} | "
            f"{error} | {'-' if seconds is None else f'{seconds:.0f}'} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/mdeploy-openpose-ft"))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--tune", nargs="*", default=["300:1e-5", "300:1e-4"], metavar="STEPS:LEARNING_RATE")
    parser.add_argument("--calibrate-on", nargs="*", type=Path, default=[], metavar="FOLDER")
    args = parser.parse_args()
    if not REALKP.is_dir():
        raise SystemExit(f"{REALKP} is absent: these measurements need ../shared")
    sys.path.insert(0, str(REPO))
    print(f"Machine: {machine()}; {datetime.date.today()}\n")
    settings = [(0, 0.0)] + [(int(s), float(lr)) for s, lr in (t.split(":") for t in args.tune)]
    folders = {("plain" if not s else f"fine-tuned, {s} steps, learning rate {lr:g}"): build(args.out, s, lr, args.calibrate_on) for s, lr in settings}
    print("| int8 file | AP real_coco, XNNPACK (fp32) | AP, reference kernels | AP50 | AR | parity agreement | "
          "emulated int8 error (rms) | int8 stage s |\n|---|---|---|---|---|---|---|---|")
    for name, folder in folders.items():
        print(row(name, folder))
    first = next(iter(folders.values()))
    files = {"fp32": first / "tflite" / "openpose_thin_fp32.tflite",
             **{f"int8, {name}": f / "tflite" / "openpose_thin_int8.tflite" for name, f in folders.items()}}
    x = np.random.default_rng(0).uniform(0, 255, (1, 368, 432, 3)).astype(np.float32)
    timing(files, x, args.runs)


if __name__ == "__main__":
    main()
