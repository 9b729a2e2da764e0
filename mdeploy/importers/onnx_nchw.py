"""Channels-first ONNX of a volumetric (3D) pose model, as PyTorch exports it.

MobileHumanPose and its kin reach users as ONNX files exported from PyTorch: an NCHW
input [1, 3, H, W] (the crop, already normalized: x/255, then ImageNet mean and std,
which the spec's preprocessing states as range [0, 1], mean (0.485, 0.456, 0.406), std
(0.229, 0.224, 0.225)) and one of two outputs:

- the raw volume [1, J*D, h, w]: channel j*D + d is joint j's depth bin d;
- the soft-argmax baked in, [1, J, 3]: (x, y, z) per joint in heatmap cells and depth bins
  (the repository's own export).

`read_signature` checks the file against the joints (J, from the keypoint set) and depth
bins (D) the recipe declares, before anything is converted, so a file that does not fit
fails with a message that says what it holds. `load` converts it through onnx2tf (the
ONNX importer) and hands back a model with an NHWC input whose output is mdeploy's layout:
the volume as NHWC [1, h, w, J*D] with the same channel order, or the coordinates
unchanged. onnx2tf decides on its own how to lay out each tensor, so `load` runs the file
in onnxruntime and the converted graph on one real photo and keeps the layout under which
they agree; if none does, the conversion is wrong and the import fails. The result is frozen
to constants (onnx2tf keeps its weights as captured resources, which the ONNX exporter would
otherwise turn into extra graph inputs). A recipe reaches this importer with
`model.import: {format: onnx}` and `model.family: volumetric` (`importers.importer_for`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.errors import ModelError
from mdeploy.importers import LoadedModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOLERANCE = 1e-4  # onnxruntime vs the converted graph, on the check image (max abs, relative to the output's scale)


def _nowhere(*keys) -> str | None:
    return None


@dataclass(frozen=True)
class OnnxSignature:
    """What a channels-first volumetric ONNX file takes and gives."""

    input_name: str
    input_shape: tuple[int, ...]  # [1, 3, H, W]
    output_name: str
    output_shape: tuple[int, ...]  # [1, J*D, h, w] or [1, J, 3]
    kind: str  # "volume" | "coords"
    joints: int
    depth_bins: int

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input_shape[2], self.input_shape[3]

    @property
    def grid(self) -> tuple[int, int] | None:
        """(h, w) of the volume; None when the file ends in coordinates."""
        return (self.output_shape[2], self.output_shape[3]) if self.kind == "volume" else None

    def to_json(self) -> dict:
        return {
            "layout": "NCHW",
            "input": {"name": self.input_name, "shape": list(self.input_shape)},
            "output": {"name": self.output_name, "shape": list(self.output_shape)},
            "signature": self.kind,
            "joints": self.joints,
            "depth_bins": self.depth_bins,
        }


def _dims(value_info) -> tuple[int | None, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim)


def _text(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def read_signature(model_or_path, joints: int, depth_bins: int, where: Callable[..., str | None] = _nowhere) -> OnnxSignature:
    """Check an ONNX model (file or loaded proto) against J joints and D depth bins; say what does not fit."""
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, str | Path) else model_or_path
    at = where("model", "import", "path")
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"expected one image input, the ONNX model has {len(inputs)}: {', '.join(i.name for i in inputs)}", where=at)
    in_shape = _dims(inputs[0])
    if len(in_shape) != 4 or in_shape[1] != 3 or None in in_shape[1:]:
        hint = "it looks channels-last: import it with format onnx" if len(in_shape) == 4 and in_shape[3] == 3 else None
        raise ModelError(f"input '{inputs[0].name}' is {_text(in_shape)}; a channels-first image input is [1, 3, H, W]",
                         where=at, hint=hint)
    if len(model.graph.output) != 1:
        names = ", ".join(o.name for o in model.graph.output)
        raise ModelError(f"expected one output (the volume or the joints), the ONNX model has {len(model.graph.output)}: {names}",
                         where=at, hint="export only the output the app reads")
    out = model.graph.output[0]
    shape = _dims(out)
    name = out.name
    if len(shape) == 4 and None not in shape[1:]:
        channels = shape[1]
        if channels != joints * depth_bins:
            raise ModelError(_volume_mismatch(name, shape, joints, depth_bins), where=at)
        kind = "volume"
    elif len(shape) == 3 and None not in shape[1:]:
        if shape[2] != 3:
            raise ModelError(f"output '{name}' is {_text(shape)}; joints with the soft-argmax inside are [1, J, 3] (x, y, z)", where=at)
        if shape[1] != joints:
            raise ModelError(f"output '{name}' is {_text(shape)}: {shape[1]} joints, but the keypoint set has {joints}", where=at)
        kind = "coords"
    else:
        raise ModelError(
            f"output '{name}' is {_text(shape)}; expected the raw volume [1, J*D, h, w] or joints [1, J, 3] "
            f"(J = {joints} joints, D = {depth_bins} depth bins)",
            where=at,
        )
    return OnnxSignature(inputs[0].name, (1, *in_shape[1:]), name, (1, *shape[1:]), kind, joints, depth_bins)


def _volume_mismatch(name: str, shape, joints: int, depth: int) -> str:
    channels = shape[1]
    head = f"output '{name}' {_text(shape)} has {channels} channels, which is not {joints} joints x {depth} depth bins ({joints * depth})"
    readings = []
    if channels % depth == 0:
        readings.append(f"{channels // depth} joints x {depth} bins (check the keypoint set)")
    if channels % joints == 0:
        readings.append(f"{joints} joints x {channels // joints} bins (check depth_bins)")
    if readings:
        return f"{head}; it could be {' or '.join(readings)}"
    return f"{head}, and {channels} divides neither into {joints} joints nor into volumes of {depth} bins"


def check_image(sig: OnnxSignature) -> np.ndarray:
    """[1, 3, H, W]: a real photo resized to the input and normalized as the repository does (ImageNet)."""
    from mdeploy.images import PACKAGE_PHOTOS, package_photo
    from mdeploy.spec import Preprocessing

    pre = Preprocessing(size=sig.input_size, channels="rgb", range=(0.0, 1.0), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    x, _ = pre.apply(package_photo(next(iter(PACKAGE_PHOTOS))))
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def run_onnxruntime(path: Path, nchw: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: nchw})[0]


def volume_to_nhwc(volume_nchw: np.ndarray) -> np.ndarray:
    """[N, J*D, h, w] -> [N, h, w, J*D]; channel j*D + d stays joint j's bin d."""
    return np.ascontiguousarray(np.transpose(volume_nchw, (0, 2, 3, 1)))


def load(path: Path, joints: int, depth_bins: int, where: Callable[..., str | None] = _nowhere, section=None) -> LoadedModel:
    """Convert a channels-first volumetric ONNX file; the result's input is NHWC, its output mdeploy's layout."""
    import tensorflow as tf

    from mdeploy.importers.onnx import load as onnx2tf_load

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"expected an .onnx file, got {'a folder' if path.exists() else 'nothing'}: {path}", where=where("model", "import", "path"))
    sig = read_signature(path, joints, depth_bins, where)
    loaded = onnx2tf_load(section, path, where)

    nchw = check_image(sig)
    reference = run_onnxruntime(path, nchw)
    want = volume_to_nhwc(reference) if sig.kind == "volume" else reference
    got = np.asarray(loaded.fn(tf.constant(nchw.transpose(0, 2, 3, 1))))
    # The layouts onnx2tf may have chosen, each with the permutation that brings it to mdeploy's.
    candidates = [None, (0, 2, 3, 1)] if sig.kind == "volume" else [None, (0, 2, 1)]
    scale = max(1.0, float(np.abs(want).max()))
    best = None
    for perm in candidates:
        view = got if perm is None else np.transpose(got, perm)
        if view.shape != want.shape:
            continue
        diff = float(np.abs(view - want).max())
        if best is None or diff < best[1]:
            best = (perm, diff)
    if best is None or best[1] > TOLERANCE * scale:
        found = "no layout of its output matches" if best is None else f"differs by {best[1]:.3g} (max abs)"
        raise ModelError(
            f"onnx2tf's conversion of {path.name} does not compute what onnxruntime computes: {found} "
            f"(output {_text(got.shape)}, expected {_text(want.shape)})",
            where=where("model", "import", "path"),
        )
    perm, diff = best
    inner = loaded.fn

    def fn(image):
        out = inner(image)
        return out if perm is None else tf.transpose(out, perm)

    # Frozen to constants: onnx2tf's SavedModel keeps its weights as captured resources, which
    # tf2onnx would otherwise leave as extra inputs of the exported ONNX graph.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = tf.function(fn).get_concrete_function(tf.TensorSpec([1, *sig.input_size, 3], tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)

    def frozen_fn(image):
        out = frozen(image)
        return out[0] if isinstance(out, (list, tuple)) else out

    loaded.fn = frozen_fn
    loaded.keep = frozen
    loaded.source = {**loaded.source, **sig.to_json(), "converted_max_abs": diff}
    return loaded
