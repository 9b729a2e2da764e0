"""MobileHumanPose's LPNet family: sizes against the repository's configuration, tiny variants, the soft-argmax."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy.errors import InputError
from mdeploy.models import create_model, get_arch
from mdeploy.models.lpnet import coordinate_table, layer_classes, soft_argmax_head, soft_argmax_numpy
from mdeploy.models.profile import count_macs, count_params

MUCO_JOINTS, DEPTH = 21, 32


def repository_count(kind: str, joints: int = MUCO_JOINTS, depth: int = DEPTH, size: int = 256) -> tuple[int, int]:
    """Parameters and conv MACs of the repository's PyTorch modules, counted by hand from their structure.

    Every conv weight (and bias where the module has one), batch-norm scale and offset, one PReLU
    slope per channel; MACs of every conv at its output size. Independent of Keras and of
    mdeploy's builder: a second reading of the same configuration.
    """
    settings = [(1, 64, 1), (6, 48, 2), (6, 48, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]
    strides = {"ski": [2, 2, 2, 2, 2, 1, 1], "res": [1, 2, 2, 2, 2, 2, 1], "wo": [1, 2, 2, 2, 2, 2, 1]}[kind]
    total = {"p": 0, "m": 0}

    def conv(cin, cout, k, hw, groups=1, bias=False, bn=True, prelu=True):
        total["p"] += cin // groups * cout * k * k + (cout if bias else 0) + (2 * cout if bn else 0) + (cout if prelu else 0)
        total["m"] += hw * hw * cout * k * k * cin // groups

    def inverted(cin, cout, t, s, hw):
        if t != 1:
            conv(cin, cin * t, 1, hw)
        hw //= s
        conv(cin * t, cin * t, 3, hw, groups=cin * t)
        conv(cin * t, cout, 1, hw, prelu=False)
        return hw

    def up(cin, mid, out, hw):
        conv(cin, mid, 1, hw, bias=True)
        conv(mid, out, 3, hw, bias=True)
        return hw * 2

    hw = size // 2
    conv(3, 48, 3, hw)
    if kind == "res":
        first_in = [48, 48 + 64, 64 + 48, 48 + 48, 48 + 64, 64 + 96, 96 + 160]
        for (t, c, n), s, cin in zip(settings, strides, first_in):
            for i in range(n):
                hw = inverted(cin if i == 0 else c, c, t, s if i == 0 else 1, hw)
        conv(160 + 320, 2048, 1, hw)
        for cin in (320 + 2048, 2048 + 256, 256 + 256):
            hw = up(cin, 256, 256, hw)
    else:
        cin = 48
        for (t, c, n), s in zip(settings, strides):
            for i in range(n):
                hw = inverted(cin, c, t, s if i == 0 else 1, hw)
                cin = c
        conv(cin, 2048, 1, hw)
        mids = (96, 64, 48) if kind == "ski" else (160, 96, 64)
        for i, mid in enumerate(mids):
            hw = up((2048 if i == 0 else 256) + (mid if kind == "ski" else 0), mid, 256, hw)
    conv(256, joints * depth, 1, hw, bias=True, bn=False, prelu=False)
    return total["p"], total["m"]


@pytest.fixture(scope="module")
def full_models():
    """The three at the repository's configuration, built once for the module."""
    return {kind: create_model(f"lp{kind}", None, (256, 256), MUCO_JOINTS) for kind in ("ski", "res", "wo")}


@pytest.mark.parametrize("kind", ["ski", "res", "wo"])
def test_full_models_match_the_repository_configuration(full_models, kind):
    model = full_models[kind]
    assert tuple(model.input.shape) == (None, 256, 256, 3)
    assert tuple(model.output.shape) == (None, 32, 32, MUCO_JOINTS * DEPTH)
    params, macs = count_params(model), count_macs(model)
    assert (params, macs) == repository_count(kind)  # exactly the repository's modules, counted another way
    reference = get_arch(f"lp{kind}").reference
    assert params == pytest.approx(reference["params"], rel=0.05) and macs == pytest.approx(reference["macs"], rel=0.05)


def test_lpski_is_the_documented_default_size():
    """FACTS' hand count of the repository default: about 3.5 M parameters and 0.50 GMACs at J = 21."""
    params, macs = repository_count("ski")
    assert params == pytest.approx(3.5e6, rel=0.02) and macs == pytest.approx(0.50e9, rel=0.02)
    assert get_arch("lpski").reference == {"params": 3.525e6, "macs": 0.501e9}


@pytest.mark.parametrize("kind", ["ski", "res", "wo"])
def test_tiny_variants(kind):
    info = get_arch(f"tiny_lp{kind}")
    assert info.test_only and info.family == "volumetric"
    model = create_model(f"tiny_lp{kind}", {"depth_bins": 3}, (64, 64), 7)
    assert tuple(model.output.shape) == (None, 8, 8, 21) and model.output_names == ["volume"]
    assert count_params(model) < 30_000
    coords = create_model(f"tiny_lp{kind}", {"soft_argmax": True}, (128, 64), 7)
    assert tuple(coords.output.shape) == (None, 7, 3) and coords.output_names == ["coords"]


def test_soft_argmax_head_equals_numpy_on_the_raw_head():
    import keras

    model = create_model("tiny_lpski", {"soft_argmax": True, "depth_bins": 6}, (64, 64), 5)
    head = model.get_layer("volume")
    raw = keras.Model(model.input, head.output)
    image = np.random.default_rng(0).uniform(-2, 2, (2, 64, 64, 3)).astype(np.float32)
    features = keras.Model(model.input, head.input)(image).numpy()
    kernel, bias = head.get_weights()
    rng = np.random.default_rng(1)  # a peaked volume: untrained features are faint
    head.set_weights([rng.normal(0, 4.0 / (features.std() * np.sqrt(kernel.shape[2])), kernel.shape).astype(np.float32),
                      rng.normal(0, 1.0, bias.shape).astype(np.float32)])
    volume = raw(image).numpy()
    coords = model(image).numpy()
    expected = soft_argmax_numpy(volume, 5, 6)
    np.testing.assert_allclose(coords, expected, atol=2e-4)
    assert coords.shape == (2, 5, 3) and np.ptp(coords[..., 0]) > 0.5 and np.ptp(coords[..., 2]) > 0.3


def test_soft_argmax_convention_on_a_known_peak():
    """Cell i is at coordinate i; x runs along the width, y down the height, z over channel j*D + d."""
    import keras

    h, w, joints, depth = 4, 6, 3, 5
    volume = np.full((1, h, w, joints * depth), -30.0, np.float32)
    peaks = {0: (5, 0, 4), 1: (0, 3, 0), 2: (2, 1, 2)}  # joint: (x, y, z)
    for j, (x, y, z) in peaks.items():
        volume[0, y, x, j * depth + z] = 30.0
    inp = keras.Input((h, w, joints * depth))
    head = keras.Model(inp, soft_argmax_head(inp, joints, depth))
    got = head(volume).numpy()[0]
    np.testing.assert_allclose(got, np.array([peaks[j] for j in range(joints)], np.float32), atol=1e-3)
    np.testing.assert_allclose(soft_argmax_numpy(volume, joints, depth)[0], got, atol=1e-3)
    assert coordinate_table(h, w, depth)[(2 * w + 3) * depth + 1].tolist() == [3.0, 2.0, 1.0]


def test_in_graph_soft_argmax_agrees_with_the_python_decode():
    """The head exported with `soft_argmax: true` and mdeploy's Python decode read a volume alike."""
    import keras

    volumetric = pytest.importorskip("mdeploy.evaluate.volumetric")
    h, w, joints, depth = 8, 6, 4, 5
    volume = np.random.default_rng(5).normal(0, 4.0, (2, h, w, joints * depth)).astype(np.float32)
    inp = keras.Input((h, w, joints * depth))
    got = keras.Model(inp, soft_argmax_head(inp, joints, depth))(volume).numpy()
    volumes = volume.reshape(2, h, w, joints, depth).transpose(0, 3, 4, 1, 2)  # [N, J, D, H, W]: channel j*D + d
    np.testing.assert_allclose(got, volumetric.soft_argmax(volumes), atol=2e-4)


def test_layers_compute_what_pytorch_does():
    """The aligned x2 resize (UpsamplingBilinear2d) and the 3x3/2 mean that leaves padding out (count_include_pad=False)."""
    row = np.arange(3, dtype=np.float32).reshape(1, 1, 3, 1)
    resized = layer_classes()["AlignedResize"](1, 6)(row).numpy().ravel()
    np.testing.assert_allclose(resized, np.linspace(0, 2, 6), atol=1e-6)  # corners stay on corners

    x = np.random.default_rng(2).normal(size=(1, 8, 6, 2)).astype(np.float32)
    got = layer_classes()["BorderAveragePool"]()(x).numpy()
    want = np.zeros((1, 4, 3, 2), np.float32)
    for i in range(4):
        for j in range(3):
            want[0, i, j] = x[0, max(2 * i - 1, 0):2 * i + 2, max(2 * j - 1, 0):2 * j + 2].mean(axis=(0, 1))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_saved_keras_file_loads_back_with_its_layers(tmp_path):
    import keras

    from mdeploy.models.layers import register_custom_layers

    model = create_model("tiny_lpres", {"soft_argmax": True}, (64, 64), 4)
    model.save(tmp_path / "m.keras")
    register_custom_layers()
    back = keras.saving.load_model(tmp_path / "m.keras")
    image = np.random.default_rng(4).normal(size=(1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(back(image).numpy(), model(image).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("params", "size", "message"),
    [
        ({"resize": "nearest"}, (64, 64), "unknown resize of lpski 'nearest'"),
        ({"depth_bins": 0}, (64, 64), "depth_bins of lpski must be at least 1, got 0"),
        (None, (96, 96), "tiny_lpski needs an input size divisible by 64, got [96, 96]"),
    ],
)
def test_bad_settings_are_input_errors(params, size, message):
    name = "tiny_lpski" if params is None else "lpski"
    with pytest.raises(InputError) as caught:
        create_model(name, params, size, 21)
    assert caught.value.message.startswith(message)
