"""The stage-wise L2 loss of the PAF models (mdeploy.train.paf_loss), training on synthetic
multi-person scenes with the multi-person pipeline, and validation by COCO keypoint AP."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy.data.coco import load_coco
from mdeploy.data.pipeline_multi import build_multi_dataset, group_by_image
from mdeploy.data.synthetic_multi import MultiConfig, generate
from mdeploy.keypoints import TF_OPENPOSE_COCO18, get_keypoint_set
from mdeploy.spec import Preprocessing

COCO18 = get_keypoint_set("coco18")
LAYOUT = TF_OPENPOSE_COCO18
STEPS = 96  # 12 epochs of the 64 scenes in batches of 8


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """64 scenes of 2 to 5 overlapping figures (128 px, COCO-17 as COCO files are)."""
    folder = tmp_path_factory.mktemp("multi-train")
    generate(MultiConfig(count=64, seed=2, size=128), folder, workers=1)
    return load_coco(folder / "annotations.json", folder / "images", COCO18)


def test_the_loss_is_half_the_masked_squared_error_summed_over_stages_and_branches():
    from mdeploy.train.paf_loss import paf_loss

    rng = np.random.default_rng(0)
    shape = (2, 4, 5)
    heat_t, paf_t = rng.random((*shape, 19), np.float32), rng.normal(size=(*shape, 38)).astype(np.float32)
    mask = np.ones((*shape, 1), np.float32)
    mask[0, :2] = 0.0
    mask[1, 3, 4] = 0.25
    outputs = [rng.normal(size=(*shape, c)).astype(np.float32) for _ in range(3) for c in (38, 19)]
    loss = paf_loss(outputs, (heat_t, paf_t, mask), 3).numpy()
    want = sum(0.5 * ((mask * (outputs[2 * s] - paf_t)) ** 2).sum(axis=(1, 2, 3))
               + 0.5 * ((mask * (outputs[2 * s + 1] - heat_t)) ** 2).sum(axis=(1, 2, 3)) for s in range(3))
    assert loss.shape == (2,)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    # what a masked cell predicts does not matter
    changed = [o.copy() for o in outputs]
    for o in changed:
        o[0, :2] += 100.0
    np.testing.assert_allclose(paf_loss(changed, (heat_t, paf_t, mask)).numpy(), loss, rtol=1e-5)
    # perfect outputs at every stage: zero
    assert np.all(paf_loss([paf_t, heat_t] * 2, (heat_t, paf_t, mask), 2).numpy() == 0)
    # outputs in the wrong order (heatmaps first), or the wrong stage count, are errors, not broadcasts
    with pytest.raises(ValueError, match="do not match"):
        paf_loss([heat_t, paf_t], (heat_t, paf_t, mask))
    with pytest.raises(ValueError, match="expected 2 stages"):
        paf_loss(outputs, (heat_t, paf_t, mask), 2)


def test_openpose_tiny_learns_synthetic_scenes(scenes):
    """96 Adam steps on 64 scenes: the loss falls by 40 % and more, well below what the best constant output scores.

    The best constant output (each channel's mean target) already removes the background
    channel's bulk; getting below it means the model has learned where the people and their
    limbs are.
    """
    import keras
    import tensorflow as tf

    from mdeploy.models import create_model
    from mdeploy.train.paf_loss import paf_loss

    pre = Preprocessing((64, 64), "rgb", (0, 1))
    records = group_by_image(scenes)
    keras.utils.set_random_seed(0)
    model = create_model("openpose_tiny", None, pre.size, len(COCO18))
    stages = len(model.outputs) // 2
    optimizer = keras.optimizers.Adam(0.01)
    stream = build_multi_dataset(records, pre, batch_size=8, seed=0, epochs=12, augment=None)

    x, targets = next(iter(stream))
    outputs = model(x, training=False)
    for pafs, heatmaps in zip(outputs[0::2], outputs[1::2]):  # every stage on the targets' grid
        assert pafs.shape == targets[1].shape == (8, 8, 8, LAYOUT.pafs)
        assert heatmaps.shape == targets[0].shape == (8, 8, 8, LAYOUT.heatmaps)
    assert targets[2].shape == (8, 8, 8, 1)

    @tf.function
    def step(images, targets):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(paf_loss(model(images, training=True), targets, stages))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    whole = build_multi_dataset(records, pre, batch_size=16, augment=None, shuffle=False)

    def mean_loss(outputs_of) -> float:
        return float(np.mean(np.concatenate([paf_loss(outputs_of(images), t, stages).numpy() for images, t in whole])))

    before = mean_loss(lambda images: model(images, training=False))
    losses = [float(step(images, t)) for images, t in stream.take(STEPS)]
    assert all(np.isfinite(losses))
    after = mean_loss(lambda images: model(images, training=False))
    # the best constant output: each channel's mean target over the 64 scenes
    heat_mean = np.mean(np.concatenate([t[0].numpy() for _, t in whole]), axis=(0, 1, 2))
    paf_mean = np.mean(np.concatenate([t[1].numpy() for _, t in whole]), axis=(0, 1, 2))
    constant = mean_loss(lambda images: [np.broadcast_to(paf_mean, (len(images), 8, 8, LAYOUT.pafs)),
                                         np.broadcast_to(heat_mean, (len(images), 8, 8, LAYOUT.heatmaps))] * stages)
    print(f"loss on the 64 scenes: untrained {before:.1f}, after {STEPS} steps {after:.1f}, best constant {constant:.1f}")
    assert len(losses) == STEPS
    assert after < 0.6 * before, (before, after)
    assert after < 0.8 * constant, (after, constant)


def test_validate_people_scores_the_final_outputs_by_coco_ap(tmp_path):
    """A stand-in for a perfect model (it answers each validation image with its own targets,
    found by its pixels) scores a high AP; an untrained model finds nobody and scores about 0.
    Both go through validate_people's whole path: the spec, the final two outputs in the
    documented order, the PAF decoder, the map back to the image and pycocotools."""
    import keras

    from mdeploy.models import create_model
    from mdeploy.train.paf_loss import validate_people

    generate(MultiConfig(count=4, seed=9, size=368), tmp_path, workers=1)
    val = load_coco(tmp_path / "annotations.json", tmp_path / "images", COCO18)
    pre = Preprocessing((256, 320), "bgr", (0, 255))  # stretched: x and y scale differently
    answers = [(x.numpy()[0], t) for x, t in build_multi_dataset(group_by_image(val), pre, batch_size=1, augment=None, shuffle=False)]

    class PerfectModel:
        def __call__(self, batch, training=False):
            x = np.asarray(batch)[0]
            _, (heat, pafs, _) = min(answers, key=lambda a: np.abs(a[0] - x).mean())
            # a two-stage training model's outputs: stage 0 (nothing), then the final PAFs and heatmaps
            return [np.zeros_like(pafs), np.zeros_like(heat), pafs.numpy(), heat.numpy()]

    scores = validate_people(PerfectModel(), pre, LAYOUT, None, val)
    assert scores["primary"] == "ap_oks" and scores["val_ap_oks"] > 80.0, scores

    keras.utils.set_random_seed(0)
    untrained = create_model("openpose_tiny", None, pre.size, len(COCO18))
    nobody = validate_people(untrained, pre, LAYOUT, None, val)
    assert nobody["primary"] == "ap_oks" and 0.0 <= nobody["val_ap_oks"] < 5.0
