"""Tiny architectures for tests: registered like the real ones, trained in seconds.

`tiny_cpm` keeps the CPM's shape (stride-2 output, several supervised stages that see
the previous heatmaps) at a few thousand parameters; `tiny_hourglass` the hourglass's
stride 4 and multi-resolution outputs.
"""

from __future__ import annotations

from mdeploy.models import ArchInfo, register
from mdeploy.models.layers import conv_bn, inverted_bottleneck, resize, separable


def build_tiny_cpm(params: dict, input_size: tuple[int, int], num_keypoints: int):
    import keras
    from keras import layers

    inp = keras.Input((*input_size, 3), name="image")
    x = conv_bn(inp, 8, 3, 2, "stem")  # 1/2
    x = inverted_bottleneck(x, 2, 12, 2, 3, "down1")  # 1/4
    x = inverted_bottleneck(x, 2, 16, 2, 3, "down2")  # 1/8
    outputs, previous = [], None
    for s in range(params["stages"]):
        y = x if previous is None else layers.Concatenate(name=f"stage{s}_in")([x, previous])
        y = inverted_bottleneck(y, 2, 16, 1, 3, f"stage{s}_ib")
        previous = separable(y, num_keypoints, 3, f"stage{s}_heat")
        outputs.append(resize(previous, 4, f"stage_{s}_out", params["resize"]))
    return keras.Model(inp, outputs, name="tiny_cpm")


def build_tiny_hourglass(params: dict, input_size: tuple[int, int], num_keypoints: int):
    import keras
    from keras import layers

    inp = keras.Input((*input_size, 3), name="image")
    x = conv_bn(inp, 8, 3, 2, "stem")
    x = inverted_bottleneck(x, 2, 12, 2, 3, "down1")  # 1/4
    low = layers.MaxPooling2D(2, name="pool")(x)  # 1/8
    low = inverted_bottleneck(low, 2, 12, 1, 3, "low")
    coarse = separable(low, num_keypoints, 3, "coarse_heat")
    up = resize(coarse, 2, "coarse_up", params["resize"])
    skip = separable(x, num_keypoints, 3, "skip_heat")
    fine = layers.Add(name="hourglass_out_1")([up, skip])
    return keras.Model(inp, [resize(coarse, 2, "hourglass_out_0", params["resize"]), fine], name="tiny_hourglass")


register(
    ArchInfo(
        name="tiny_cpm",
        family="cpm",
        build=build_tiny_cpm,
        defaults={"stages": 2, "resize": "legacy"},
        input_size=(64, 64),
        output_stride=2,
        stage_outputs=lambda p: [f"stage_{i}_out" for i in range(p["stages"])],
        description="test-only CPM-shaped model (a few thousand parameters)",
        size_multiple=8,
        test_only=True,
    )
)

register(
    ArchInfo(
        name="tiny_hourglass",
        family="hourglass",
        build=build_tiny_hourglass,
        defaults={"resize": "legacy"},
        input_size=(64, 64),
        output_stride=4,
        stage_outputs=lambda p: ["hourglass_out_0", "hourglass_out_1"],
        description="test-only hourglass-shaped model (a few thousand parameters)",
        size_multiple=8,
        test_only=True,
    )
)
