"""What `mdeploy init` reads from a model file: its inputs, its candidate outputs, a proposed pair.

A frozen graph names no outputs: its candidates are its sink nodes (nodes whose output no
other node reads, bookkeeping ops aside), with the shapes TensorFlow infers statically or,
where it cannot, the shapes of one run on a zeros input. A .tflite lists its own inputs and
outputs; a Keras file or a SavedModel is opened through its importer. The proposed output
is heatmap-like: NHWC, its grid the input size divided by one integer stride, its channel
count that of a known keypoint set; among several, the deepest (the last stage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mdeploy.errors import ModelError

# Ops that end a graph without being an output worth naming.
NOT_OUTPUTS = frozenset(
    """Const NoOp Assert Placeholder PlaceholderWithDefault VariableV2 Variable VarHandleOp SaveV2 RestoreV2
    Save Restore SaveSlices Print PrintV2 StringFormat ControlTrigger""".split()
)
PREFERRED_SETS = ("aic14", "coco17")  # first among sets of the same size

Run = Callable[[np.ndarray], np.ndarray]  # [1, H, W, 3] float32 -> [1, h, w, K]


@dataclass
class Tensor:
    name: str
    shape: tuple[int | None, ...] | None  # None: unknown rank
    dtype: str
    op: str = ""
    depth: int = 0  # position in topological order: larger is deeper
    inner: bool = False  # not a sink: offered because no sink looks like heatmaps

    def shape_text(self) -> str:
        if self.shape is None:
            return "?"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def to_json(self) -> dict:
        out = {"name": self.name, "shape": None if self.shape is None else list(self.shape), "dtype": self.dtype}
        if self.op:
            out["op"] = self.op
        if self.inner:
            out["inner"] = True
        return out


@dataclass(frozen=True)
class Heatmaps:
    keypoints: str
    stride: int
    also: tuple[str, ...] = ()  # other keypoint sets with as many points

    def text(self) -> str:
        also = f" (or {', '.join(self.also)})" if self.also else ""
        return f"heatmaps: {self.keypoints}{also}, stride {self.stride}"


@dataclass
class ModelInterface:
    path: Path
    format: str
    inputs: list[Tensor]
    outputs: list[Tensor]
    outputs_are: str  # how the candidates were found, for the listing
    open_run: Callable[[str, str], Run]  # (input name, output name) -> run
    lookup: Callable[[str, str], Tensor] | None = None  # (name, "input"|"output") -> checked Tensor
    facts: dict = field(default_factory=dict)


@dataclass
class Choice:
    input: Tensor
    output: Tensor
    heatmaps: Heatmaps | None
    size: tuple[int, int] | None  # (height, width) the model is fed
    input_given: bool = False  # the name came from the user (checked), not from the proposal
    output_given: bool = False


def read_interface(path: Path, fmt: str, *, inputs: list[str] | None = None, outputs: list[str] | None = None,
                   size: tuple[int, int] | None = None) -> ModelInterface:
    """The model's inputs and candidate outputs (for keras/saved_model: the ones the importer picks)."""
    if fmt == "frozen_pb":
        return _frozen(path, size)
    if fmt == "tflite":
        return _tflite(path)
    return _imported(path, fmt, inputs, outputs, size)


def heatmap_match(shape, size: tuple[int, int] | None, keypoints: str | None = None) -> Heatmaps | None:
    """How a tensor of this shape reads as NHWC heatmaps of an input of `size`, or None."""
    from mdeploy.keypoints import KEYPOINT_SETS

    if shape is None or len(shape) != 4 or None in shape[1:] or shape[0] not in (1, None) or size is None or None in size:
        return None
    _, h, w, c = shape
    height, width = size
    if min(h, w) <= 0 or height % h or width % w or height // h != width // w:
        return None
    names = [name for name, kps in KEYPOINT_SETS.items() if len(kps) == c]
    if keypoints is not None:
        names = [keypoints] if keypoints in names else []
    if not names:
        return None
    names.sort(key=lambda n: (PREFERRED_SETS.index(n) if n in PREFERRED_SETS else len(PREFERRED_SETS), n))
    return Heatmaps(names[0], height // h, tuple(names[1:]))


def choose(iface: ModelInterface, input_name: str | None, output_name: str | None, keypoints: str | None,
           size: tuple[int, int] | None) -> Choice:
    """The user's names (checked) or the most likely pair."""
    if input_name:
        inp = iface.lookup(input_name, "input") if iface.lookup else _named(iface.inputs, input_name)
    else:
        images = [t for t in iface.inputs if _image_like(t)]
        if not images and len(iface.inputs) != 1:
            listing = ", ".join(f"{t.name} {t.shape_text()}" for t in iface.inputs)
            raise ModelError(f"none of the model's inputs is an NHWC image [1, height, width, 3]: {listing}",
                             hint="name the image input with --input")
        inp = (images or iface.inputs)[0]
    declared = tuple(inp.shape[1:3]) if inp.shape and len(inp.shape) == 4 and None not in inp.shape[1:3] else None
    if size and declared and tuple(size) != declared:
        raise ModelError(f"--size {size[0]},{size[1]} differs from the model's input {inp.name} {inp.shape_text()}",
                         hint="leave --size out: the size is read from the model")
    fed = size or declared
    if output_name:
        out = iface.lookup(output_name, "output") if iface.lookup else _named(iface.outputs, output_name)
        return Choice(inp, out, heatmap_match(out.shape, fed, keypoints) or heatmap_match(out.shape, fed), fed, bool(input_name), True)
    matches = [(t, heatmap_match(t.shape, fed, keypoints)) for t in iface.outputs]
    matches = [(t, h) for t, h in matches if h is not None]
    if matches:
        out, hm = max(enumerate(matches), key=lambda item: (item[1][0].depth, item[0]))[1]
        return Choice(inp, out, hm, fed, bool(input_name))
    sinks = [t for t in iface.outputs if not t.inner]
    if len(sinks) == 1:
        return Choice(inp, sinks[0], None, fed, bool(input_name))
    listing = ", ".join(f"{t.name} {t.shape_text()}" for t in sinks[:12]) + (" ..." if len(sinks) > 12 else "")
    raise ModelError(
        f"no output of the model looks like heatmaps of a known keypoint set: {listing}",
        hint="name the heatmap output with --output (and its keypoint set with --keypoints)",
    )


def _image_like(t: Tensor) -> bool:
    return t.shape is not None and len(t.shape) == 4 and t.shape[3] in (3, None) and t.dtype.startswith("float")


def _named(tensors: list[Tensor], name: str) -> Tensor:
    for t in tensors:
        if t.name == name:
            return t
    from mdeploy.registry import unknown_name_message

    raise ModelError(unknown_name_message("tensor", name, [t.name for t in tensors]))


# ---------------------------------------------------------------------------- frozen graphs


def _frozen(path: Path, size: tuple[int, int] | None) -> ModelInterface:
    import tensorflow as tf

    from mdeploy.importers.frozen_pb import _tensor, read_graph_def

    graph_def = read_graph_def(path, None)
    nodes = {n.name: n for n in graph_def.node}
    placeholders = [n for n in graph_def.node if n.op == "Placeholder"]
    if not placeholders:
        raise ModelError(
            f"{path.name} has no Placeholder node: the graph takes no input",
            hint="a frozen inference graph keeps its input as a Placeholder (e.g. 'image'); freeze it with one",
        )
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
    except (ValueError, TypeError, tf.errors.OpError) as err:
        raise ModelError(f"TensorFlow cannot load the graph in {path.name}: {str(err).splitlines()[0]}") from err
    depth = _depths(graph_def)

    def tensor(name: str, inner: bool = False) -> Tensor:
        op = graph.get_operation_by_name(name)
        shape = op.outputs[0].shape
        dims = tuple(shape.as_list()) if shape.rank is not None else None
        return Tensor(name, dims, op.outputs[0].dtype.name, op.type, depth.get(name, 0), inner)

    consumed = {i.lstrip("^").split(":")[0] for n in graph_def.node for i in n.input}
    inputs = [tensor(n.name) for n in placeholders]
    outputs = [
        tensor(n.name) for n in graph_def.node
        if n.name not in consumed and n.op not in NOT_OUTPUTS and graph.get_operation_by_name(n.name).outputs
    ]
    session = tf.compat.v1.Session(graph=graph)

    def feed_for(inp: Tensor) -> np.ndarray | None:
        if inp.shape is None or len(inp.shape) != 4:
            return None
        dims = list(inp.shape)
        dims[0] = dims[0] or 1
        if None in dims[1:3]:
            if size is None:
                return None
            dims[1:3] = size
        dims[3] = dims[3] or 3
        return np.zeros(dims, np.float32)

    def fill_shapes(candidates: list[Tensor]) -> None:
        """Shapes TensorFlow could not infer: one run on zeros of the (first image) input's shape."""
        unknown = [t for t in candidates if t.shape is None or None in t.shape]
        image = next((t for t in inputs if _image_like(t)), inputs[0])
        zeros = feed_for(image)
        if not unknown or zeros is None or len(inputs) != 1:
            return
        try:
            values = session.run([f"{t.name}:0" for t in unknown], {f"{image.name}:0": zeros})
        except (tf.errors.OpError, ValueError, TypeError):
            return  # the listing shows '?' where a shape stays unknown
        for t, v in zip(unknown, values):
            t.shape = tuple(int(d) for d in np.shape(v))

    fill_shapes(outputs)
    image = next((t for t in inputs if _image_like(t)), inputs[0])
    fed = size or (tuple(image.shape[1:3]) if image.shape and len(image.shape) == 4 and None not in image.shape[1:3] else None)
    if not any(heatmap_match(t.shape, fed) for t in outputs):
        # No sink reads as heatmaps (e.g. the graph ends in a decoder): offer the deepest inner nodes that do.
        listed = {t.name for t in outputs}
        inner = [
            tensor(n.name, inner=True) for n in graph_def.node
            if n.op not in NOT_OUTPUTS and n.name not in listed and graph.get_operation_by_name(n.name).outputs
        ]
        outputs += sorted((t for t in inner if heatmap_match(t.shape, fed)), key=lambda t: t.depth)[-3:]

    def open_run(in_name: str, out_name: str) -> Run:
        t_in, t_out = f"{in_name}:0", f"{out_name}:0"
        return lambda x: session.run(t_out, {t_in: x})

    def lookup(name: str, kind: str) -> Tensor:
        base = _tensor(name, nodes, kind, None, placeholders=kind == "input")
        found = tensor(base)
        if kind == "output":
            fill_shapes([found])
        return found

    return ModelInterface(path, "frozen_pb", inputs, outputs, "nodes no other node reads", open_run, lookup,
                          {"nodes": len(graph_def.node)})


def _depths(graph_def) -> dict[str, int]:
    """Longest path from a source to every node (Kahn's order); nodes on cycles keep depth 0."""
    from collections import deque

    preds = {n.name: [i.lstrip("^").split(":")[0] for i in n.input] for n in graph_def.node}
    succs: dict[str, list[str]] = {name: [] for name in preds}
    waiting = {}
    for name, ins in preds.items():
        known = [p for p in ins if p in succs]
        waiting[name] = len(known)
        for p in known:
            succs[p].append(name)
    depth = dict.fromkeys(preds, 0)
    queue = deque(name for name, count in waiting.items() if count == 0)
    while queue:
        name = queue.popleft()
        for nxt in succs[name]:
            depth[nxt] = max(depth[nxt], depth[name] + 1)
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                queue.append(nxt)
    return depth


# ---------------------------------------------------------------------------- .tflite


def _tflite(path: Path) -> ModelInterface:
    from mdeploy.importers.tflite import details, open_model, pick
    from mdeploy.runners.litert import LiteRTRunner

    interp = open_model(path)
    ins, outs = details(interp)
    if not ins:
        raise ModelError(f"{path.name} has no input tensor")
    from ai_edge_litert.interpreter import Interpreter

    order = {}  # tensor -> position of the op that writes it (read before delegates replace the ops)
    for position, op in enumerate(Interpreter(model_path=str(path))._get_ops_details()):  # noqa: SLF001
        for index in op["outputs"]:
            order[int(index)] = position

    def convert(d) -> Tensor:
        return Tensor(d.name, d.shape, d.dtype, depth=order.get(d.index, 0))

    def lookup(name: str, kind: str) -> Tensor:
        return convert(pick(ins if kind == "input" else outs, [name], kind, None))

    def open_run(in_name: str, out_name: str) -> Run:
        return LiteRTRunner(path, input_name=in_name, output_name=out_name)

    return ModelInterface(path, "tflite", [convert(d) for d in ins], [convert(d) for d in outs], "the model's outputs",
                          open_run, lookup)


# ---------------------------------------------------------------------------- Keras, SavedModel


def _imported(path: Path, fmt: str, inputs: list[str] | None, outputs: list[str] | None,
              size: tuple[int, int] | None) -> ModelInterface:
    from types import SimpleNamespace

    import tensorflow as tf

    from mdeploy.importers import IMPORTERS

    section = SimpleNamespace(inputs=inputs, outputs=outputs, signature="serving_default")
    try:
        loaded = IMPORTERS.get(fmt)(section, path, lambda *keys, **kw: None)
    except ModelError as err:
        raise ModelError(err.message, hint=err.hint or "the recipe's 'inputs'/'outputs' are init's --input/--output") from err
    shape = tuple(loaded.input_shape)
    inp = Tensor(loaded.source.get("input") or "input", shape, loaded.input_dtype)
    out = Tensor(loaded.source.get("output") or "output", None, "float32")
    dims = [1 if d is None else d for d in shape]
    if len(dims) == 4 and size is not None:
        dims[1:3] = size
    if size is not None or (len(dims) == 4 and None not in shape[1:3]):
        try:
            y = loaded.fn(tf.zeros(dims, tf.float32))
            out.shape, out.dtype = tuple(int(d) for d in y.shape), y.dtype.name
        except (ValueError, TypeError, tf.errors.OpError):
            pass

    def open_run(in_name: str, out_name: str) -> Run:
        return lambda x: loaded.fn(tf.constant(x)).numpy()

    return ModelInterface(path, fmt, [inp], [out], "the output the importer picks", open_run)
