"""Every registered architecture builds and matches what it declares; the reference ones match the releases."""

from __future__ import annotations

import pytest

from mdeploy.errors import InputError
from mdeploy.models import MODELS, create_model, get_arch, inference_model
from mdeploy.models.profile import count_macs, count_params


@pytest.mark.parametrize("name", MODELS.names())
def test_every_architecture_builds_as_declared(name):
    info = get_arch(name)
    params = info.params(None)
    keypoints = 18 if info.family == "openpose" else 14  # an OpenPose model predicts COCO-18's parts and limbs
    model = create_model(name, params, info.input_size, keypoints)
    names = info.stage_outputs(params)
    assert len(model.outputs) == len(names)
    h, w = info.input_size
    channels = 14 * params["depth_bins"] if info.family == "volumetric" else 14  # a volume: joints x depth bins
    for out, out_name in zip(model.outputs, names):
        if info.family == "openpose":  # per stage: 38 PAF channels, then 18 heatmaps + background
            channels = 38 if out_name.endswith("_pafs") else 19
        assert tuple(out.shape) == (None, h // info.output_stride, w // info.output_stride, channels)
    assert list(model.output_names) == names
    final = inference_model(model)
    assert len(final.outputs) == 1


@pytest.mark.parametrize(("name", "params", "macs"), [("mv2_cpm", 0.56e6, 0.277e9), ("mv2_hourglass", 0.40e6, 0.268e9)])
def test_reference_models_match_the_releases_within_5_percent(name, params, macs):
    info = get_arch(name)
    model = create_model(name, None, info.input_size, 14)
    assert count_params(model) == pytest.approx(params, rel=0.05)
    assert count_macs(model) == pytest.approx(macs, rel=0.05)
    assert info.reference == {"params": params, "macs": macs}


def test_cpm_matches_the_released_graph_exactly():
    """558,960 = every weight and batch-norm offset in the PoseEstimationForMobile CPM release."""
    model = create_model("mv2_cpm", None, (192, 192), 14)
    assert count_params(model) == 558_960


def test_width_scales_the_cpm():
    half = count_params(create_model("mv2_cpm", {"width": 0.5}, (192, 192), 14))
    wide = count_params(create_model("mv2_cpm", {"width": 0.75}, (192, 192), 14))
    assert wide > 1.3 * half


def test_unknown_names_suggest_the_closest():
    with pytest.raises(InputError) as caught:
        get_arch("mv2_cmp")
    assert caught.value.message.startswith("unknown architecture 'mv2_cmp' (did you mean 'mv2_cpm'?)")
    with pytest.raises(InputError) as caught:
        get_arch("mv2_cpm").params({"widht": 0.5})
    assert "(did you mean 'width'?)" in caught.value.message


def test_input_size_must_fit_the_downsampling():
    with pytest.raises(InputError) as caught:
        create_model("mv2_hourglass", None, (160, 160), 14)
    assert caught.value.message == "mv2_hourglass needs an input size divisible by 64, got [160, 160]"
