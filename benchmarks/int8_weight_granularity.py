"""Per-channel against per-tensor int8 weights on XNNPACK (PEFM CPM release): does one scale
per weight tensor buy time?

Takes the PEFM release's int8 graph as mdeploy converts it (`benchmarks/int8_fidelity.py`:
`int8_graph`, the exporter's structural rewrites applied), converts it to fp32, to full int8
with per-channel weights (what mdeploy ships) and to full int8 with per-tensor weights (the
converter's `_experimental_disable_per_channel`), uint8 input and int8 output, calibrated on the
12 COCO people of ../shared/data/realkp, and times the three files in one child process,
interleaved, median, 1 and 2 threads.

    python benchmarks/int8_weight_granularity.py [--out /tmp/mdeploy-int8-granularity] [--runs 60]
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from common import interleaved_latency, machine
from int8_fidelity import int8_graph


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/mdeploy-int8-granularity"))
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    _, inputs, source = int8_graph(args.out / "build")
    import tensorflow as tf

    calibration = next(x for name, x in inputs.items() if "coco" in name)

    def convert(name: str, **settings) -> Path:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(source), signature_keys=["serving_default"])
        if name != "fp32":
            converter.optimizations = {tf.lite.Optimize.DEFAULT}
            converter.target_spec.supported_ops = {tf.lite.OpsSet.TFLITE_BUILTINS_INT8}
            converter.representative_dataset = lambda: ([x[None]] for x in calibration)
            converter.inference_input_type, converter.inference_output_type = tf.uint8, tf.int8
        for key, value in settings.items():
            setattr(converter, key, value)
        path = args.out / f"{name}.tflite"
        path.write_bytes(converter.convert())
        return path

    files = [convert("fp32"), convert("int8_per_channel"), convert("int8_per_tensor", _experimental_disable_per_channel=True)]
    print(f"Machine: {machine()}; {datetime.date.today()}; LiteRT XNNPACK, median of {args.runs}, interleaved\n")
    print("| threads | fp32 ms | int8 per-channel ms (x fp32) | int8 per-tensor ms (x fp32) |\n|---|---|---|---|")
    for threads in (1, 2):
        ms = [interleaved_latency(files, threads, 5, args.runs)[str(f)]["median"] for f in files]
        print(f"| {threads} | {ms[0]:.2f} | {ms[1]:.2f} ({ms[1] / ms[0]:.2f}) | {ms[2]:.2f} ({ms[2] / ms[0]:.2f}) |")


if __name__ == "__main__":
    main()
