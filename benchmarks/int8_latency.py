"""Int8 against fp32 on XNNPACK, with and without mdeploy's XNNPACK rewrites (int8 that pays).

Converts each model with mdeploy's own TFLite exporter (`exporters/tflite.py`: fp32 and full
int8, the rewrites of `exporters/xnnpack_rewrites.py` on and off: `split_depthwise`, and
`int8_prelu` and `int8_concat: auto` for int8; int8 also with every rewrite but the
concatenation one, to show what that one costs; `split` before 2026-11-27) and times every
file in one child process, interleaved (A B C D A B C D ...), median of the runs, with
LiteRT's default XNNPACK delegate. Models:
- the PoseEstimationForMobile CPM release (../shared, imported as recipes/pefm_cpm.yaml does);
- the quickstart's architecture (`mv2_cpm`, width 0.5, 192x192: recipes/cpm_android.yaml),
  untrained (latency does not depend on the weights), and with `refine_kernel: 3`;
- the Hourglass of recipes/hourglass_ios.yaml (`mv2_hourglass`, width 0.5), untrained;
- MobileHumanPose's LPSKI (256x256, PReLU after nearly every convolution), untrained.
Int8 calibrates on random inputs here: this script measures speed only (accuracy is the
build's: docs/benchmarks.md).

    python benchmarks/int8_latency.py [--runs 60] [--threads 1 2] [--keep DIR]
    python benchmarks/int8_latency.py --time-saved DIR   # another machine: LiteRT and numpy only
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import tempfile
from pathlib import Path

import numpy as np
from common import REPO, interleaved_latency, machine

PEFM = REPO.parent / "shared" / "reference" / "pefm" / "cpm_model" / "model.pb"


def canonical(kind: str, out: Path) -> tuple[Path, tuple[float, float]]:
    """A canonical SavedModel of `kind` and its input range."""
    from types import SimpleNamespace

    from mdeploy.importers import IMPORTERS, LoadedModel
    from mdeploy.importers.canonical import write_canonical
    from mdeploy.models import create_model, inference_model

    if kind == "pefm_cpm":
        section = SimpleNamespace(inputs=["image"], outputs=["Convolutional_Pose_Machine/stage_5_out"])
        loaded = IMPORTERS.get("frozen_pb")(section, PEFM, lambda *a: None)
        write_canonical(loaded, (192, 192), out)
        return out, (0.0, 255.0)
    if kind == "lpski":
        arch, params, size, joints, low_high = "lpski", {}, 256, 17, (-2.1, 2.6)  # ImageNet-normalized input
    elif kind == "mv2_hourglass":
        arch, params, size, joints, low_high = "mv2_hourglass", {"width": 0.5}, 192, 14, (-1.0, 1.0)
    else:
        arch, size, joints, low_high = "mv2_cpm", 192, 14, (-1.0, 1.0)
        params = {"width": 0.5} if kind == "mv2_cpm" else {"width": 0.5, "refine_kernel": 3}
    model = inference_model(create_model(arch, params, (size, size), joints))
    write_canonical(LoadedModel(fn=model, input_shape=(None, size, size, 3), input_dtype="float32", keep=model), (size, size), out)
    return out, low_high


def convert(saved: Path, variant: str, split: bool, low: float, high: float, out: Path, size: int, concat: bool = True) -> Path:
    from mdeploy.exporters import ExportInputs
    from mdeploy.exporters.tflite import convert as tflite_convert
    from mdeploy.exporters.tflite import xnnpack_source

    rng = np.random.default_rng(0)
    target = SimpleTarget(variant, {"variant": variant, "split_depthwise": split, "int8_prelu": "leaky_relu" if split else "keep",
                                           "int8_concat": "auto" if split and concat else "keep", "io": "float"})
    inputs = ExportInputs(saved, None, out, lambda line: None,
                          lambda: (rng.uniform(low, high, (1, size, size, 3)).astype(np.float32) for _ in range(16)))
    with xnnpack_source(target, inputs) as source:
        tflite_convert(target, source)
    return out


class SimpleTarget:
    def __init__(self, variant: str, settings: dict):
        self.variant, self.settings = variant, settings


def time_saved(folder: Path, runs: int, threads: list[int]) -> None:
    """Time the rewritten fp32 / int8 pairs that `--keep` saved (no TensorFlow needed: another
    machine with LiteRT alone can run this)."""
    pairs = sorted(p.name[: -len("_fp32_rewritten.tflite")] for p in folder.glob("*_fp32_rewritten.tflite"))
    files = {f"{k} {v}": folder / f"{k}_{v}_rewritten.tflite" for k in pairs for v in ("fp32", "int8")}
    print(f"Machine: {machine()}; {datetime.date.today()}; LiteRT XNNPACK, median of {runs}, interleaved\n")
    print("| model | threads | fp32 rewritten ms | int8 rewritten ms | int8 / fp32 |")
    print("|---|---|---|---|---|")
    for t in threads:
        measured = interleaved_latency(files.values(), t, 5, runs)
        for k in pairs:
            f, q = (measured[str(files[f"{k} {v}"])]["median"] for v in ("fp32", "int8"))
            print(f"| {k} | {t} | {f:.1f} | {q:.1f} | {q / f:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--keep", type=Path, help="also copy the rewritten fp32 and int8 files here")
    parser.add_argument("--time-saved", type=Path, help="only time the files a --keep run saved here")
    args = parser.parse_args()
    if args.time_saved:
        time_saved(args.time_saved, args.runs, args.threads)
        return
    kinds = ["mv2_cpm", "mv2_cpm_k3", "mv2_hourglass", "lpski"] + (["pefm_cpm"] if PEFM.is_file() else [])
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for kind in kinds:
            saved, (low, high) = canonical(kind, Path(tmp) / kind)
            size = 256 if kind == "lpski" else 192
            for split in (False, True):
                for variant in ("fp32", "int8"):
                    name = f"{kind} {variant}{' rewritten' if split else ''}"
                    files[name] = convert(saved, variant, split, low, high, Path(tmp) / f"{name.replace(' ', '_')}.tflite", size)
            name = f"{kind} int8 rewritten, concat kept"
            files[name] = convert(saved, "int8", True, low, high, Path(tmp) / f"{name.replace(' ', '_').replace(',', '')}.tflite",
                                  size, concat=False)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for kind in kinds:
                for v in ("fp32", "int8"):
                    shutil.copy(files[f"{kind} {v} rewritten"], args.keep / f"{kind}_{v}_rewritten.tflite")
        print(f"Machine: {machine()}; {datetime.date.today()}; LiteRT XNNPACK, median of {args.runs}, interleaved\n")
        print("| model | threads | fp32 ms | int8 ms | int8 / fp32 | fp32 rewritten ms | int8 rewritten, concat kept ms "
              "| int8 rewritten ms | int8 / fp32, rewritten |")
        print("|---|---|---|---|---|---|---|---|---|")
        for threads in args.threads:
            measured = interleaved_latency(files.values(), threads, 5, args.runs)
            ms = {name: measured[str(path)]["median"] for name, path in files.items()}
            for kind in kinds:
                f, q, fs, qk, qs = (ms[f"{kind} {v}"] for v in ("fp32", "int8", "fp32 rewritten", "int8 rewritten, concat kept",
                                                                  "int8 rewritten"))
                print(f"| {kind} | {threads} | {f:.1f} | {q:.1f} | {q / f:.2f} | {fs:.1f} | {qk:.1f} | {qs:.1f} | {qs / fs:.2f} |")


if __name__ == "__main__":
    main()
