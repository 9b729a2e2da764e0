"""Where does the CPM's time go? Ablations of mdeploy's release-faithful CPM, timed with LiteRT.

The PoseEstimationForMobile CPM runs several times slower than the Hourglass of the same
MACs. This script converts variants of `mv2_cpm` (random weights: latency does not depend
on them) to TFLite fp32 and times each in its own process (host_latency.CHILD):

- the backbone alone (up to the merged 1/8 features), then 1, 2, 4 and 6 stages;
- 6 stages with 3x3 instead of 7x7 depthwise kernels in the refinement stages;
- the Hourglass for comparison;

and counts the TFLite ops of each, and of the release file, by type.
"""

from __future__ import annotations

import collections
import datetime
import sys
import tempfile
from pathlib import Path

from common import REPO, machine
from host_latency import PEAK_PER_CORE, PEFM_TFLITE, measure

sys.path.insert(0, str(REPO))


def tflite_of(model, path: Path) -> Path:
    """Through mdeploy's own path: canonical fixed-batch SavedModel, then the fp32 converter."""
    import tensorflow as tf

    from mdeploy.importers import LoadedModel
    from mdeploy.importers.canonical import write_canonical

    loaded = LoadedModel(fn=lambda x: model(x, training=False), input_shape=(1, 192, 192, 3), input_dtype="float32", keep=model)
    write_canonical(loaded, (192, 192), path.with_suffix(".sm"))
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(path.with_suffix(".sm"))).convert())
    return path


def op_counts(path: Path) -> collections.Counter:
    from ai_edge_litert.interpreter import Interpreter

    return collections.Counter(d["op_name"] for d in Interpreter(model_path=str(path))._get_ops_details())


def main() -> None:
    import keras

    from mdeploy.models import create_model, inference_model
    from mdeploy.models.profile import count_macs

    print(f"# CPM time analysis, {datetime.date.today()}, {machine()}; LiteRT fp32, median of 100")
    variants = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        full = create_model("mv2_cpm", None, (192, 192), 14)
        backbone = keras.Model(full.inputs, full.get_layer("merge").output)
        variants.append(("backbone only (to the 1/8 merge)", backbone))
        for stages in (1, 2, 4, 6):
            variants.append((f"backbone + {stages} stage(s)", inference_model(create_model("mv2_cpm", {"stages": stages}, (192, 192), 14))))
        variants.append(("6 stages, 3x3 refinement kernels", inference_model(create_model("mv2_cpm", {"refine_kernel": 3}, (192, 192), 14))))
        variants.append(("mv2_hourglass", inference_model(create_model("mv2_hourglass", None, (192, 192), 14))))
        rows = []
        for i, (label, model) in enumerate(variants):
            path = tflite_of(model, tmp / f"v{i}.tflite")
            macs = count_macs(model)
            r1, r2 = measure(path, 1, 10, 100), measure(path, 2, 10, 100)
            rows.append((label, macs, r1["median"], r2["median"], op_counts(path)))
        if PEFM_TFLITE.is_file():
            r1, r2 = measure(PEFM_TFLITE, 1, 10, 100), measure(PEFM_TFLITE, 2, 10, 100)
            rows.append(("PEFM release model.tflite", 0.277e9, r1["median"], r2["median"], op_counts(PEFM_TFLITE)))
        for label, macs, t1, t2, _ops in rows:
            g1 = 2 * macs / (t1 / 1000) / 1e9
            print(f"| {label} | {macs / 1e6:.0f} M | {t1:.2f} ms | {t2:.2f} ms | {g1:.1f} GFLOP/s ({g1 / (PEAK_PER_CORE / 1e9) * 100:.0f}% of 1-core peak) |")
        for label, _, _, _, ops in rows:
            print(f"ops of {label}: " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())))


if __name__ == "__main__":
    main()
