"""Import a .tflite model: verified, packaged, glued and benchmarked, never re-converted.

A .tflite cannot be turned back into a TensorFlow graph faithfully, so its model stage
does not write the canonical SavedModel: it copies the file, as it is, to
`model/model.tflite` and writes the ModelSpec beside it. That copy, run by LiteRT through
its plain input and output tensors, is the reference every check compares against.

Its one export is `tflite/fp32`: the same file packaged for apps, i.e. with a
`serving_default` signature (`image` -> `heatmaps`) and the chosen tensors as its only
input and output. Ops, tensors and weights are copied unchanged; parity against the
reference proves it. Every other export (fp16/dynamic/int8, ONNX, Core ML, MACE) would
need a re-conversion and is refused at planning.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.errors import InputError, ModelError

MODEL_FILE = "model/model.tflite"
TFLITE_IDENTIFIER = b"TFL3"
BUFFER_ALIGN = 16  # what the TFLite converter aligns weight buffers to


@dataclass(frozen=True)
class TensorDetail:
    name: str
    index: int
    shape: tuple[int | None, ...]  # None = dynamic
    dtype: str


def open_model(path: Path, where: str | None = None):
    """A LiteRT interpreter of `path` (tensors allocated); a clear error when it is not a TFLite model."""
    from ai_edge_litert.interpreter import Interpreter

    if not path.is_file():
        raise ModelError(f"expected a .tflite file, got a folder: {path}", where=where)
    head = path.read_bytes()[:8]
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(
            f"{path.name} is not a TFLite model (no TFL3 identifier at its start)",
            where=where,
            hint="a .tflite file is what TFLiteConverter.convert() writes",
        )
    try:
        interp = Interpreter(model_path=str(path))
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise ModelError(f"LiteRT cannot load {path.name}: {str(err).strip().splitlines()[0]}", where=where) from err
    return interp


def details(interp) -> tuple[list[TensorDetail], list[TensorDetail]]:
    """(inputs, outputs) of a model's main subgraph."""

    def one(d: dict) -> TensorDetail:
        sig = d.get("shape_signature")
        dims = sig if sig is not None and len(sig) else d["shape"]
        return TensorDetail(d["name"], int(d["index"]), tuple(None if int(v) < 0 else int(v) for v in dims), np.dtype(d["dtype"]).name)

    return [one(d) for d in interp.get_input_details()], [one(d) for d in interp.get_output_details()]


def pick(tensors: list[TensorDetail], wanted: list[str] | None, kind: str, where: str | None) -> TensorDetail:
    from mdeploy.registry import unknown_name_message

    names = [t.name for t in tensors]
    if wanted:
        name = wanted[0][:-2] if wanted[0].endswith(":0") and wanted[0] not in names else wanted[0]
        if name not in names:
            raise ModelError(unknown_name_message(f"{kind} tensor", wanted[0], names), where=where)
        return tensors[names.index(name)]
    if len(tensors) != 1:
        raise ModelError(f"the model has {len(tensors)} {kind}s ({', '.join(names)}); name one in '{kind}s'", where=where)
    return tensors[0]


# ---------------------------------------------------------------------------- model stage


def write_model(recipe, path: Path, ctx) -> dict:
    """The model stage of a .tflite import: the file as it is, and its checked ModelSpec."""
    from mdeploy.importers import LoadedModel
    from mdeploy.importers.canonical import input_size, make_spec
    from mdeploy.spec import dims

    where = recipe.where
    section = recipe.model.import_
    interp = open_model(path, where("model", "import", "path"))
    inputs, outputs = details(interp)
    if len(inputs) != 1:
        raise ModelError(
            f"the model has {len(inputs)} inputs ({', '.join(t.name for t in inputs)}); mdeploy imports single-input models",
            where=where("model", "import"),
        )
    inp = pick(inputs, section.inputs, "input", where("model", "import", "inputs", 0) or where("model", "import"))
    out = pick(outputs, section.outputs, "output", where("model", "import", "outputs", 0) or where("model", "import"))
    if None in inp.shape[1:3]:
        raise ModelError(
            f"the model's input {inp.name} has a dynamic size {list(inp.shape)}: a .tflite import is packaged as it is",
            where=where("model", "import"),
            hint="convert the model again with a fixed input size",
        )
    size = input_size(recipe, LoadedModel(fn=None, input_shape=inp.shape, input_dtype=inp.dtype), where)
    out_shape = tuple(int(v) for v in interp.get_tensor(out.index).shape)
    source = {"format": "tflite", "input": inp.name, "output": out.name, "outputs": len(outputs)}
    spec = make_spec(recipe, size, out_shape, source, where)
    model_dir = ctx.out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, ctx.out / MODEL_FILE)
    spec.save(model_dir / "spec.json")
    ctx.log(f"input {inp.name} {dims(spec.input.shape)} -> {out.name} {dims(spec.output.shape)} (stride {spec.output_stride}); kept as it is")
    return {
        "artifacts": [
            {"id": "model", "path": MODEL_FILE, "format": "tflite", "variant": None},
            {"id": "spec", "path": "model/spec.json", "format": "spec", "variant": None},
        ],
    }


# ---------------------------------------------------------------------------- export


def is_tflite_import(recipe) -> bool:
    section = recipe.model.import_
    return section is not None and section.format == "tflite"


def check_exports(recipe) -> None:
    """A .tflite import builds only `tflite/fp32` (the file, packaged): anything else is bad input."""
    if not is_tflite_import(recipe):
        return
    why = "a .tflite import is packaged as it is, never re-converted"
    hint = "import the model's source instead (frozen .pb, SavedModel, .keras or ONNX) to build other formats"
    export = recipe.export
    for fmt in ("onnx", "coreml", "mace"):
        if getattr(export, fmt, None) is not None:
            raise InputError(f"export.{fmt}: {why}; it builds only tflite/fp32", where=recipe.where("export", fmt, key=True), hint=hint)
    if export.tflite is not None:
        for index, variant in enumerate(export.tflite.variants):
            if variant != "fp32":
                raise InputError(
                    f"export.tflite.variants: {variant} would re-convert the model; {why}, "
                    "so its only variant is fp32 (the imported file, whatever its precision)",
                    where=recipe.where("export", "tflite", "variants", index),
                    hint=hint,
                )


def package(target, inputs) -> dict:
    """tflite/fp32 of a .tflite import: the imported file with a serving signature (image -> heatmaps)."""
    from mdeploy.exporters.tflite import describe_flatbuffer, log_delegates

    source = inputs.spec.source
    data = inputs.saved_model.read_bytes()  # the model stage's copy of the imported file
    packed = with_signature(data, source["input"], source["output"])
    inputs.out.parent.mkdir(parents=True, exist_ok=True)
    inputs.out.write_bytes(packed)
    details_ = describe_flatbuffer(packed)
    log_delegates(inputs.log, details_)
    return {**details_, "packaged_from": {"input": source["input"], "output": source["output"]}}


def with_signature(data: bytes, input_name: str, output_name: str) -> bytes:
    """The flatbuffer with one `serving_default` signature and only these tensors as subgraph 0's input and output."""
    from ai_edge_litert import schema_py_generated as schema

    from mdeploy.spec import INPUT_NAME, OUTPUT_NAME, SIGNATURE

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    if any((b.offset or 0) > 1 for b in model.buffers or []):
        raise ModelError("the model keeps its weights outside the flatbuffer (a >2 GB layout); mdeploy cannot package it")
    graph = model.subgraphs[0]

    def index_of(name: str, indices) -> int:
        for index in indices:
            found = graph.tensors[index].name
            if (found.decode() if isinstance(found, bytes) else found) == name:
                return int(index)
        raise ModelError(f"the model has no tensor {name!r} among its inputs and outputs")

    def tensor_map(name: str, index: int):
        m = schema.TensorMapT()
        m.name, m.tensorIndex = name, index
        return m

    graph.inputs = [index_of(input_name, graph.inputs)]
    graph.outputs = [index_of(output_name, graph.outputs)]
    signature = schema.SignatureDefT()
    signature.inputs = [tensor_map(INPUT_NAME, graph.inputs[0])]
    signature.outputs = [tensor_map(OUTPUT_NAME, graph.outputs[0])]
    signature.signatureKey = SIGNATURE
    signature.subgraphIndex = 0
    model.signatureDefs = [signature]
    builder = _aligned_builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _aligned_builder(size: int):
    import flatbuffers

    class Builder(flatbuffers.Builder):
        """Byte vectors (weight buffers) start on 16-byte boundaries, as the converter writes them."""

        def StartVector(self, elemSize, numElems, alignment):  # noqa: N802,N803 (flatbuffers' names)
            if elemSize == 1 and numElems >= BUFFER_ALIGN:
                alignment = max(alignment, BUFFER_ALIGN)
            return super().StartVector(elemSize, numElems, alignment)

    return Builder(size)


# ---------------------------------------------------------------------------- runner


def runner(path: Path, source: dict) -> Callable[[np.ndarray], np.ndarray]:
    """LiteRT on the imported file through the tensors the import picked."""
    from mdeploy.runners.litert import LiteRTRunner

    return LiteRTRunner(path, input_name=source["input"], output_name=source["output"])
