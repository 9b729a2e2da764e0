"""Quantization-aware fine-tuning of the int8 variant, by self-distillation (`export.tflite.int8_finetune`).

Post-training int8 rounds every activation to one of 256 steps of its tensor's calibrated
range and every weight to one of 255 of its channel's. Where that noise is the loss (the PEFM
CPM's, docs/benchmarks.md: spread through the network, no bias to correct, no few layers to
keep in float), the weights can learn to tolerate it. The float graph that is quantized (after
the XNNPACK rewrites) is emulated in TensorFlow with int8 where TFLite puts it:

- every int8 tensor of the file LiteRT makes of this graph with the calibration images (its
  names, scales and zero points: the calibration with the quantizer's ties applied) passes
  through fake quantization with that range, as the int8 kernels round and clamp it;
- every convolution with constant weights has its batch norm folded into its weights and a bias
  (as the converter folds it), and the weights pass through per-channel symmetric int8 fake
  quantization (TFLite's scheme: 127 steps each side of zero, one scale per output channel).

The folded weights and biases are then trained, Adam for `steps` steps of `batch` images (the
learning rate falling from `learning_rate` to 0 along a cosine), so
that the emulated int8 outputs match the float model's own outputs (the sum over outputs of
each one's mean squared error: a multi-person model's heatmaps and PAFs alike). The images are the calibration images (never a validation split; the first
MOST_IMAGES of them), each drawn randomly zoomed (0.82-1.22x), shifted (up to 10% of the side)
and mirrored; no labels are read. The tuned float graph is then calibrated and quantized as usual; the fp32, fp16 and
dynamic variants keep the original weights, and parity and the accuracy gate compare the int8
file with the original model.

The emulated int8 output error (root mean square, on the first ERROR_IMAGES calibration images
as they are, before and after) goes into the artifact's details; what the gates measure on the validation
splits is the real file. Graphs with an op the emulator does not know are left as they are,
with the op named in the details.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

FOLDED = ("Conv2D", "DepthwiseConv2dNative")
BATCH_NORMS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")
ZOOM, SHIFT = 0.2, 0.1  # augmentation: zoom e^+-ZOOM, centre +-SHIFT of the side
SEED = 0
MOST_IMAGES = 512  # calibration images held in memory to train on (the first ones)
ERROR_IMAGES = 64  # of those, the first ones the emulated int8 error is reported on


class Unsupported(Exception):
    """The graph has an op the emulator cannot run."""


def _pure(op: str) -> Callable | None:
    """The TensorFlow function for an op whose attributes the emulator reads itself, or None."""
    import tensorflow as tf

    return {
        "Relu": tf.nn.relu, "Relu6": tf.nn.relu6, "Sigmoid": tf.sigmoid, "Tanh": tf.tanh,
        "Add": tf.add, "AddV2": tf.add, "Sub": tf.subtract, "Mul": tf.multiply,
        "Maximum": tf.maximum, "Minimum": tf.minimum, "Square": tf.square, "Neg": tf.negative,
    }.get(op)


class Emulator:
    """A frozen GraphDef run op by op in TensorFlow, with trainable folded convolution weights and,
    when `quantized`, int8 emulated at the tensors named in `ranges` (node name: (min, max))."""

    def __init__(self, graph_def, input_name: str, output_names: list[str], ranges: dict[str, tuple[float, float]]):
        import tensorflow as tf

        from mdeploy.exporters.xnnpack_rewrites import _Graph

        self.tf = tf
        self.source = graph_def
        self.g = _Graph(graph_def)
        self.input = input_name.split(":")[0]
        self.outputs = [o.split(":")[0] for o in output_names]
        self.ranges = ranges
        self.quantized = False
        self.order = self._order()
        known = {"Const", "Identity", "Placeholder", *FOLDED, *BATCH_NORMS, "BiasAdd", "LeakyRelu", "ConcatV2",
                 "ResizeBilinear", "ResizeNearestNeighbor", "MaxPool", "AvgPool", "Pad", "Slice", "StridedSlice", "Reshape", "Mean"}
        # What constants alone compute (a batch norm's gamma * rsqrt(var + eps)) is a constant.
        self.constant = {n for n in self.order if n != self.input and self.g._constant(n)}  # noqa: SLF001 (same package)
        missing = sorted({self.g.nodes[n].op for n in self.order
                          if n not in self.constant and self.g.nodes[n].op not in known and _pure(self.g.nodes[n].op) is None})
        if missing:
            raise Unsupported(", ".join(missing))
        self.layers: dict[str, dict] = {}  # convolution name: {weights, bias, bias_node (BN or BiasAdd it absorbs)}
        for name in self.order:
            node = self.g.nodes[name]
            if node.op not in FOLDED or self.g.value(node.input[1]) is None or self._nchw(node):
                continue
            w = np.asarray(self.g.value(node.input[1]), np.float32)
            after = self.g.consumers.get(name, [])
            bias, absorbed = None, None
            if len(after) == 1 and name not in self.outputs:
                reader = self.g.nodes[after[0]]
                if reader.op in BATCH_NORMS and self._inference_bn(reader):
                    gamma, beta, mean, var = (np.asarray(self.g.value(i), np.float64) for i in reader.input[1:5])
                    s = gamma / np.sqrt(var + reader.attr["epsilon"].f)
                    w = (w * s if node.op == "Conv2D" else w * s.reshape(w.shape[2], w.shape[3])).astype(np.float32)
                    bias, absorbed = (beta - mean * s).astype(np.float32), reader.name
                elif reader.op == "BiasAdd" and not self._nchw(reader) and self.g.value(reader.input[1]) is not None:
                    bias, absorbed = np.asarray(self.g.value(reader.input[1]), np.float32), reader.name
            self.layers[name] = {
                "weights": tf.Variable(w, name=f"w{len(self.layers)}"),
                "bias": tf.Variable(bias, name=f"b{len(self.layers)}") if bias is not None else None,
                "absorbs": absorbed,
            }

    # -- graph

    def _order(self) -> list[str]:
        """The nodes the outputs depend on (through data inputs), inputs first."""
        seen, order = set(), []
        stack = [(o, False) for o in self.outputs]
        while stack:
            name, done = stack.pop()
            if done:
                order.append(name)
                continue
            if name in seen:
                continue
            seen.add(name)
            stack.append((name, True))
            stack.extend((ref.split(":")[0], False) for ref in self.g.nodes[name].input
                         if not ref.startswith("^") and ref.split(":")[0] not in seen)  # control inputs order nothing here
        return order

    @staticmethod
    def _nchw(node) -> bool:
        return "data_format" in node.attr and node.attr["data_format"].s not in (b"", b"NHWC")

    def _inference_bn(self, node) -> bool:
        return (not node.attr["is_training"].b and not self._nchw(node)
                and all(self.g.value(i) is not None for i in node.input[1:5]))

    def variables(self) -> list:
        return [v for layer in self.layers.values() for v in (layer["weights"], layer["bias"]) if v is not None]

    # -- running

    def _weights(self, w, depthwise: bool):
        tf = self.tf
        if not self.quantized:
            return w
        flat = tf.reshape(w, [w.shape[0], w.shape[1], w.shape[2] * w.shape[3]]) if depthwise else w
        axes = [0, 1] if depthwise else [0, 1, 2]
        m = tf.maximum(tf.reduce_max(tf.abs(flat), axis=axes), 1e-12)
        q = tf.quantization.fake_quant_with_min_max_vars_per_channel(flat, -m, m, num_bits=8, narrow_range=True)
        return tf.reshape(q, w.shape) if depthwise else q

    def _rounded(self, name: str, x):
        if self.quantized and name in self.ranges:
            lo, hi = self.ranges[name]
            return self.tf.quantization.fake_quant_with_min_max_args(x, min(lo, 0.0), max(hi, 0.0), num_bits=8)
        return x

    def __call__(self, x) -> list:
        """The outputs for a batch `x` (Slice sizes and Reshapes of a batch of 1 follow the batch)."""
        tf = self.tf
        values = {self.input: self._rounded(self.input, tf.convert_to_tensor(x, tf.float32))}

        def get(ref: str):
            name, _, index = ref.lstrip("^").partition(":")
            value = values[name]
            return value[int(index)] if isinstance(value, tuple) else value

        for name in self.order:
            if name in values:
                continue
            node = self.g.nodes[name]
            op, attr = node.op, node.attr
            if name in self.constant:
                values[name] = tf.constant(self.g.value(name))
                continue
            if op == "Identity":  # the serving outputs are Identities: int8 where the file's output is
                values[name] = self._rounded(name, get(node.input[0]))
                continue
            if op in FOLDED:
                inputs = get(node.input[0])
                layer = self.layers.get(name)
                w = self._weights(layer["weights"], op != "Conv2D") if layer else get(node.input[1])
                strides, padding = list(attr["strides"].list.i), attr["padding"].s.decode()
                if padding == "EXPLICIT":
                    padding = np.asarray(attr["explicit_paddings"].list.i).reshape(4, 2).tolist()
                dilations = list(attr["dilations"].list.i) or [1, 1, 1, 1]
                if op == "Conv2D":
                    out = tf.nn.conv2d(inputs, w, strides, padding, dilations=dilations)
                else:
                    out = tf.nn.depthwise_conv2d(inputs, w, strides, padding, dilations=dilations[1:3])
                if layer and layer["bias"] is not None:
                    # The bias joins where it is absorbed; TFLite names the biased tensor after either.
                    absorbs = layer["absorbs"]
                    values[name] = out
                    values[absorbs] = self._rounded(absorbs if absorbs in self.ranges else name, out + layer["bias"])
                    continue
            elif op in BATCH_NORMS:
                gamma, beta, mean, var = (self.g.value(i) for i in node.input[1:5])
                out = (get(node.input[0]) - mean) * (gamma / np.sqrt(var + attr["epsilon"].f)) + beta
            elif op == "BiasAdd":
                out = tf.nn.bias_add(get(node.input[0]), get(node.input[1]))
            elif op == "LeakyRelu":
                out = tf.nn.leaky_relu(get(node.input[0]), alpha=attr["alpha"].f)
            elif op == "ConcatV2":
                out = tf.concat([get(i) for i in node.input[:-1]], axis=int(self.g.value(node.input[-1])))
            elif op in ("ResizeBilinear", "ResizeNearestNeighbor"):
                resize = tf.raw_ops.ResizeBilinear if op == "ResizeBilinear" else tf.raw_ops.ResizeNearestNeighbor
                out = resize(images=get(node.input[0]), size=get(node.input[1]), align_corners=attr["align_corners"].b,
                             half_pixel_centers=attr["half_pixel_centers"].b)
            elif op in ("MaxPool", "AvgPool"):
                pool = tf.nn.max_pool2d if op == "MaxPool" else tf.nn.avg_pool2d
                out = pool(get(node.input[0]), list(attr["ksize"].list.i), list(attr["strides"].list.i), attr["padding"].s.decode())
            elif op == "Pad":
                out = tf.pad(get(node.input[0]), get(node.input[1]))
            elif op == "Slice":
                size = np.array(self.g.value(node.input[2]))
                if size[0] == 1:  # the exporter's Slices spell out a batch of 1
                    size[0] = -1
                out = tf.slice(get(node.input[0]), get(node.input[1]), size)
            elif op == "StridedSlice":
                begin, end, strides = (np.array(self.g.value(i)) for i in node.input[1:4])
                masks = {m: attr[m].i for m in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")}
                if (not masks["ellipsis_mask"] and not masks["new_axis_mask"] & 1 and not masks["shrink_axis_mask"] & 1
                        and begin[0] == 0 and end[0] == 1 and strides[0] == 1):  # a batch of 1 spelled out
                    masks["begin_mask"] |= 1
                    masks["end_mask"] |= 1
                out = tf.raw_ops.StridedSlice(input=get(node.input[0]), begin=begin, end=end, strides=strides, **masks)
            elif op == "Reshape":
                shape = np.array(self.g.value(node.input[1]))
                if shape[0] == 1 and -1 not in shape[1:]:
                    shape[0] = -1
                out = tf.reshape(get(node.input[0]), shape)
            elif op == "Mean":
                out = tf.reduce_mean(get(node.input[0]), axis=get(node.input[1]), keepdims=attr["keep_dims"].b)
            else:
                out = _pure(op)(*(get(i) for i in node.input if not i.startswith("^")))
            values[name] = self._rounded(name, out)
        return [values[o] for o in self.outputs]

    # -- result

    def graph_def(self):
        """The graph with the tuned weights: each convolution reads its folded weights, and the batch
        norm or bias it absorbed becomes a BiasAdd of the tuned bias under the same name."""
        from tensorflow.core.framework import attr_value_pb2

        from mdeploy.exporters.xnnpack_rewrites import _assemble, _reading

        added, replaced = [], {}
        for name, layer in self.layers.items():
            node = self.g.nodes[name]
            replaced[name] = _reading(self.g, node, 1, layer["weights"].numpy(), "/tuned", added)
            if layer["bias"] is not None:
                reader = self.g.nodes[layer["absorbs"]]
                added.append(self.g.const(f"{reader.name}/tuned_bias", layer["bias"].numpy()))
                replaced[reader.name] = self.g.op(reader.name, "BiasAdd", [reader.input[0], f"{reader.name}/tuned_bias"],
                                                  like=node, data_format=attr_value_pb2.AttrValue(s=b"NHWC"))
        return _assemble(self.source, replaced, added)


def int8_ranges(saved_model: Path, calibration: Callable, input_name: str, output_names: list[str], nodes) -> tuple[dict, int]:
    """The int8 activation ranges LiteRT gives `saved_model` calibrated on the calibration images,
    as {graph node: (min, max)} (what the int8 file represents: its calibration with the
    quantizer's ties applied, a concatenation's inputs on its output's scale and the like), and
    how many int8 tensors name no node of the graph. A TFLite tensor is named after the ops fused
    into it, the last first (`.../Relu6;.../FusedBatchNorm;.../Conv2D`), under the function-call
    scopes the converter adds; the serving input and output are found beside their QUANTIZE and
    DEQUANTIZE ops."""
    from ai_edge_litert import schema_py_generated as schema

    from mdeploy.exporters.tflite import int8_converter

    model = schema.ModelT.InitFromPackedBuf(bytearray(int8_converter(saved_model, calibration, "float").convert()), 0)
    graph = model.subgraphs[0]
    calls = re.compile(r"^((Stateful)?PartitionedCall/)+")
    plain = {calls.sub("", n): n for n in nodes}
    by_position = {}
    for op in graph.operators:
        if int(op.inputs[0]) == int(graph.inputs[0]):  # the input's QUANTIZE
            by_position[int(op.outputs[0])] = input_name.split(":")[0]
        for i, o in zip(graph.outputs, output_names):
            if int(op.outputs[0]) == int(i):  # an output's DEQUANTIZE
                by_position[int(op.inputs[0])] = o.split(":")[0]
    ranges, unmatched = {}, 0
    for index, tensor in enumerate(graph.tensors):
        q = tensor.quantization
        constant = model.buffers[tensor.buffer].data is not None and len(model.buffers[tensor.buffer].data)
        if tensor.type != schema.TensorType.INT8 or constant or q is None or q.scale is None or len(q.scale) != 1:
            continue
        name = by_position.get(index)
        if name is None:
            first = calls.sub("", tensor.name.decode().split(";")[0])
            # The converter makes a name unique with a number after it (`Conv2D1`, `depthwise_01`).
            tries = [first, *(first[:-k] for k in (1, 2) if first[-k:].isdigit())]
            name = next((plain[n] for n in tries if n in plain), None)
        if name is None:
            unmatched += 1
            continue
        scale, zero = float(q.scale[0]), int(q.zeroPoint[0])
        ranges[name] = (scale * (-128 - zero), scale * (127 - zero))
    return ranges, unmatched


def augmented(images: np.ndarray, batch: int, rng: np.random.Generator, fill: float):
    """`batch` of `images` drawn at random, each zoomed, shifted and maybe mirrored (outside: `fill`)."""
    import tensorflow as tf

    pick = rng.integers(0, len(images), batch)
    boxes = []
    for _ in range(batch):
        side = float(np.exp(rng.uniform(-ZOOM, ZOOM)))
        cy, cx = 0.5 + rng.uniform(-SHIFT, SHIFT, 2)
        boxes.append([cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2])
    out = tf.image.crop_and_resize(images[pick], np.asarray(boxes, np.float32), np.arange(batch, dtype=np.int32),
                                   images.shape[1:3], extrapolation_value=fill)
    mirror = rng.random(batch) < 0.5
    return tf.where(mirror[:, None, None, None], tf.reverse(out, [2]), out)


def finetune(saved_model: Path, out_dir: Path, calibration: Callable, settings: dict,
             log: Callable[[str], None] = lambda _: None) -> dict:
    """Write `saved_model` with its weights tuned for int8 (module docstring) to `out_dir`; return what
    was done. {"skipped": reason} and nothing written when the graph cannot be emulated. Progress
    goes to `log` about every tenth of the steps."""
    import tensorflow as tf

    from mdeploy.exporters.xnnpack_rewrites import frozen_signature, save_graph_def

    graph_def, arg, outputs, spec = frozen_signature(saved_model)
    names = list(outputs.values())
    nodes = {n.name for n in graph_def.node}
    ranges, unmatched = int8_ranges(saved_model, calibration, arg, names, nodes)
    try:
        student = Emulator(graph_def, arg, names, ranges)
    except Unsupported as err:
        return {"skipped": f"ops the int8 emulation does not run: {err}"}
    teacher = Emulator(graph_def, arg, names, {})
    images = np.concatenate([np.asarray(x, np.float32) for x in itertools.islice(calibration(), MOST_IMAGES)])
    # A range frame (the flat black and white inputs at the end) is no picture to learn from.
    pictures = images[[i for i, x in enumerate(images) if np.ptp(x) > 0]] if len(images) > 1 else images
    fill = float(images.min())

    def error() -> float:
        student.quantized = True
        probe = images[:ERROR_IMAGES]
        got = [np.concatenate([o.numpy().ravel() for o in student(probe[i:i + 8])]) for i in range(0, len(probe), 8)]
        want = [np.concatenate([o.numpy().ravel() for o in teacher(probe[i:i + 8])]) for i in range(0, len(probe), 8)]
        return float(np.sqrt(np.mean([np.mean((a - b) ** 2) for a, b in zip(got, want)])))

    before = error()
    variables = student.variables()
    steps = settings["steps"]
    optimizer = tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(settings["learning_rate"], steps))

    @tf.function(reduce_retracing=True)
    def step(x):
        targets = teacher(x)
        with tf.GradientTape() as tape:
            loss = tf.add_n([tf.reduce_mean(tf.square(y - t)) for y, t in zip(student(x), targets)])
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    rng = np.random.default_rng(SEED)
    student.quantized = True
    every = max(1, -(-steps // 10))
    started = time.monotonic()
    for i in range(1, steps + 1):
        loss = step(augmented(pictures, settings["batch"], rng, fill))
        if i % every == 0 and i < steps:
            log(f"int8 fine-tuning: step {i}/{steps}, loss {float(loss):.3g}, {time.monotonic() - started:.0f}s")
    after = error()
    save_graph_def(student.graph_def(), arg, outputs, spec, out_dir)
    return {"steps": steps, "learning_rate": settings["learning_rate"], "batch": settings["batch"],
            "images": int(len(pictures)), "layers": len(student.layers), "quantized_tensors": len(ranges),
            "unmatched_tensors": unmatched, "int8_output_rmse": {"before": float(f"{before:.4g}"), "after": float(f"{after:.4g}")}}


def finetuned(saved_model: Path, calibration: Callable, settings: dict,
              log: Callable[[str], None] = lambda _: None) -> tuple[Path | None, dict]:
    """(`saved_model` tuned for int8, what `finetune` did), made once per content, settings and
    calibration images in this process; None with {"skipped": why} when the graph is left as it is."""
    import json

    from mdeploy.exporters.xnnpack_rewrites import _digest, _inputs_digest, kept

    key = ("int8_finetune", _digest(Path(saved_model)), json.dumps(settings, sort_keys=True), _inputs_digest(calibration))
    return kept(key, lambda out: finetune(Path(saved_model), out, calibration, settings, log))
