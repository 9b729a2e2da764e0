"""Model registry: one file per architecture family, a decorator registers each variant.

`create_model(name, params, input_size, keypoints)` builds a Keras model whose outputs
are every supervised stage (the last is the final heatmaps). `inference_model` keeps the
final output only, which is what the model stage exports as `heatmaps`. Each entry
carries its default parameters, input size, output stride and output names as data, so
`mdeploy models` can describe it without building anything heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mdeploy.errors import InputError
from mdeploy.registry import Registry, unknown_name_message


@dataclass(frozen=True)
class ArchInfo:
    name: str
    family: str
    build: Callable[..., Any]  # (params, input_size, num_keypoints) -> keras.Model
    defaults: dict[str, Any]
    input_size: tuple[int, int]
    output_stride: int
    stage_outputs: Callable[[dict], list[str]]  # output names, last = final
    description: str
    size_multiple: int = 32  # input sides must be divisible by this (total downsampling)
    test_only: bool = False
    reference: dict[str, float] = field(default_factory=dict)  # published params / MACs to match
    output_family: str = "heatmap"  # what its outputs mean (mdeploy/families/): heatmap, paf, volumetric

    def params(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults merged with `given`; unknown parameter names are errors."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise InputError(
                unknown_name_message(f"parameter of {self.name}", unknown[0], list(self.defaults) or ["(none)"])
            )
        merged = dict(self.defaults)
        merged.update(given)
        return merged


MODELS: Registry[ArchInfo] = Registry("architecture")


def register(info: ArchInfo) -> ArchInfo:
    return MODELS.register(info.name, info)


def get_arch(name: str) -> ArchInfo:
    return MODELS.get(name)


def create_model(name: str, params: dict | None, input_size: tuple[int, int], num_keypoints: int):
    """The training model: every supervised stage output, final last."""
    info = get_arch(name)
    merged = info.params(params)
    height, width = input_size
    if height % info.size_multiple or width % info.size_multiple:
        raise InputError(f"{name} needs an input size divisible by {info.size_multiple}, got {list(input_size)}")
    return info.build(merged, (height, width), num_keypoints)


def inference_model(model, outputs: int = 1):
    """The same weights with only the final output(s) (what gets exported): the last `outputs`
    of the training model's supervised outputs (a PAF model's final PAFs and heatmaps)."""
    import keras

    final = model.outputs[-1] if outputs == 1 else list(model.outputs[-outputs:])
    return keras.Model(model.inputs, final, name=f"{model.name}_inference")


def _register_builtin() -> None:
    from mdeploy.models import (  # noqa: F401  (register on import)
        lpnet,  # noqa: F401  (MobileHumanPose's 3D family)
        mv2_cpm,
        mv2_hourglass,
        openpose_mobilenet,  # noqa: F401  (register on import)
        tiny,
    )


_register_builtin()
