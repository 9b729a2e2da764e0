"""MobileNetV2 building blocks shared by the pose architectures, as the reference releases build them.

Read off the released PoseEstimationForMobile graph: batch norms have no scale (beta
only), depthwise convolutions have no batch norm and a plain ReLU, the projection of an
inverted bottleneck keeps ReLU6 (not linear), and separable convolutions end in batch
norm + ReLU6, also when they produce heatmaps. Keras 3 layers, imported lazily.
"""

from __future__ import annotations

# Moving-average momentum of batch norm. 0.9 lets the inference statistics settle within a
# few hundred steps (short CPU runs); the reference releases trained far longer.
BN_MOMENTUM = 0.9


def _bn(x, name: str):
    from keras import layers

    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=1e-3, scale=False, name=name)(x)


def conv_bn(x, filters: int, kernel: int, stride: int, name: str):
    """Conv (no bias) -> BN -> ReLU6."""
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(_bn(x, f"{name}_bn"))


def depthwise_relu(x, kernel: int, stride: int, name: str):
    from keras import layers

    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    return layers.ReLU(name=f"{name}_dw_relu")(x)


def inverted_bottleneck(x, expansion: int, filters: int, stride: int, kernel: int, name: str):
    """1x1 expand (BN, ReLU6) -> kxk depthwise (ReLU) -> 1x1 project (BN, ReLU6), + input when shapes allow."""
    from keras import layers

    in_ch = x.shape[-1]
    y = conv_bn(x, in_ch * expansion, 1, 1, f"{name}_expand")
    y = depthwise_relu(y, kernel, stride, name)
    y = conv_bn(y, filters, 1, 1, f"{name}_project")
    if stride == 1 and in_ch == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def bottleneck_stack(x, expansion: int, filters: int, blocks: int, stride: int, kernel: int, name: str):
    for i in range(blocks):
        x = inverted_bottleneck(x, expansion, filters, stride if i == 0 else 1, kernel, f"{name}_{i}")
    return x


def separable(x, filters: int, kernel: int, name: str, linear: bool = False):
    """kxk depthwise (ReLU) -> 1x1 pointwise: BN + ReLU6, or with `linear` a plain conv with bias.

    A linear heatmap head has exactly the parameters of the BN head (a bias per channel
    instead of a BN offset) but can leave zero: a scale-less BN + ReLU6 output is held to
    unit variance and gets stuck predicting all-zero heatmaps early in training.
    """
    from keras import layers

    y = depthwise_relu(x, kernel, 1, name)
    if linear:
        return layers.Conv2D(filters, 1, name=f"{name}_pw")(y)
    return conv_bn(y, filters, 1, 1, f"{name}_pw")


def resize(x, factor: float, name: str, mode: str = "legacy"):
    """Bilinear resize by a factor.

    `legacy` samples as TensorFlow 1 did (no half-pixel centres, no aligned corners): what
    the released models use, and read alike by every MACE release (before 1.0 MACE dropped
    `half_pixel_centers`). `half_pixel` is Keras' Resizing layer.
    """
    from keras import layers

    h, w = int(x.shape[1] * factor), int(x.shape[2] * factor)
    if mode == "half_pixel":
        return layers.Resizing(h, w, interpolation="bilinear", name=name)(x)
    if mode != "legacy":
        raise ValueError(f"unknown resize mode {mode!r}")
    return legacy_resize_class()(h, w, name=name)(x)


_LEGACY = None


def legacy_resize_class():
    """The Keras layer for TF1-style bilinear resizing, registered for .keras files on first use."""
    global _LEGACY
    if _LEGACY is None:
        import keras

        @keras.saving.register_keras_serializable(package="mdeploy", name="LegacyBilinearResize")
        class LegacyBilinearResize(keras.layers.Layer):
            def __init__(self, height: int, width: int, **kwargs):
                super().__init__(**kwargs)
                self.height, self.width = int(height), int(width)

            def call(self, inputs):
                import tensorflow as tf

                size = tf.constant([self.height, self.width], tf.int32)
                return tf.raw_ops.ResizeBilinear(images=inputs, size=size, align_corners=False, half_pixel_centers=False)

            def compute_output_shape(self, input_shape):
                return (input_shape[0], self.height, self.width, input_shape[3])

            def get_config(self):
                return {**super().get_config(), "height": self.height, "width": self.width}

        _LEGACY = LegacyBilinearResize
    return _LEGACY


def register_custom_layers() -> None:
    """Make mdeploy's layers known to Keras before loading a .keras file that may use them."""
    legacy_resize_class()
    from mdeploy.models.lpnet import register_layers

    register_layers()  # the volumetric family's aligned resize and border-aware pooling


def scaled(channels: int, width: float, minimum: int = 4) -> int:
    return max(minimum, int(round(channels * width)))
