"""Byte-for-byte reproducible artifacts: what varies between two identical builds, and the fixes.

Measured by building the same recipe twice in fresh processes (tests/test_reproducible.py):

- TFLite: identical without help.
- Protocol buffers (the MACE GraphDef, Core ML's model.mlmodel): maps (node attributes)
  serialize in hash order unless asked not to -> serialized deterministically.
- ONNX: tf2onnx names folded constants with a process-wide counter (`Relu6_max__61`) and
  lists initializers in the order TensorFlow reports the traced variables, which follows
  object identity -> initializers renamed after their first consumer, sorted, doc string
  (which names a traced function number) cleared.
- Core ML `.mlpackage`: `Manifest.json` identifies its items by random UUIDs -> UUIDs derived
  from each item's path.
- Core ML metadata (both kinds): coremltools stamps the conversion date into the spec's
  `userDefined` metadata (`com.github.apple.coremltools.conversion_date`) -> removed, with any
  other date- or time-valued metadata, so builds on different days agree and the spec holds
  nothing that says when it was made (tests/exporters/test_onnx_coreml.py reads it back).
- Keras `.keras` files: zip members carry the write time, metadata.json the save date, and
  config.json Python object ids (`shared_object_id`) -> fixed time, no date, ids renumbered.

What stays non-deterministic is declared in `NONDETERMINISTIC` and recorded in the manifest:
the canonical SavedModel (TensorFlow orders its checkpoint by the same identity-ordered
variable set; its contents, and every artifact converted from it, are identical) and MACE's
yml (it names the .pb by the build folder's absolute path).
"""

from __future__ import annotations

import json
import re
import uuid
import zipfile
from pathlib import Path

FIXED_TIME = (1980, 1, 1, 0, 0, 0)

NONDETERMINISTIC = {
    "saved_model": "TensorFlow writes the canonical SavedModel's variables in the order of its traced-variable set, "
    "which follows object identity and changes between processes; the values are identical, and every artifact "
    "converted from it is byte-identical",
    "mace/yml": "names the .pb by the absolute path of the build folder: identical for builds in the same place",
}


def graph_def_bytes(graph_def) -> bytes:
    return graph_def.SerializeToString(deterministic=True)


def normalize_onnx(model):
    """The same ONNX graph with stable initializer names and order (in place; returned)."""
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    renames: dict[str, str] = {}
    taken = {n.name for n in graph.node} | {v.name for v in graph.input} | {v.name for v in graph.output}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in initializers and name not in renames:
                new = f"{node.name}/input{k}"
                while new in taken:
                    new += "_"
                taken.add(new)
                renames[name] = new
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renames:
                node.input[k] = renames[name]
    for collection in (graph.input, graph.output, graph.value_info):
        for value in collection:
            if value.name in renames:
                value.name = renames[value.name]
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)
    ordered = sorted(graph.initializer, key=lambda i: i.name)
    copies = [type(i)() for i in ordered]
    for copy, original in zip(copies, ordered):
        copy.CopyFrom(original)
    del graph.initializer[:]
    graph.initializer.extend(copies)
    graph.doc_string = ""
    return model


def onnx_bytes(model) -> bytes:
    return model.SerializeToString(deterministic=True)


def normalize_mlpackage(package: Path) -> None:
    """Deterministic model.mlmodel serialization and path-derived item identifiers."""
    from coremltools.proto import Model_pb2

    spec_path = package / "Data" / "com.apple.CoreML" / "model.mlmodel"
    if spec_path.is_file():
        normalize_mlmodel(spec_path, Model_pb2)
    manifest_path = package / "Manifest.json"
    if not manifest_path.is_file():
        return
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    entries = manifest.get("itemInfoEntries", {})
    new_ids = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, f"mdeploy:{item.get('path', old)}")).upper() for old, item in entries.items()}
    manifest["itemInfoEntries"] = {new_ids[old]: item for old, item in sorted(entries.items(), key=lambda kv: new_ids[kv[0]])}
    if manifest.get("rootModelIdentifier") in new_ids:
        manifest["rootModelIdentifier"] = new_ids[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n", encoding="utf-8")


def normalize_mlmodel(path: Path, Model_pb2=None) -> None:  # noqa: N803 (the protobuf module's name)
    if Model_pb2 is None:
        from coremltools.proto import Model_pb2
    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    strip_time_metadata(spec)
    path.write_bytes(spec.SerializeToString(deterministic=True))


# Metadata keys coremltools fills with the time of conversion.
TIME_KEYS = {"com.github.apple.coremltools.conversion_date"}
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?")
_TEXT_FIELDS = ("shortDescription", "versionString", "author", "license")


def _says_when(key: str, value: str) -> bool:
    """A key named for a date or time (its last word), or a value holding a calendar date."""
    last = re.split(r"[._\-]", key.lower())[-1]
    return key in TIME_KEYS or last in ("date", "time", "timestamp", "datetime") or _DATE.search(value) is not None


def time_dependent_metadata(spec) -> list[str]:
    """The metadata fields of a Core ML spec that say when it was made (empty: none)."""
    meta = spec.description.metadata
    found = [f"userDefined[{k}]" for k, v in sorted(meta.userDefined.items()) if _says_when(k, v)]
    return found + [f for f in _TEXT_FIELDS if _DATE.search(getattr(meta, f))]


def strip_time_metadata(spec) -> None:
    """Remove the conversion date and any other date- or time-valued metadata (in place)."""
    meta = spec.description.metadata
    for key in [k for k, v in meta.userDefined.items() if _says_when(k, v)]:
        del meta.userDefined[key]
    for field in _TEXT_FIELDS:
        if _DATE.search(getattr(meta, field)):
            text = re.sub(r"\(\s*\)|\[\s*\]", "", _DATE.sub("", getattr(meta, field)))  # and brackets left empty
            setattr(meta, field, " ".join(text.split()))


def normalize_zip(path: Path) -> None:
    """Rewrite a Keras `.keras` zip reproducibly: fixed member times, no save date in
    metadata.json, and the config's `shared_object_id`s (Python object ids) renumbered in
    order of first appearance (consistently, so shared objects stay shared on load)."""
    with zipfile.ZipFile(path) as src:
        members = [(info, src.read(info.filename)) for info in src.infolist()]
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as dst:
        for info, data in members:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta).encode()
            elif info.filename == "config.json":
                data = json.dumps(_renumber_shared(json.loads(data), {})).encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_TIME)
            fixed.compress_type = info.compress_type
            fixed.external_attr = 0o644 << 16
            dst.writestr(fixed, data)
    tmp.replace(path)


def _renumber_shared(node, ids: dict):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "shared_object_id" and isinstance(value, int):
                out[key] = ids.setdefault(value, len(ids) + 1)
            else:
                out[key] = _renumber_shared(value, ids)
        return out
    if isinstance(node, list):
        return [_renumber_shared(v, ids) for v in node]
    return node
