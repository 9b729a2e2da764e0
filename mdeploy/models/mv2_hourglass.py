"""MobileNetV2 Stacked Hourglass (the PoseEstimationForMobile hourglass), output stride 4.

Stem: 3x3 stride-2 conv (16 x width), 2 bottlenecks (expansion 1, 16 x width), 5
bottlenecks (expansion 6, 24 channels, first stride 2) to 1/4 of the input. A recursive
4-level hourglass follows: each level's down path max-pools by 2 and runs 5 bottlenecks
of 24 channels, the innermost level one more bottleneck; the up path takes the inner
result through a bottleneck to the keypoints and upsamples x2; the skip path runs 4
bottlenecks of 24 channels and one to the keypoints; up + skip is the level's output.
Outputs at 1/32, 1/16, 1/8 and 1/4 are all supervised after upsampling to 1/4; the
last (`hourglass_out_3`) is the final heatmaps.
"""

from __future__ import annotations

from mdeploy.models import ArchInfo, register
from mdeploy.models.layers import bottleneck_stack, conv_bn, inverted_bottleneck, resize, scaled

LEVELS = 4


def _names(params: dict) -> list[str]:
    return [f"hourglass_out_{i}" for i in range(LEVELS)]


def _hourglass(x, level: int, keypoints: int, outputs: list, name: str, mode: str):
    from keras import layers

    skip = bottleneck_stack(x, 6, 24, 4, 1, 3, f"{name}_skip")
    skip = inverted_bottleneck(skip, 6, keypoints, 1, 3, f"{name}_skip_out")
    down = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    down = bottleneck_stack(down, 6, 24, 5, 1, 3, f"{name}_down")
    if level > 1:
        inner = _hourglass(down, level - 1, keypoints, outputs, f"{name}_inner", mode)
    else:
        inner = inverted_bottleneck(down, 6, 24, 1, 3, f"{name}_core")
    up = inverted_bottleneck(inner, 6, keypoints, 1, 3, f"{name}_up")
    up = resize(up, 2, f"{name}_up2", mode)
    index = level - 1  # 0 = innermost (coarsest), LEVELS - 1 = outermost (final)
    # The outermost level is already at the output grid: it is the final output itself.
    out = layers.Add(name=f"hourglass_out_{index}" if level == LEVELS else f"hourglass_level_{index}")([up, skip])
    outputs.append(out)
    return out


def build(params: dict, input_size: tuple[int, int], num_keypoints: int):
    import keras

    width = float(params["width"])
    inp = keras.Input((*input_size, 3), name="image")
    x = conv_bn(inp, scaled(32, width), 3, 2, "stem")
    x = bottleneck_stack(x, 1, scaled(32, width), 2, 1, 3, "pre0")
    x = bottleneck_stack(x, 6, 24, 5, 2, 3, "pre1")
    levels: list = []
    _hourglass(x, LEVELS, num_keypoints, levels, "hg", params["resize"])
    size = levels[-1].shape[1]
    outputs = [
        out if out.shape[1] == size else resize(out, size // out.shape[1], f"hourglass_out_{i}", params["resize"])
        for i, out in enumerate(levels)
    ]
    return keras.Model(inp, outputs, name="mv2_hourglass")


register(
    ArchInfo(
        name="mv2_hourglass",
        family="hourglass",
        build=build,
        defaults={"width": 0.5, "resize": "legacy"},
        input_size=(192, 192),
        output_stride=4,
        stage_outputs=_names,
        size_multiple=64,
        description="MobileNetV2 stacked hourglass, 4 levels (PoseEstimationForMobile hourglass)",
        reference={"params": 0.40e6, "macs": 0.268e9},
    )
)
