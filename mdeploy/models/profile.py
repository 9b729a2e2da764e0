"""Parameter and multiply-accumulate counts of a Keras model (the numbers `mdeploy models` lists).

MACs count convolutions (regular, depthwise, pointwise) and dense layers at the model's
input size, the convention of mobile pose papers; batch norm (folded into the
convolutions at export), activations, pooling, resizing and additions are not counted.
"""

from __future__ import annotations


def count_params(model) -> int:
    return int(sum(int(w.numpy().size) for w in model.weights if "moving" not in w.path))


def count_macs(model) -> int:
    from keras import layers

    total = 0
    for layer in _all_layers(model):
        out_shape = layer.output.shape
        if isinstance(layer, layers.DepthwiseConv2D):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += out_shape[1] * out_shape[2] * out_shape[3] * k
        elif isinstance(layer, layers.Conv2D):
            in_ch = layer.input.shape[-1]
            k = layer.kernel_size[0] * layer.kernel_size[1]
            total += out_shape[1] * out_shape[2] * out_shape[3] * k * in_ch // layer.groups
        elif isinstance(layer, layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _all_layers(layer)
        else:
            yield layer
