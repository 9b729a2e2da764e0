"""Import a TensorFlow SavedModel folder through one of its signatures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mdeploy.errors import ModelError
from mdeploy.importers import LoadedModel
from mdeploy.registry import unknown_name_message


def load(section, path: Path, where: Callable[..., str | None]) -> LoadedModel:
    import tensorflow as tf

    if not (path / "saved_model.pb").is_file():
        raise ModelError(
            f"{path} is not a SavedModel folder (no saved_model.pb inside)",
            where=where("model", "import", "path"),
        )
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as err:
        raise ModelError(f"cannot load SavedModel {path.name}: {str(err).splitlines()[0]}", where=where("model", "import", "path")) from err

    signatures = dict(loaded.signatures)
    if section.signature not in signatures:
        raise ModelError(
            unknown_name_message("signature", section.signature, list(signatures) or ["(none)"]),
            where=where("model", "import", "signature"),
        )
    sig = signatures[section.signature]
    _, kwargs = sig.structured_input_signature
    in_names = sorted(kwargs)
    out_names = sorted(sig.structured_outputs)
    in_name = _pick(section.inputs, in_names, "input", where("model", "import", "inputs", 0) or where("model", "import"))
    out_name = _pick(section.outputs, out_names, "output", where("model", "import", "outputs", 0) or where("model", "import"))
    spec = kwargs[in_name]

    def fn(image):
        return sig(**{in_name: tf.cast(image, spec.dtype)})[out_name]

    return LoadedModel(
        fn=fn,
        input_shape=tuple(spec.shape.as_list()) if spec.shape.rank is not None else (None, None, None, None),
        input_dtype=spec.dtype.name,
        keep=loaded,
        source={"format": "saved_model", "signature": section.signature, "input": in_name, "output": out_name},
    )


def _pick(wanted: list[str] | None, names: list[str], kind: str, where: str | None) -> str:
    if wanted:
        if wanted[0] not in names:
            raise ModelError(unknown_name_message(f"signature {kind}", wanted[0], names), where=where)
        return wanted[0]
    if len(names) != 1:
        raise ModelError(f"the signature has {len(names)} {kind}s ({', '.join(names)}); name one in '{kind}s'", where=where)
    return names[0]
