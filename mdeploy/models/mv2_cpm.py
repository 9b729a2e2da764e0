"""MobileNetV2 Convolutional Pose Machine (the PoseEstimationForMobile CPM).

Backbone: 3x3 stride-2 stem, then five MobileNetV2 parts (channels 16/24/32/64/96 x
width; 2, 5, 5, 5, 5 blocks; expansion 1 in the first part) at 1/2 .. 1/32 of the
input. The parts meet at 1/8: the two finer ones max-pooled down, the two coarser ones
bilinearly upsampled, all concatenated. Six stages then refine the heatmaps; each takes
the features and the previous stage's heatmaps, runs three inverted bottlenecks (24
channels; kernel 3 in stage 0, 7 after), a separable conv (512 x width in stage 0,
128 x width after) and a separable conv to the keypoints, and is upsampled x4 to the
output grid (stride 2). Every stage output is supervised.

The defaults reproduce the released model's weights, which differ from the training
code's description in three places: the backbone parts after the first expand by 4
(not 6), the stage bottlenecks expand by 2, 3, 3 (not 2, 4, 4), and the stage separable
convs use 1x1 depthwise kernels. `backbone_expansion`, `stage_expansions` and
`head_kernel` select the other reading; `refine_kernel` sets the depthwise kernel of the
stages after the first (7 in the release; 3 runs 5x faster on CPUs, see docs/benchmarks.md).

One default departs from the release on purpose: `heatmap_head: linear` ends each stage in
a 1x1 conv with a bias, which trains from scratch more reliably; the release ends it in
batch norm + ReLU6 (`heatmap_head: bn_relu6`). With that one change the model computes what
the released graph computes, and `mdeploy.models.release_weights` loads the release into it.
"""

from __future__ import annotations

from mdeploy.errors import InputError
from mdeploy.models import ArchInfo, register
from mdeploy.models.layers import bottleneck_stack, conv_bn, inverted_bottleneck, resize, scaled, separable
from mdeploy.registry import unknown_name_message

PARTS = ((16, 2), (24, 5), (32, 5), (64, 5), (96, 5))  # (channels, blocks); expansion 1 first, then a parameter
HEATMAP_HEADS = ("linear", "bn_relu6")  # linear 1x1 conv with bias, or the release's batch norm + ReLU6


def _stage_names(params: dict) -> list[str]:
    return [f"stage_{i}_out" for i in range(params["stages"])]


def build(params: dict, input_size: tuple[int, int], num_keypoints: int):
    import keras
    from keras import layers

    if params["heatmap_head"] not in HEATMAP_HEADS:
        raise InputError(unknown_name_message("heatmap_head of mv2_cpm", params["heatmap_head"], HEATMAP_HEADS))
    width = float(params["width"])
    inp = keras.Input((*input_size, 3), name="image")
    x = conv_bn(inp, scaled(32, width), 3, 2, "stem")
    parts = []
    for i, (channels, blocks) in enumerate(PARTS):
        expansion = 1 if i == 0 else int(params["backbone_expansion"])
        x = bottleneck_stack(x, expansion, scaled(channels, width), blocks, 1 if i == 0 else 2, 3, f"part{i}")
        parts.append(x)
    merged = [
        layers.MaxPooling2D(4, name="merge_pool4")(parts[0]),
        layers.MaxPooling2D(2, name="merge_pool2")(parts[1]),
        parts[2],
        resize(parts[3], 2, "merge_up2", params["resize"]),
        resize(parts[4], 4, "merge_up4", params["resize"]),
    ]
    features = layers.Concatenate(name="merge")(merged)

    outputs = []
    previous = None
    for s in range(params["stages"]):
        kernel = 3 if s == 0 else int(params["refine_kernel"])
        y = features if previous is None else layers.Concatenate(name=f"stage{s}_in")([features, previous])
        for b, expansion in enumerate(params["stage_expansions"]):
            y = inverted_bottleneck(y, int(expansion), 24, 1, kernel, f"stage{s}_ib{b}")
        head = int(params["head_kernel"])
        y = separable(y, scaled(512 if s == 0 else 128, width), head, f"stage{s}_sep")
        previous = separable(y, num_keypoints, head, f"stage{s}_heat", linear=params["heatmap_head"] == "linear")
        outputs.append(resize(previous, 4, f"stage_{s}_out", params["resize"]))
    return keras.Model(inp, outputs, name="mv2_cpm")


register(
    ArchInfo(
        name="mv2_cpm",
        family="cpm",
        build=build,
        defaults={"width": 0.5, "stages": 6, "backbone_expansion": 4, "stage_expansions": [2, 3, 3], "head_kernel": 1, "heatmap_head": "linear", "resize": "legacy",
                  "refine_kernel": 7},
        input_size=(192, 192),
        output_stride=2,
        stage_outputs=_stage_names,
        description="MobileNetV2 CPM, 6 stages (PoseEstimationForMobile CPM; width 0.5 = the release)",
        reference={"params": 0.56e6, "macs": 0.277e9},
    )
)
