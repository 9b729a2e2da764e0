"""Two exact ways to run a 7x7 depthwise convolution on XNNPACK's fast kernels (at most 25 taps),
fp32 and int8: the exporter's row bands (one Pad, a Slice per band, 3x7 + 3x7 + 1x7, summed) and
dilated bands with no Pad or Slice (rows -3/0/+3 with dilation 3, -2/+2 and -1/+1 as 3x7 kernels
with a zero middle row, SAME padding, summed), against the 7x7 itself.

Four stacked layers, 128 channels at 46x46 (the PEFM CPM's refinement stages), ReLU between,
random weights; int8 calibrated on random inputs (speed only). Every file is timed in one child
process, interleaved, median.

    python benchmarks/depthwise_bands.py [--runs 200] [--out /tmp/mdeploy-depthwise-bands]
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
from common import interleaved_latency, machine

CHANNELS, SIZE, LAYERS = 128, 46, 4


def _sum(terms):
    """Chained ADDs, as the exporter writes them (tf.add_n becomes ADD_N, which XNNPACK does not run in int8)."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("/tmp/mdeploy-depthwise-bands"))
    args = parser.parse_args()
    import tensorflow as tf

    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.1, (7, 7, CHANNELS, 1)).astype(np.float32) for _ in range(LAYERS)]
    one = [1, 1, 1, 1]

    def full(x, w):
        return tf.nn.depthwise_conv2d(x, w, one, "SAME")

    def row_bands(x, w):
        padded = tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]])
        return _sum([tf.nn.depthwise_conv2d(padded[:, r0:r0 + SIZE + r1 - r0 - 1], w[r0:r1], one, "VALID")
                     for r0, r1 in ((0, 3), (3, 6), (6, 7))])

    def dilated_bands(x, w):
        zero = tf.zeros_like(w[:1])
        kernels = ((tf.concat([w[0:1], w[3:4], w[6:7]], 0), 3), (tf.concat([w[1:2], zero, w[5:6]], 0), 2),
                   (tf.concat([w[2:3], zero, w[4:5]], 0), 1))
        return _sum([tf.nn.depthwise_conv2d(x, k, one, "SAME", dilations=[d, 1]) for k, d in kernels])

    x0 = rng.normal(0, 1, (1, SIZE, SIZE, CHANNELS)).astype(np.float32)
    files, reference = [], None
    print(f"Machine: {machine()}; {datetime.date.today()}; LiteRT XNNPACK, median of {args.runs}, interleaved\n")
    for name, layer in (("7x7", full), ("row bands", row_bands), ("dilated bands", dilated_bands)):
        @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, CHANNELS], tf.float32)])
        def model(x, layer=layer):
            for w in weights:
                x = tf.nn.relu(layer(x, w))
            return x

        y = model(x0).numpy()
        reference = y if reference is None else reference
        print(f"{name}: largest difference from the 7x7 in float {np.abs(y - reference).max():.1e}")
        for variant in ("fp32", "int8"):
            converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
            if variant == "int8":
                converter.optimizations = {tf.lite.Optimize.DEFAULT}
                converter.target_spec.supported_ops = {tf.lite.OpsSet.TFLITE_BUILTINS_INT8}
                converter.representative_dataset = lambda: ([rng.normal(0, 1, x0.shape).astype(np.float32)] for _ in range(8))
            path = args.out / f"{name.replace(' ', '_')}_{variant}.tflite"
            path.write_bytes(converter.convert())
            files.append(path)
    print("\n| threads | " + " | ".join(f.stem.replace("_", " ") for f in files) + " |")
    print("|---|" + "---|" * len(files))
    for threads in (1, 2):
        ms = interleaved_latency(files, threads, 10, args.runs, input_range=(-1.0, 1.0))
        print(f"| {threads} | " + " | ".join(f"{ms[str(f)]['median']:.2f}" for f in files) + " |")


if __name__ == "__main__":
    main()
