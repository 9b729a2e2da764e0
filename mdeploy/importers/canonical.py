"""The canonical model: a fixed-batch SavedModel with input `image` and output `heatmaps`.

Whatever a model came from (an import, or training), the export stages read this one
form. Its input shape and type are checked here; the ModelSpec written beside it is made
by `mdeploy.spec.make_spec`, which checks the output layout, the channel count against the
keypoint set, and the output stride (the interface's names live in `mdeploy.spec` too).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mdeploy.errors import ModelError
from mdeploy.importers import LoadedModel
from mdeploy.spec import INPUT_NAME, OUTPUT_NAME, SIGNATURE, make_spec, planned_spec  # noqa: F401 (the spec's home; re-exported)


def input_size(recipe, loaded: LoadedModel, where: Callable[..., str | None]) -> tuple[int, int]:
    """(height, width) from the recipe, checked against what the model declares."""
    shape = loaded.input_shape
    if len(shape) != 4:
        raise ModelError(
            f"the model input has shape {list(shape)}; mdeploy expects an NHWC image [batch, height, width, 3]",
            where=where("model", "import"),
        )
    if shape[3] not in (3, None):
        raise ModelError(
            f"the model input has {shape[3]} channels in its last dimension (shape {list(shape)}); "
            "mdeploy expects NHWC images with 3 channels",
            where=where("model", "import"),
        )
    if loaded.input_dtype != "float32":
        raise ModelError(f"the model input is {loaded.input_dtype}; mdeploy imports float32-input models", where=where("model", "import"))
    declared = (shape[1], shape[2])
    wanted = recipe.model.input.size
    if wanted is None:
        if None in declared:
            raise ModelError(
                f"the model accepts any input size ({list(shape)}); set model.input.size to the size to deploy",
                where=where("model", "input"),
            )
        return int(declared[0]), int(declared[1])
    for axis, (want, have) in enumerate(zip(wanted, declared)):
        if have is not None and want != have:
            raise ModelError(
                f"model.input.size is {list(wanted)} but the model's input is {have} {'high' if axis == 0 else 'wide'} "
                f"(shape {list(shape)})",
                where=where("model", "input", "size"),
            )
    return int(wanted[0]), int(wanted[1])


def write_canonical(loaded: LoadedModel, size: tuple[int, int], out_dir: Path, family=None, head: dict | None = None,
                    where: str | None = None) -> dict[str, tuple[int, ...]]:
    """Save the fixed-batch SavedModel to `out_dir`; return each output's shape by name.

    The family turns the model's raw output into its canonical outputs (a PAF release's one
    concatenated tensor becomes `heatmaps` and `pafs`); without one, the output is `heatmaps`.
    """
    import keras
    import tensorflow as tf

    height, width = size
    fn = loaded.fn
    signature = [tf.TensorSpec([1, height, width, 3], tf.float32, name=INPUT_NAME)]

    def serve(image):
        raw = fn(image)
        named = family.canonical(raw, head or {}, where) if family is not None else {OUTPUT_NAME: raw}
        return {name: tf.identity(tf.cast(t, tf.float32), name=name) for name, t in named.items()}

    try:
        # autograph off: the family's own errors (a channel count that does not fit) reach the user as they are
        concrete = tf.function(serve, input_signature=signature, autograph=False).get_concrete_function()
    except (ValueError, TypeError, tf.errors.OpError) as err:
        raise ModelError(f"the model cannot run on a [1, {height}, {width}, 3] input: {str(err).splitlines()[0]}") from err
    shapes = {name: tuple(t.shape.as_list()) for name, t in concrete.structured_outputs.items()}
    if any(None in shape for shape in shapes.values()):
        shapes = {name: tuple(t.shape.as_list()) for name, t in concrete(tf.zeros([1, height, width, 3], tf.float32)).items()}

    if isinstance(loaded.keep, keras.Model):
        # Keras 3 variables must be tracked by Keras' own exporter: a plain tf.Module
        # holding the model saves a graph whose TFLite conversion outputs NaN.
        archive = keras.export.ExportArchive()
        archive.track(loaded.keep)
        archive.add_endpoint(SIGNATURE, serve, input_signature=signature)
        archive.write_out(str(out_dir), verbose=False)
    else:
        module = tf.Module()
        module.keep = loaded.keep  # tracked: the variables the function reads are saved with it
        module.serve = tf.function(serve, input_signature=signature)
        tf.saved_model.save(module, str(out_dir), signatures={SIGNATURE: module.serve.get_concrete_function()})
    return shapes
