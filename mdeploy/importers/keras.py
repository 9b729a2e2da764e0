"""Import a Keras 3 `.keras` model file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mdeploy.errors import ModelError
from mdeploy.importers import LoadedModel
from mdeploy.registry import unknown_name_message


def load(section, path: Path, where: Callable[..., str | None]) -> LoadedModel:
    if path.suffix != ".keras" or not path.is_file():
        raise ModelError(
            f"expected a Keras 3 model file ending in .keras, got {path}",
            where=where("model", "import", "path"),
            hint="save the model with model.save('name.keras'), or import a SavedModel folder with format: saved_model",
        )
    check_keras_archive(path, where=where("model", "import", "path"))
    import keras

    from mdeploy.models.layers import register_custom_layers

    register_custom_layers()  # a model trained by mdeploy may hold its layers
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # keras raises many types for a bad file
        raise ModelError(f"cannot load Keras model {path.name}: {_first_line(err)}", where=where("model", "import", "path")) from err

    outputs = list(model.outputs)
    names = [_tensor_name(t) for t in outputs]
    if section.outputs:
        want = section.outputs[0]
        if want not in names:
            raise ModelError(
                unknown_name_message("model output", want, names), where=where("model", "import", "outputs", 0)
            )
        index = names.index(want)
    elif len(outputs) == 1:
        index = 0
    else:
        raise ModelError(
            f"the model has {len(outputs)} outputs ({', '.join(names)}); name the final heatmaps in 'outputs'",
            where=where("model", "import"),
        )
    if len(model.inputs) != 1:
        raise ModelError(f"the model has {len(model.inputs)} inputs; mdeploy imports single-input models", where=where("model", "import"))
    inp = model.inputs[0]

    def fn(image):
        result = model(image, training=False)
        if isinstance(result, (list, tuple)):
            result = result[index]
        elif isinstance(result, dict):
            result = result[names[index]]
        return result

    return LoadedModel(
        fn=fn,
        input_shape=tuple(inp.shape),
        input_dtype=str(inp.dtype),
        keep=model,
        source={"format": "keras", "input": _tensor_name(inp), "output": names[index]},
    )


# Members Keras reads whole into memory (json.loads): each gets its own, smaller budget.
_JSON_MEMBERS = ("config.json", "metadata.json")


def check_keras_archive(path: Path, *, where: str | None = None) -> None:
    """A `.keras` file is a zip: list its members (no decompression) and refuse one whose
    members together, in number or in compression ratio exceed the archive limits, or whose
    config.json / metadata.json exceeds `keras_json_bytes`, before Keras reads any of it."""
    import zipfile

    from mdeploy.limits import ArchiveBudget, human_bytes, limit, open_regular, raise_hint

    try:
        with open_regular(path, "Keras model", where=where, error=ModelError) as fh, zipfile.ZipFile(fh) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelError(f"{path.name} is not a Keras 3 .keras file (not a zip archive: {err})", where=where) from None
    budget = ArchiveBudget(path, ModelError, where)
    cap = limit("keras_json_bytes")
    for info in infos:
        if info.filename in _JSON_MEMBERS and info.file_size > cap:
            raise ModelError(
                f"{path.name}: {info.filename} unpacks to {human_bytes(info.file_size)}, over the limit of {human_bytes(cap)}",
                where=where, hint=raise_hint("keras_json_bytes"),
            )
        budget.add(info.filename, info.file_size)


def _tensor_name(tensor) -> str:
    name = getattr(tensor, "name", "") or ""
    history = getattr(tensor, "_keras_history", None)
    if history is not None:
        name = history[0].name
    return name


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
