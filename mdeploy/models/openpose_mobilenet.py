"""OpenPose-MobileNet: tf-openpose's multi-person models (heatmaps + part affinity fields).

Both variants put a MobileNet backbone at output stride 8 in front of tf-openpose's
refinement head (FACTS §9):

- `openpose_mobilenet_thin` is the released `mobilenet_thin`, layer for layer: MobileNetV1
  at width 0.75 up to Conv2d_11 (Conv2d_0 a 3x3 stride-2 conv; Conv2d_1..11 a 3x3
  depthwise conv without batch norm or activation, then a 1x1 conv + batch norm + ReLU;
  strides 2 at Conv2d_2 and Conv2d_4 only). The features concatenate Conv2d_3 max-pooled
  by 2, Conv2d_7 and Conv2d_11 (96 + 384 + 384 = 864 channels at 1/8).
- `openpose_mobilenet_v2` is tf-openpose's MobileNetV2 variant: a MobileNetV2 at `width`
  (channels rounded to multiples of 8) up to its 14th layer (expanded_conv_12, 1/16),
  which is bilinearly upsampled x2 and concatenated to the 7th (expanded_conv_5, 1/8).
  `width: 0.5, refine_width: 0.5` is the released `mobilenet_v2_small`; `1.4 / 1.0` the
  large one.

The head has 6 stages of two branches: L1 predicts the PAFs (2 x 19 limbs = 38 channels),
L2 the heatmaps (18 COCO-18 parts + background = 19). Every branch is 5 separable convs
(a depthwise conv without batch norm or activation, then a 1x1 conv): three 3x3 ones to
128 x refine_width channels, a 1x1 one to 512 x refine_width (stage 1) or 128 x
refine_width (later stages), each with batch norm + ReLU, and a 1x1 one to the output,
linear with a bias (the release's batch norm there, folded, is exactly that). Stages 2-6
take concat(previous PAFs, previous heatmaps, features) (38 + 19 + 864 = 921 channels
for thin).

Outputs of the training model: every stage's PAFs then heatmaps, stage by stage,
`stage_0_pafs, stage_0_heatmaps, ..., stage_5_pafs, stage_5_heatmaps` (all supervised; the
last is the final heatmaps, the one before it the final PAFs). `inference_outputs` gives
the final two as separate tensors, `heatmaps` then `pafs`, so that each gets its own int8
scale. The release concatenates them into one tensor (heatmaps first, `concat_stage7`);
mdeploy keeps them apart with the same channel order inside each.

The release takes BGR pixels in 0..255 with no normalisation (its graph has none) at a
size whose sides are multiples of 16 (trained at 432 x 368, width x height). The v2 variant
needs 16 (its 1/16 layer, upsampled x2, must meet the 1/8 one); thin alone would run at
multiples of 8 (its max pool and stride-2 convs all pad alike) but keeps the release's 16.

`mdeploy.models.openpose_weights` loads the thin release into `openpose_mobilenet_thin`.
"""

from __future__ import annotations

from mdeploy.errors import InputError
from mdeploy.keypoints import TF_OPENPOSE_COCO18, PafLayout
from mdeploy.models import ArchInfo, register
from mdeploy.models.layers import BN_MOMENTUM, resize

LAYOUT: PafLayout = TF_OPENPOSE_COCO18
STAGES = 6
HEATMAPS_OUTPUT = "heatmaps"  # the canonical output names (spec.OUTPUT_NAME; the PAF family's second output)
PAFS_OUTPUT = "pafs"

# MobileNetV1 layers Conv2d_1..11: (pointwise channels at width 1, depthwise stride). Conv2d_6
# keeps stride 1 in the release (output stride 8), so Conv2d_6..11 run at 1/8.
_V1_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1))
# MobileNetV2 up to its 14th layer: (expansion, channels at width 1, blocks, first stride).
_V2_PARTS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))


def stage_names(params: dict) -> list[str]:
    """Output names of the training model, in order: per stage PAFs then heatmaps; final heatmaps last."""
    return [f"stage_{s}_{kind}" for s in range(int(params["stages"])) for kind in (PAFS_OUTPUT, HEATMAPS_OUTPUT)]


def inference_outputs(model):
    """The trained model's final outputs as a model with two outputs: `heatmaps`, then `pafs`.

    heatmaps [N, H/8, W/8, 19] (18 parts + background), pafs [N, H/8, W/8, 38]; the same
    weights (no copy). Separate tensors so that each gets its own quantisation scale.
    """
    import keras

    heatmaps = keras.layers.Identity(name=HEATMAPS_OUTPUT)(model.outputs[-1])
    pafs = keras.layers.Identity(name=PAFS_OUTPUT)(model.outputs[-2])
    return keras.Model(model.inputs, [heatmaps, pafs], name=f"{model.name}_inference")


# ---------------------------------------------------------------------------- layers


def _bn(x, name: str, scale: bool):
    from keras import layers

    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-3, scale=scale, name=name)(x)


def _conv_bn_act(x, filters: int, kernel: int, stride: int, name: str, activation: str, scale: bool = False):
    """Conv (no bias) -> batch norm -> ReLU or ReLU6 (`activation` "relu" / "relu6"), or none ("linear")."""
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = _bn(x, f"{name}_bn", scale)
    if activation == "linear":
        return x
    return layers.ReLU(6.0 if activation == "relu6" else None, name=f"{name}_{activation}")(x)


def _separable(x, filters: int, kernel: int, name: str, stride: int = 1, output: str | None = None):
    """Depthwise conv (no batch norm, no activation) -> 1x1 conv: batch norm + ReLU, or with
    `output` a linear conv with a bias named `output` (a stage's PAFs or heatmaps)."""
    from keras import layers

    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    if output is not None:
        return layers.Conv2D(filters, 1, padding="same", name=output)(x)
    return _conv_bn_act(x, filters, 1, 1, f"{name}_pw", "relu")


def _head(features, refine: int, first: int, layout: PafLayout, stages: int) -> list:
    """tf-openpose's refinement stages: [pafs, heatmaps] per stage, flattened."""
    from keras import layers

    outputs: list = []
    for s in range(stages):
        x = features if s == 0 else layers.Concatenate(name=f"stage{s}_in")([outputs[-2], outputs[-1], features])
        branches = {}
        for branch, channels, kind in (("L1", layout.pafs, PAFS_OUTPUT), ("L2", layout.heatmaps, HEATMAPS_OUTPUT)):
            y = x
            for j in range(3):
                y = _separable(y, refine, 3, f"stage{s}_{branch}_{j + 1}")
            y = _separable(y, first if s == 0 else refine, 1, f"stage{s}_{branch}_4")
            branches[kind] = _separable(y, channels, 1, f"stage{s}_{branch}_5", output=f"stage_{s}_{kind}")
        outputs += [branches[PAFS_OUTPUT], branches[HEATMAPS_OUTPUT]]
    return outputs


def _layout_for(num_keypoints: int, name: str) -> PafLayout:
    if num_keypoints != LAYOUT.parts:
        raise InputError(
            f"{name} predicts the {LAYOUT.parts} parts of keypoint set {LAYOUT.keypoints} (PAF layout {LAYOUT.name}); "
            f"got {num_keypoints} keypoints",
            hint=f"use model.keypoints: {LAYOUT.keypoints}",
        )
    return LAYOUT


def _check_params(params: dict, name: str) -> None:
    for key in ("width", "refine_width"):
        if key in params and not 0 < float(params[key]) <= 4:
            raise InputError(f"{key} of {name} must be in (0, 4], got {params[key]}")
    if int(params["stages"]) < 1:
        raise InputError(f"stages of {name} must be at least 1, got {params['stages']}")


def make_divisible(value: float, divisor: int = 8, minimum: int = 8) -> int:
    """MobileNetV2's channel rounding: the nearest multiple of `divisor`, never 10 % below `value`."""
    rounded = max(minimum, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# ---------------------------------------------------------------------------- thin


def build_thin(params: dict, input_size: tuple[int, int], num_keypoints: int):
    import keras
    from keras import layers

    _check_params(params, "openpose_mobilenet_thin")
    layout = _layout_for(num_keypoints, "openpose_mobilenet_thin")
    width = float(params["width"])
    depth = lambda c: max(8, int(c * width))  # noqa: E731  (MobileNetV1's depth multiplier, min 8)
    inp = keras.Input((*input_size, 3), name="image")
    x = _conv_bn_act(inp, depth(32), 3, 2, "conv2d_0", "relu")
    taps = {}
    for i, (channels, stride) in enumerate(_V1_LAYERS, start=1):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"conv2d_{i}_dw")(x)
        x = _conv_bn_act(x, depth(channels), 1, 1, f"conv2d_{i}_pw", "relu")
        taps[i] = x
    pooled = layers.MaxPooling2D(2, padding="same", name="conv2d_3_pool")(taps[3])
    features = layers.Concatenate(name="features")([pooled, taps[7], taps[11]])
    refine = float(params["refine_width"])
    outputs = _head(features, int(128 * refine), int(512 * refine), layout, int(params["stages"]))
    return keras.Model(inp, outputs, name="openpose_mobilenet_thin")


# ---------------------------------------------------------------------------- v2


def _inverted_residual(x, expansion: int, filters: int, stride: int, name: str):
    """MobileNetV2 block: 1x1 expand (BN, ReLU6; not when expansion is 1) -> 3x3 depthwise
    (BN, ReLU6) -> 1x1 linear projection (BN), + input when shapes allow."""
    from keras import layers

    in_ch = int(x.shape[-1])
    y = x
    if expansion != 1:
        y = _conv_bn_act(y, make_divisible(in_ch * expansion), 1, 1, f"{name}_expand", "relu6", scale=True)
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu6")(_bn(y, f"{name}_dw_bn", True))
    y = _conv_bn_act(y, filters, 1, 1, f"{name}_project", "linear", scale=True)
    if stride == 1 and in_ch == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def build_v2(params: dict, input_size: tuple[int, int], num_keypoints: int):
    import keras
    from keras import layers

    _check_params(params, "openpose_mobilenet_v2")
    layout = _layout_for(num_keypoints, "openpose_mobilenet_v2")
    width = float(params["width"])
    inp = keras.Input((*input_size, 3), name="image")
    x = _conv_bn_act(inp, make_divisible(32 * width), 3, 2, "conv", "relu6", scale=True)
    blocks = []
    for expansion, channels, count, stride in _V2_PARTS:
        for b in range(count):
            x = _inverted_residual(x, expansion, make_divisible(channels * width), stride if b == 0 else 1, f"block{len(blocks)}")
            blocks.append(x)
    # blocks[5] is the 7th layer (1/8), blocks[12] the 14th (1/16); the release names them layer_7, layer_14.
    up = resize(blocks[12], 2, "layer_14_up", params["resize"])
    features = layers.Concatenate(name="features")([blocks[5], up])
    refine = float(params["refine_width"])
    outputs = _head(features, int(128 * refine), int(512 * refine), layout, int(params["stages"]))
    return keras.Model(inp, outputs, name="openpose_mobilenet_v2")


# ---------------------------------------------------------------------------- tiny (tests)


def build_tiny(params: dict, input_size: tuple[int, int], num_keypoints: int):
    """The same outputs (stride 8, 19 heatmaps + 38 PAFs per stage) at a few thousand weights."""
    import keras
    from keras import layers

    layout = _layout_for(num_keypoints, "openpose_tiny")
    inp = keras.Input((*input_size, 3), name="image")
    x = _conv_bn_act(inp, 8, 3, 2, "conv2d_0", "relu")
    for i, stride in enumerate((2, 2), start=1):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"conv2d_{i}_dw")(x)
        x = _conv_bn_act(x, 16, 1, 1, f"conv2d_{i}_pw", "relu")
    outputs: list = []
    for s in range(int(params["stages"])):
        y = x if s == 0 else layers.Concatenate(name=f"stage{s}_in")([outputs[-2], outputs[-1], x])
        y = _separable(y, 16, 3, f"stage{s}_shared")
        outputs.append(_separable(y, layout.pafs, 1, f"stage{s}_L1", output=f"stage_{s}_{PAFS_OUTPUT}"))
        outputs.append(_separable(y, layout.heatmaps, 1, f"stage{s}_L2", output=f"stage_{s}_{HEATMAPS_OUTPUT}"))
    return keras.Model(inp, outputs, name="openpose_tiny")


_COMMON = {"family": "openpose", "output_family": "paf", "input_size": (368, 432), "output_stride": 8, "stage_outputs": stage_names}

register(
    ArchInfo(
        name="openpose_mobilenet_thin",
        build=build_thin,
        defaults={"width": 0.75, "refine_width": 0.5, "stages": STAGES},
        description="OpenPose-MobileNet thin, multi-person heatmaps + PAFs, 6 stages (tf-openpose mobilenet_thin)",
        size_multiple=16,
        # Counted from the release's graph (batch norms folded: kernels + biases) at 432 x 368.
        reference={"params": 1.93e6, "macs": 4.97e9},
        **_COMMON,
    )
)

register(
    ArchInfo(
        name="openpose_mobilenet_v2",
        build=build_v2,
        defaults={"width": 0.5, "refine_width": 0.5, "stages": STAGES, "resize": "legacy"},
        description="OpenPose-MobileNetV2, multi-person heatmaps + PAFs (tf-openpose; 0.5/0.5 = mobilenet_v2_small, 1.4/1.0 = large)",
        size_multiple=16,
        # Counted from the release's mobilenet_v2_small graph (0.5 / 0.5) at 432 x 368.
        reference={"params": 0.473e6, "macs": 1.006e9},
        **_COMMON,
    )
)

register(
    ArchInfo(
        name="openpose_tiny",
        build=build_tiny,
        defaults={"stages": 2},
        description="test-only OpenPose-shaped model (stride 8, heatmaps + PAFs per stage)",
        size_multiple=8,
        test_only=True,
        **{**_COMMON, "input_size": (64, 64)},
    )
)
