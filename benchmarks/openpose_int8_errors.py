"""Where a tf-openpose int8 file loses its AP: its heatmaps, its PAFs, or the output's int8 step.

Reads one build of recipes/openpose_thin.yaml with TFLite fp32 and int8 (for instance a folder
`benchmarks/openpose_int8_finetune.py` leaves) and scores, on the 12 COCO people of
../shared/data/realkp (AP over OKS, the family's decoder, XNNPACK), outputs mixed from the two
files: fp32's, int8's, int8 heatmaps with fp32 PAFs, fp32 heatmaps with int8 PAFs, and fp32's
rounded to the int8 file's output step. Then, per image, how many parts the decoder gives each
person it finds.

    python benchmarks/openpose_int8_errors.py [BUILD_FOLDER]
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import numpy as np
from common import REPO, machine
from int8_fidelity import REALKP

DEFAULT = Path("/tmp/mdeploy-openpose-ft/finetuned900_lr1e-05/openpose_thin")


def main() -> None:
    build = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    if not REALKP.is_dir():
        raise SystemExit(f"{REALKP} is absent: these measurements need ../shared")
    if not (build / "tflite" / "openpose_thin_int8.tflite").is_file():
        raise SystemExit(f"no int8 file in {build}: run benchmarks/openpose_int8_finetune.py first")
    sys.path.insert(0, str(REPO))
    from ai_edge_litert.interpreter import Interpreter

    from mdeploy.data.coco import load_coco
    from mdeploy.families import family_of
    from mdeploy.images import load_rgb
    from mdeploy.keypoints import get_keypoint_set
    from mdeploy.runners.litert import LiteRTRunner
    from mdeploy.spec import ModelSpec

    spec = ModelSpec.load(build / "model" / "spec.json")
    family = family_of(spec)
    ds = load_coco(REALKP / "coco" / "test_coco.json", REALKP / "coco", get_keypoint_set("coco18"), crop="image")
    fp32 = LiteRTRunner(build / "tflite" / "openpose_thin_fp32.tflite")
    int8 = LiteRTRunner(build / "tflite" / "openpose_thin_int8.tflite")
    # The int8 step of the outputs: the tensors the DEQUANTIZE ops read.
    interp = Interpreter(model_path=str(build / "tflite" / "openpose_thin_int8.tflite"))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    steps = {tensors[op["inputs"][0]]["quantization"] for op in interp._get_ops_details() if op["op_name"] == "DEQUANTIZE"}
    (scale, zero), = steps  # one step for both outputs: they are sliced from one int8 tensor

    def rounded(x):
        return ((np.clip(np.round(x / scale + zero), -128, 127) - zero) * scale).astype(np.float32)

    runs: dict[bytes, tuple] = {}

    class Mixed:
        def __init__(self, pick):
            self.pick = pick

        def outputs(self, batch):
            key = batch.tobytes()
            if key not in runs:
                runs[key] = (fp32.outputs(batch), int8.outputs(batch))
            return self.pick(*runs[key])

    cases = {
        "fp32": lambda a, b: a,
        "int8": lambda a, b: b,
        "int8 heatmaps, fp32 PAFs": lambda a, b: {"heatmaps": b["heatmaps"], "pafs": a["pafs"]},
        "fp32 heatmaps, int8 PAFs": lambda a, b: {"heatmaps": a["heatmaps"], "pafs": b["pafs"]},
        f"fp32 rounded to the int8 output step ({scale:.4g})": lambda a, b: {k: rounded(v) for k, v in a.items()},
    }
    print(f"Machine: {machine()}; {datetime.date.today()}; XNNPACK; {build}\n")
    print("| outputs | AP | AP50 | AP75 | AR |\n|---|---|---|---|---|")
    for name, pick in cases.items():
        m = family.evaluate(Mixed(pick), spec, ds).to_json()["metrics"]
        print(f"| {name} | {m['ap_oks']:.1f} | {m['ap50_oks']:.1f} | {m['ap75_oks']:.1f} | {m['ar_oks']:.1f} |", flush=True)
    print("\n| image | parts per person found, fp32 | int8 | fp32 heatmaps, int8 PAFs | int8 heatmaps, fp32 PAFs |\n|---|---|---|---|---|")
    for path in dict.fromkeys(s.image for s in ds.samples):
        x, _ = spec.preprocessing.apply(load_rgb(path))
        a, b = fp32.outputs(x[None]), int8.outputs(x[None])
        mixes = [a, b, {"heatmaps": a["heatmaps"], "pafs": b["pafs"]}, {"heatmaps": b["heatmaps"], "pafs": a["pafs"]}]
        counts = [sorted((int(p.present.sum()) for p in family.people(o, spec, 0)), reverse=True) for o in mixes]
        print(f"| {Path(path).name} | " + " | ".join(", ".join(map(str, c)) for c in counts) + " |")


if __name__ == "__main__":
    main()
