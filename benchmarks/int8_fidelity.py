"""How far int8 keypoints move from fp32's on real people, per int8 rewrite (PEFM CPM release).

Builds the PoseEstimationForMobile CPM release (recipes/pefm_cpm.yaml) with TFLite fp32 and
int8, int8 calibrated on the COCO people of ../shared/data/realkp (never on the people it is
scored on) plus the package photos, once per configuration of the int8 rewrites
(`export.tflite.int8_concat`, `export.tflite.int8_equalize`, `export.tflite.split_depthwise`)
and once with the
accuracy-driven mixed-precision search (`export.tflite.mixed_precision`, gate 1.5 points);
then, held out, calibrated on the MPII people instead, plain and with the search scored on the
COCO people alone (gate 1.0), so that neither choice sees the AI Challenger people; and with
quantization-aware fine-tuning on the calibration images (`export.tflite.int8_finetune`,
300 and 900 steps), with either calibration.
Then, on every person of the AI Challenger, MPII and COCO sets, it runs each int8 file on
XNNPACK and on TFLite's reference kernels and prints, per set: PCKh@0.5 (where the set has
head sizes), the mean distance of each int8 keypoint from fp32's in model-input pixels
(192 x 192), the share moved more than 8 px, and the mean absolute heatmap difference. The
keypoint distance uses every joint of every person, so it is a steadier measure of what
quantization does than PCKh on 9 people (where one joint is 1.4 points). A set a file was
calibrated on shows fit, not generalisation. Last, every file is timed on XNNPACK,
interleaved in one process (median, 1 and 2 threads), so each configuration's cost sits next
to its fidelity. Every configuration splits the concatenations (`int8_concat: split`, the
default when these tables were measured) unless it says otherwise; `benchmarks/int8_concat.py`
compares that with scaling them, which the default `auto` now does on this model.

    python benchmarks/int8_fidelity.py [--out /tmp/mdeploy-int8-fidelity] [--runs 40] [--configs NAME ... [--exact]]
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

import numpy as np
from common import REPO, build_with, machine

REALKP = REPO.parent / "shared" / "data" / "realkp"
MPII_CALIBRATION = (f"data.calibration={{mpii: {{annotations: {REALKP / 'mpii' / 'test_mpii.json'}, "
                    f"images: {REALKP / 'mpii'}}}}}")
COCO_ONLY_VALIDATION = (f"data.val=[{{name: real_coco, kind: real, coco: {{annotations: "
                        f"{REALKP / 'coco' / 'test_coco.json'}, images: {REALKP / 'coco'}}}}}]")
CONFIGS = {
    "concat kept, depthwise split": ["export.tflite.int8_concat=keep"],
    "concat split, depthwise split (default)": [],
    "concat split, depthwise split, equalized": ["export.tflite.int8_equalize=true"],
    "concat split, depthwise kept, equalized": ["export.tflite.split_depthwise=false", "export.tflite.int8_equalize=true"],
    # The search picks its float layers with the validation splits (real_aic, real_mpii): their
    # PCKh is what it passed on; the COCO rows and the heatmap error show what carries over.
    "default + mixed precision (max 48 layers, gate 1.5)": [
        "export.tflite.mixed_precision={max_float_layers: 48}", "verify.accuracy.max_drop=1.5"],
    # Held out: calibrated on the MPII people, the search scored on the COCO people alone, so
    # neither touches the AI Challenger people (compare with the plain file calibrated the same way).
    "calibrated on MPII": [MPII_CALIBRATION, COCO_ONLY_VALIDATION],
    "calibrated on MPII, equalized": [MPII_CALIBRATION, COCO_ONLY_VALIDATION, "export.tflite.int8_equalize=true"],
    "calibrated on MPII + mixed precision chosen on COCO (gate 1.0)": [
        MPII_CALIBRATION, COCO_ONLY_VALIDATION, "export.tflite.mixed_precision={max_float_layers: 48}",
        "verify.accuracy.max_drop=1.0"],
    # The default since 2026-11-27 (int8_concat: auto scales this model's concatenations), plain
    # and held out as above.
    "auto": ["export.tflite.int8_concat=auto"],
    "auto, calibrated on MPII": ["export.tflite.int8_concat=auto", MPII_CALIBRATION, COCO_ONLY_VALIDATION],
    # The same with a tighter gate (means over crops since 2026-11-27, evaluate/crops.py).
    "auto, calibrated on MPII + mixed precision chosen on COCO (gate 0.25)": [
        "export.tflite.int8_concat=auto", MPII_CALIBRATION, COCO_ONLY_VALIDATION,
        "export.tflite.mixed_precision={max_float_layers: 48}", "verify.accuracy.max_drop=0.25"],
    "auto, calibrated on MPII + mixed precision chosen on COCO (gate 1.0)": [
        "export.tflite.int8_concat=auto", MPII_CALIBRATION, COCO_ONLY_VALIDATION,
        "export.tflite.mixed_precision={max_float_layers: 48}", "verify.accuracy.max_drop=1.0"],
    # Quantization-aware fine-tuning on the calibration images (exporters/int8_finetune.py), with
    # either calibration: the AI Challenger people are held out of both, the MPII people of the first.
    **{f"auto + int8 fine-tuning ({steps} steps)": ["export.tflite.int8_concat=auto", f"export.tflite.int8_finetune={{steps: {steps}}}"]
       for steps in (300, 900)},
    **{f"auto, calibrated on MPII + int8 fine-tuning ({steps} steps)": [
        "export.tflite.int8_concat=auto", MPII_CALIBRATION, COCO_ONLY_VALIDATION, f"export.tflite.int8_finetune={{steps: {steps}}}"]
       for steps in (300, 900)},
}


def build(out: Path, name: str, overrides: list[str]) -> Path:
    coco = REALKP / "coco"
    pinned = [] if any("int8_concat" in o for o in overrides) else ["export.tflite.int8_concat=split"]
    sets = [
        "export.tflite.variants=[fp32, int8]",
        f"data.calibration={{coco: {{annotations: {coco / 'test_coco.json'}, images: {coco}}}}}",
        *pinned,
        *overrides,
    ]
    folder = out / name.split(" (")[0].replace(", ", "_").replace(" + ", "_").replace(" ", "-")
    tuned = re.search(r"fine-tuning \((\d+) steps\)", name)
    if tuned:
        folder = out / (("auto_mpii-calibrated" if "MPII" in name else "auto") + f"_finetuned{tuned.group(1)}")
    elif "MPII" in name:
        folder = out / (("auto_" if name.startswith("auto") else "") + "mpii-calibrated" + ("_mixed" if "mixed" in name else "")
                        + ("_equalized" if "equalized" in name else "") + ("_gate0.25" if "gate 0.25" in name else ""))
    build_with(REPO / "recipes" / "pefm_cpm.yaml", folder, sets)  # exit 1 (int8 fails a gate) still writes the files
    return folder / "pefm_cpm"


def people():
    from mdeploy.data.coco import load_coco
    from mdeploy.data.mpii import load_mpii
    from mdeploy.keypoints import get_keypoint_set

    kps = get_keypoint_set("aic14")
    return {
        "real_aic (9 people)": load_coco(REALKP / "aic" / "test_aic.json", REALKP / "aic", kps, crop="auto"),
        "real_mpii (5 people)": load_mpii(REALKP / "mpii" / "test_mpii.json", REALKP / "mpii", kps, crop="person"),
        "real_coco (12 people)": load_coco(REALKP / "coco" / "test_coco.json", REALKP / "coco", kps, crop="auto"),
    }


def saved_builds() -> list[Path]:
    """The PEFM build folders (each `<name>/pefm_cpm`) with an int8 file that int8_fidelity.py left
    in the folder the command line's `--builds` names; exits with a message when there are none,
    or when ../shared is absent."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", type=Path, default=Path("/tmp/mdeploy-int8-fidelity"))
    folder = parser.parse_args().builds
    if not REALKP.is_dir():
        raise SystemExit(f"{REALKP} is absent: these measurements need ../shared")
    builds = sorted(p.parents[1] for p in folder.glob("*/pefm_cpm/tflite/pefm_cpm_int8.tflite"))
    if not builds:
        raise SystemExit(f"no int8 builds under {folder}: run benchmarks/int8_fidelity.py --out {folder} first")
    sys.path.insert(0, str(REPO))
    return builds


def int8_graph(out: Path):
    """The PEFM release built with TFLite fp32 into `out`, for studies of its int8 graph: (build
    folder, each set of `people()` through the evaluation path, the SavedModel the int8 variant is
    converted from with the exporter's structural rewrites, split_depthwise and split_concat; not
    int8_equalize, which rescales channels with the calibration images)."""
    if not REALKP.is_dir():
        raise SystemExit(f"{REALKP} is absent: these measurements need ../shared")
    sys.path.insert(0, str(REPO))
    from mdeploy.evaluate.evaluator import prepare
    from mdeploy.exporters.xnnpack_rewrites import rewritten
    from mdeploy.spec import ModelSpec

    build_with(REPO / "recipes" / "pefm_cpm.yaml", out, ["export.tflite.variants=[fp32]"])
    folder = out / "pefm_cpm"
    spec = ModelSpec.load(folder / "model" / "spec.json")
    inputs = {name: prepare(spec, ds, range(len(ds)))[0] for name, ds in people().items()}
    source, _ = rewritten(folder / "model" / "saved_model", ["split_depthwise", "split_concat"])
    return folder, inputs, source


def outputs(path: Path, kernels: str, x: np.ndarray) -> np.ndarray:
    from mdeploy.runners.litert import LiteRTRunner

    runner = LiteRTRunner(path, kernels=kernels)
    return np.concatenate([np.asarray(runner(x[i:i + 1]), np.float32) for i in range(len(x))])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/mdeploy-int8-fidelity"))
    parser.add_argument("--runs", type=int, default=40, help="timed runs per file and thread count")
    parser.add_argument("--configs", nargs="+", metavar="NAME",
                        help="only the configurations whose names start with one of these (the first one given is "
                             "also the fp32 reference's build)")
    parser.add_argument("--exact", action="store_true", help="--configs are whole names, not prefixes")
    args = parser.parse_args()
    if not REALKP.is_dir():
        raise SystemExit(f"{REALKP} is absent: these measurements need ../shared")
    sys.path.insert(0, str(REPO))
    from mdeploy.evaluate.decode import decode_spec, to_source
    from mdeploy.evaluate.evaluator import prepare, score
    from mdeploy.spec import ModelSpec

    def wanted(name: str) -> bool:
        return not args.configs or any(name == c if args.exact else name.startswith(c) for c in args.configs)

    chosen = {name: o for name, o in CONFIGS.items() if wanted(name)}
    builds = {name: build(args.out, name, overrides) for name, overrides in chosen.items()}
    first = next(iter(builds.values()))
    spec = ModelSpec.load(first / "model" / "spec.json")
    fp32 = first / "tflite" / "pefm_cpm_fp32.tflite"

    def decoded(hm, affines):
        points = decode_spec(hm, spec.output_stride, spec.decode)
        return points, np.stack([to_source(points[j], affines[j]) for j in range(len(points))])

    print(f"Machine: {machine()}; {datetime.date.today()}\n")
    print("| set | file | kernels | PCKh@0.5 | mean move px | moved > 8 px | heatmap MAE |")
    print("|---|---|---|---|---|---|---|")
    for set_name, ds in people().items():
        x, affines = prepare(spec, ds, range(len(ds)))
        ref_hm = outputs(fp32, "xnnpack", x)
        ref_points, ref_source = decoded(ref_hm, affines)
        pckh = score(ref_source, np.zeros((len(x), ref_points.shape[1], 2)), ds, spec).metrics.get("pckh@0.5")
        print(f"| {set_name} | fp32 | XNNPACK | {'-' if pckh is None else f'{pckh:.1f}'} | 0 | 0 | 0 |")
        for name, folder in builds.items():
            for kernels in ("xnnpack", "reference"):
                hm = outputs(folder / "tflite" / "pefm_cpm_int8.tflite", kernels, x)
                points, source = decoded(hm, affines)
                move = np.linalg.norm(points[..., :2] - ref_points[..., :2], axis=-1)
                pckh = score(source, np.zeros((len(x), points.shape[1], 2)), ds, spec).metrics.get("pckh@0.5")
                print(f"| {set_name} | int8, {name} | {'XNNPACK' if kernels == 'xnnpack' else 'reference'} "
                      f"| {'-' if pckh is None else f'{pckh:.1f}'} | {move.mean():.1f} | {np.mean(move > 8):.2f} "
                      f"| {np.abs(hm - ref_hm).mean():.4f} |")
    files = {"fp32": fp32, **{f"int8, {name}": folder / "tflite" / "pefm_cpm_int8.tflite" for name, folder in builds.items()}}
    x = prepare(spec, next(iter(people().values())), [0])[0]
    print("\n| file | 1 thread ms | x fp32 | 2 threads ms | x fp32 |\n|---|---|---|---|---|")
    timed = {threads: latency(files, x, threads, args.runs) for threads in (1, 2)}
    for name in files:
        one, two = timed[1][name], timed[2][name]
        print(f"| {name} | {one:.2f} | {one / timed[1]['fp32']:.2f} | {two:.2f} | {two / timed[2]['fp32']:.2f} |")


def latency(files: dict, x: np.ndarray, threads: int, runs: int) -> dict:
    """Median ms per file, the files run in turn (A B C A B C ...) after a warm-up."""
    import time

    from mdeploy.runners.litert import LiteRTRunner

    runners = {name: LiteRTRunner(path, num_threads=threads) for name, path in files.items()}
    times = {name: [] for name in files}
    for i in range(runs + 5):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner(x)
            if i >= 5:
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: float(np.median(t)) for name, t in times.items()}


if __name__ == "__main__":
    main()
