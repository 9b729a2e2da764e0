"""MobileHumanPose's LPNet family (LPSKI, LPRES, LPWO): a person crop in, one volume per joint out.

All three share MobileHumanPose's configuration (its `input_shape` 256x256, `output_shape`
input/8, `depth_dim` 32, `embedding_size` 2048, width 1): a 3x3 stride-2 stem to 48
channels (conv, batch norm, PReLU), MobileNetV2 inverted residuals with the (t, c, n, s)
settings [1,64,1,*] [6,48,2,2] [6,48,3,2] [6,64,4,2] [6,96,3,2] [6,160,3,*] [6,320,1,1]
(expansion 1x1 + PReLU, 3x3 depthwise + PReLU, linear 1x1 projection, each with batch
norm), a 1x1 conv to 2048 channels, three up-blocks (1x1 conv, 3x3 conv, both with a bias,
batch norm and PReLU, then bilinear x2 with aligned corners) and a 1x1 conv with a bias to
J x D channels. PReLU slopes are per channel and start at 0.25.

- `lpski` (the repository's default): strides 2 in the first five groups, 1 in the last
  two; the up-blocks take the 96-, 64- and 48-channel features (outputs of the 96-, 64-
  and second 48-channel groups) concatenated before their 1x1 conv, which narrows to that
  feature's width.
- `lpwo`: no skips; stride 1 in the first group and 2 in the 160-channel group; the
  up-blocks narrow to 160, 96 and 64 channels.
- `lpres`: every group sees the previous group's output concatenated with the one before
  it, average-pooled to its resolution (3x3, stride 2, padding 1 that the mean leaves out);
  the up-blocks keep 256 channels and each takes the previous two levels, the older one
  upsampled.

The repository's own LPRES and LPWO files start with a stride-1 stem, which gives a 64x64
output: that matches its older configuration (output input/4, 64 depth bins, the paper's),
not the current one whose soft-argmax reshapes to 32x32. mdeploy builds them with LPSKI's
stride-2 stem so that all three fit the current configuration (output stride 8).

Output: NHWC [1, H/8, W/8, J*D] named `volume`; channel `j*D + d` is joint j's depth bin
d, so it is the PyTorch NCHW output transposed (the repository reshapes its channels to
[J, D] in that order). `J` is the keypoint count passed to the build (MuCo-21 by default
in `mdeploy models`), `D` the parameter `depth_bins`.

With `soft_argmax: true` the graph ends in the soft-argmax instead: per joint a softmax
over its D*H*W values, then the expected cell, giving `coords` [1, J, 3] = (x, y, z) with
x, y in heatmap cells and z in depth bins, cell i at coordinate i (the repository's
`arange(1, n+1) - 1`): x and y in [0, W-1] and [0, H-1], z in [0, D-1]. The expectation is
one fixed matrix product (a non-trainable 3 x D*H*W coordinate table), which every mobile
runtime runs as a fully connected layer; `mdeploy models` counts the table as weights.

Padding follows PyTorch's: a stride-2 3x3 conv pads one pixel on every side (Keras' "same"
would pad only the bottom and right), so weights trained in the repository would compute
the same thing here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdeploy.errors import InputError
from mdeploy.models import ArchInfo, register

PRELU_INIT = 0.25  # PyTorch's nn.PReLU default
BN_EPSILON = 1e-5  # PyTorch's nn.BatchNorm2d default
BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1, in Keras' convention


@dataclass(frozen=True)
class Plan:
    """The channel and stride plan of one member: the repository's, or a small one for tests."""

    stem: int  # channels of the 3x3 stride-2 stem
    groups: tuple[tuple[int, int, int, int], ...]  # (expansion t, channels c, blocks n, stride s) x 7
    embedding: int  # the 1x1 conv after the last group
    up: int  # channels out of each up-block's 3x3 conv


_SETTING = ((1, 64, 1), (6, 48, 2), (6, 48, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1))
_TINY_SETTING = ((1, 8, 1), (2, 8, 1), (2, 8, 1), (2, 8, 1), (2, 12, 1), (2, 16, 1), (2, 16, 1))
STRIDES = {"ski": (2, 2, 2, 2, 2, 1, 1), "res": (1, 2, 2, 2, 2, 2, 1), "wo": (1, 2, 2, 2, 2, 2, 1)}


def plan(kind: str, tiny: bool = False) -> Plan:
    setting = _TINY_SETTING if tiny else _SETTING
    groups = tuple((t, c, n, s) for (t, c, n), s in zip(setting, STRIDES[kind]))
    return Plan(stem=8 if tiny else 48, groups=groups, embedding=32 if tiny else 2048, up=16 if tiny else 256)


# --- building blocks (Keras, imported lazily) -------------------------------------------------------


def _bn(x, name: str):
    from keras import layers

    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)


def _prelu(x, name: str):
    import keras
    from keras import layers

    return layers.PReLU(alpha_initializer=keras.initializers.Constant(PRELU_INIT), shared_axes=[1, 2], name=name)(x)


def _conv(x, filters: int, kernel: int, stride: int, name: str, bias: bool = False, depthwise: bool = False):
    """A conv padded as PyTorch pads it: (k-1)/2 on every side."""
    from keras import layers

    padding = "same"
    if stride > 1 and kernel > 1:
        x = layers.ZeroPadding2D((kernel - 1) // 2, name=f"{name}_pad")(x)
        padding = "valid"
    if depthwise:
        return layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=bias, name=name)(x)
    return layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=bias, name=name)(x)


def _conv_bn_prelu(x, filters: int, kernel: int, stride: int, name: str, bias: bool = False, depthwise: bool = False):
    x = _conv(x, filters, kernel, stride, f"{name}_conv", bias=bias, depthwise=depthwise)
    return _prelu(_bn(x, f"{name}_bn"), f"{name}_prelu")


def _inverted_residual(x, expansion: int, filters: int, stride: int, name: str):
    from keras import layers

    in_ch = x.shape[-1]
    y = x
    if expansion != 1:
        y = _conv_bn_prelu(y, in_ch * expansion, 1, 1, f"{name}_expand")
    y = _conv_bn_prelu(y, 0, 3, stride, f"{name}_dw", depthwise=True)
    y = _bn(_conv(y, filters, 1, 1, f"{name}_project_conv"), f"{name}_project_bn")
    if stride == 1 and in_ch == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def _group(x, group: tuple[int, int, int, int], start: int) -> tuple:
    """One (t, c, n, s) group; blocks are numbered as in the repository's flat list."""
    t, c, n, s = group
    for i in range(n):
        x = _inverted_residual(x, t, c, s if i == 0 else 1, f"ir{start + i}")
    return x, start + n


def _up(x, mid: int, out: int, name: str, resize: str):
    x = _conv_bn_prelu(x, mid, 1, 1, f"{name}_narrow", bias=True)
    x = _conv_bn_prelu(x, out, 3, 1, f"{name}_conv", bias=True)
    return _upsample(x, f"{name}_up", resize)


def _upsample(x, name: str, resize: str):
    if resize == "aligned":
        return layer_classes()["AlignedResize"](int(x.shape[1]) * 2, int(x.shape[2]) * 2, name=name)(x)
    from mdeploy.models.layers import resize as resize_by

    return resize_by(x, 2, name, resize)


def _concat(tensors, name: str):
    from keras import layers

    return layers.Concatenate(name=name)(tensors)


# --- the three members ---------------------------------------------------------------------------------


def _body_ski(x, p: Plan, resize: str):
    block = 0
    skips = []
    for g, group in enumerate(p.groups):
        x, block = _group(x, group, block)
        if g in (2, 3, 4):
            skips.append(x)  # 48 at 1/16, 64 at 1/32, 96 at 1/64 of the input
    x = _conv_bn_prelu(x, p.embedding, 1, 1, "embed")
    for i, skip in enumerate(reversed(skips)):
        x = _up(_concat([skip, x], f"skip{i}"), skip.shape[-1], p.up, f"up{i}", resize)
    return x


def _body_wo(x, p: Plan, resize: str):
    block = 0
    for group in p.groups:
        x, block = _group(x, group, block)
    x = _conv_bn_prelu(x, p.embedding, 1, 1, "embed")
    for i, g in enumerate((5, 4, 3)):
        x = _up(x, p.groups[g][1], p.up, f"up{i}", resize)
    return x


def _body_res(x, p: Plan, resize: str):
    pool = layer_classes()["BorderAveragePool"]
    feats = [x]
    block = 0
    y, block = _group(x, p.groups[0], block)  # stride 1: beside the stem
    feats.append(y)
    y, block = _group(_concat([feats[0], feats[1]], "dense1"), p.groups[1], block)
    feats.append(y)
    for g in range(2, len(p.groups)):
        older = pool(name=f"dense{g}_pool")(feats[-2])
        y, block = _group(_concat([older, feats[-1]], f"dense{g}"), p.groups[g], block)
        feats.append(y)
    bottom = _conv_bn_prelu(_concat([feats[-2], feats[-1]], "embed_in"), p.embedding, 1, 1, "embed")
    u0 = _up(_concat([feats[-1], bottom], "up0_in"), p.up, p.up, "up0", resize)
    u1 = _up(_concat([_upsample(bottom, "up1_skip", resize), u0], "up1_in"), p.up, p.up, "up1", resize)
    return _up(_concat([_upsample(u0, "up2_skip", resize), u1], "up2_in"), p.up, p.up, "up2", resize)


BODIES = {"ski": _body_ski, "res": _body_res, "wo": _body_wo}
RESIZES = ("aligned", "legacy", "half_pixel")


def _builder(kind: str, tiny: bool):
    def build(params: dict, input_size: tuple[int, int], num_keypoints: int):
        import keras
        from keras import layers

        name = ("tiny_lp" if tiny else "lp") + kind
        if params["resize"] not in RESIZES:
            from mdeploy.registry import unknown_name_message

            raise InputError(unknown_name_message(f"resize of {name}", params["resize"], RESIZES))
        depth = int(params["depth_bins"])
        if depth < 1:
            raise InputError(f"depth_bins of {name} must be at least 1, got {depth}")
        p = plan(kind, tiny)
        inp = keras.Input((*input_size, 3), name="image")
        x = _conv_bn_prelu(inp, p.stem, 3, 2, "stem")
        x = BODIES[kind](x, p, params["resize"])
        volume = layers.Conv2D(num_keypoints * depth, 1, use_bias=True, name="volume")(x)
        if not params["soft_argmax"]:
            return keras.Model(inp, volume, name=name)
        coords = soft_argmax_head(volume, num_keypoints, depth)
        return keras.Model(inp, coords, name=name)

    return build


def coordinate_table(height: int, width: int, depth: int) -> np.ndarray:
    """[H*W*D, 3]: row (y*W + x)*D + z holds (x, y, z), the coordinates of that volume cell."""
    y, x, z = np.meshgrid(np.arange(height), np.arange(width), np.arange(depth), indexing="ij")
    return np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1).astype(np.float32)


def soft_argmax_head(volume, joints: int, depth: int):
    """[1, H, W, J*D] volume -> [1, J, 3] expected (x, y, z) per joint (see the module docstring)."""
    from keras import layers

    h, w = int(volume.shape[1]), int(volume.shape[2])
    x = layers.Reshape((h * w, joints, depth), name="sa_cells")(volume)
    x = layers.Permute((2, 1, 3), name="sa_joints")(x)  # [J, H*W, D]
    x = layers.Reshape((joints, h * w * depth), name="sa_flat")(x)
    x = layers.Softmax(axis=-1, name="sa_softmax")(x)
    head = layers.Dense(3, use_bias=False, trainable=False, name="coords")
    out = head(x)
    head.set_weights([coordinate_table(h, w, depth)])
    return out


def soft_argmax_numpy(volume: np.ndarray, joints: int, depth: int) -> np.ndarray:
    """The same soft-argmax in numpy: [N, H, W, J*D] -> [N, J, 3] (x, y, z)."""
    n, h, w, _ = volume.shape
    v = volume.astype(np.float64).reshape(n, h, w, joints, depth).transpose(0, 3, 4, 1, 2)  # [N, J, D, H, W]
    flat = v.reshape(n, joints, -1)
    p = np.exp(flat - flat.max(axis=-1, keepdims=True))
    p = (p / p.sum(axis=-1, keepdims=True)).reshape(n, joints, depth, h, w)
    x = (p.sum(axis=(2, 3)) * np.arange(w)).sum(-1)
    y = (p.sum(axis=(2, 4)) * np.arange(h)).sum(-1)
    z = (p.sum(axis=(3, 4)) * np.arange(depth)).sum(-1)
    return np.stack([x, y, z], axis=-1).astype(np.float32)


# --- layers with no Keras equivalent (registered for .keras files on first use) -------------------------

_CLASSES: dict = {}


def layer_classes() -> dict:
    """`AlignedResize` (bilinear with aligned corners, PyTorch's UpsamplingBilinear2d) and
    `BorderAveragePool` (3x3 stride-2 mean, one pixel of padding left out of the mean, PyTorch's
    AvgPool2d(3, 2, 1, count_include_pad=False)); created and registered with Keras on first use."""
    if _CLASSES:
        return _CLASSES
    import keras

    @keras.saving.register_keras_serializable(package="mdeploy", name="AlignedResize")
    class AlignedResize(keras.layers.Layer):
        def __init__(self, height: int, width: int, **kwargs):
            super().__init__(**kwargs)
            self.height, self.width = int(height), int(width)

        def call(self, inputs):
            import tensorflow as tf

            size = tf.constant([self.height, self.width], tf.int32)
            return tf.raw_ops.ResizeBilinear(images=inputs, size=size, align_corners=True, half_pixel_centers=False)

        def compute_output_shape(self, input_shape):
            return (input_shape[0], self.height, self.width, input_shape[3])

        def get_config(self):
            return {**super().get_config(), "height": self.height, "width": self.width}

    @keras.saving.register_keras_serializable(package="mdeploy", name="BorderAveragePool")
    class BorderAveragePool(keras.layers.Layer):
        def call(self, inputs):
            import tensorflow as tf

            h, w = int(inputs.shape[1]), int(inputs.shape[2])
            padded = tf.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
            mean9 = tf.nn.avg_pool2d(padded, 3, 2, "VALID")
            return mean9 * tf.constant(_pool_correction(h, w))

        def compute_output_shape(self, input_shape):
            return (input_shape[0], (input_shape[1] - 1) // 2 + 1, (input_shape[2] - 1) // 2 + 1, input_shape[3])

    _CLASSES.update(AlignedResize=AlignedResize, BorderAveragePool=BorderAveragePool)
    return _CLASSES


def _pool_correction(h: int, w: int) -> np.ndarray:
    """[1, h', w', 1]: 9 / (cells of each 3x3 window inside the image), turning a mean over 9 into the mean over those."""

    def inside(n: int) -> np.ndarray:
        starts = np.arange(0, n, 2) - 1  # window rows start - 1 .. +1 around each even centre
        return np.minimum(starts + 3, n) - np.maximum(starts, 0)

    counts = np.outer(inside(h), inside(w)).astype(np.float32)
    return (9.0 / counts)[None, :, :, None]


def register_layers() -> None:
    """Make this family's layers known to Keras before loading a .keras file that may use them."""
    layer_classes()


# --- registration ---------------------------------------------------------------------------------------

DESCRIPTIONS = {
    "ski": "MobileHumanPose LPSKI: MobileNetV2 + skip-concat up-blocks -> J x D volume (the repository's default)",
    "res": "MobileHumanPose LPRES: densely concatenated groups + up-blocks -> J x D volume",
    "wo": "MobileHumanPose LPWO: MobileNetV2 + plain up-blocks (no concat) -> J x D volume",
}
# Counted from the repository's PyTorch modules (weights, biases, batch-norm scale and offset, PReLU
# slopes; convolution MACs) at 256x256, J = 21, D = 32, with the stride-2 stem of its configuration.
REFERENCE = {"ski": {"params": 3.525e6, "macs": 0.501e9}, "res": {"params": 7.130e6, "macs": 2.656e9},
             "wo": {"params": 3.911e6, "macs": 1.192e9}}


def _outputs(params: dict) -> list[str]:
    return ["coords" if params["soft_argmax"] else "volume"]


for _kind in ("ski", "res", "wo"):
    register(
        ArchInfo(
            name=f"lp{_kind}",
            family="volumetric",
            output_family="volumetric",
            build=_builder(_kind, tiny=False),
            defaults={"depth_bins": 32, "soft_argmax": False, "resize": "aligned"},
            input_size=(256, 256),
            output_stride=8,
            stage_outputs=_outputs,
            description=DESCRIPTIONS[_kind],
            size_multiple=64,
            reference=REFERENCE[_kind],
        )
    )
    register(
        ArchInfo(
            name=f"tiny_lp{_kind}",
            family="volumetric",
            output_family="volumetric",
            build=_builder(_kind, tiny=True),
            defaults={"depth_bins": 4, "soft_argmax": False, "resize": "aligned"},
            input_size=(64, 64),
            output_stride=8,
            stage_outputs=_outputs,
            description=f"test-only LP{_kind.upper()}-shaped volumetric model (about 10-20 thousand parameters)",
            size_multiple=64,
            test_only=True,
        )
    )
