"""Start `openpose_mobilenet_thin` from tf-openpose's released `mobilenet_thin` weights.

The release (`graph_opt.pb`, FACTS §9) is a TF1 frozen graph whose batch norms are folded
into the convolutions (a BiasAdd after each conv). mdeploy's architecture keeps its batch
norms for training; a folded BiasAdd loads into a batch norm as its offset with an
identity normalisation (mean 0, variance 1 - epsilon), so the initialised model computes
what the graph computes and trains on from there.

The pairing is `mdeploy.models.release_weights`' structural walk (op by op from the output
back to the input, every op the same operation with the same settings). The release has
one output, `Openpose/concat_stage7` = concat(heatmaps, PAFs); the model keeps the two
apart, so the walk starts from a view of the model that joins its final heatmaps and PAFs
the same way (the view shares the model's layers: loading it loads the model).

The initialised model takes what the release takes: BGR pixels in 0..255, no
normalisation, sides multiples of 16 (trained at 432 x 368, width x height).

The `mobilenet_v2_small` release is not a starting point for `openpose_mobilenet_v2`: its
backbone's batch norms were frozen in training mode (`is_training`, statistics of each
input batch, which no fixed weights reproduce) and its stage outputs keep unfolded batch
norms; the loader refuses it with the first layer that differs.
"""

from __future__ import annotations

from pathlib import Path

from mdeploy.errors import ModelError

ARCH = "openpose_mobilenet_thin"
RELEASE_OUTPUT = "Openpose/concat_stage7"
RELEASE_INPUT_SIZE = (368, 432)  # (height, width) the release was trained at
_HINT = (
    "tf-openpose's mobilenet_thin is openpose_mobilenet_thin with its defaults and the 18 parts of coco18 "
    "(mdeploy.models.openpose_weights.initialise builds it); mobilenet_v2_* releases are another architecture"
)


def initialise(
    graph_path: Path,
    input_size: tuple[int, int] = RELEASE_INPUT_SIZE,
    params: dict | None = None,
    *,
    where: str | None = None,
):
    """Build `openpose_mobilenet_thin` (defaults + `params`) and load the release's weights.

    Returns (model, report): the training model (every stage's PAFs and heatmaps, final
    heatmaps last) and the load report of `load_release_weights`.
    """
    from mdeploy.keypoints import TF_OPENPOSE_COCO18
    from mdeploy.models import create_model

    model = create_model(ARCH, params, tuple(input_size), TF_OPENPOSE_COCO18.parts)
    return model, load_release_weights(model, Path(graph_path), where=where)


def load_release_weights(model, graph_path: Path, *, where: str | None = None) -> dict:
    """Copy the weights of tf-openpose's frozen graph at `graph_path` into `model`.

    `model` is a training model of the openpose family (final PAFs and heatmaps its last two
    outputs). Raises `ModelError` naming the first layer and graph op that differ; nothing is
    copied then. Returns the report of `release_weights.load_release_weights` (graph, sha256,
    tensors and values copied, layer -> graph node pairing).
    """
    import keras

    from mdeploy.models import release_weights

    if len(model.outputs) < 2:
        raise ModelError(f"{model.name} has {len(model.outputs)} output; an OpenPose model ends in PAFs and heatmaps", where=where, hint=_HINT)
    heatmaps, pafs = model.outputs[-1], model.outputs[-2]
    joined = keras.layers.Concatenate(name="concat_stage7")([heatmaps, pafs])
    view = keras.Model(model.inputs, joined, name=model.name)
    in_view = {id(layer) for layer in view.layers}
    missing = [layer.name for layer in model.layers if layer.weights and id(layer) not in in_view]
    if missing:  # a weighted layer that feeds neither final output: the graph cannot hold its weights
        raise ModelError(f"layer {missing[0]!r} of {model.name} feeds neither final output", where=where, hint=_HINT)
    try:
        return release_weights.load_release_weights(view, Path(graph_path), where=where, output=RELEASE_OUTPUT)
    except ModelError as err:
        raise ModelError(err.message, where=err.where, hint=_HINT) from None
