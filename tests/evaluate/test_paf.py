"""tf-openpose's multi-person decoding (mdeploy.evaluate.paf) on hand-made and real inputs.

- synthetic heatmaps/PAFs with known answers: two people, a limb with a weak PAF rejected,
  nobody, a person with too few parts, wrong channel counts;
- the real release `mobilenet_thin` (../shared/reference/tf-openpose) run with TensorFlow on
  the 4 COCO photos of ../shared/data/realkp/coco: the decoder finds each annotated person
  that has visible keypoints (14 annotated, 12 with any keypoint: 1, 2, 4, 5 per photo; the
  other two are annotated boxes without a single labelled keypoint), at the annotated place;
- an independent, plain-loop implementation of the release's rules, written here (its image
  ops in TensorFlow as the release's estimator does them), agrees with the module on the
  model's real outputs.
Skipped when ../shared (or TensorFlow) is absent.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mdeploy.errors import InputError
from mdeploy.evaluate.paf import PafSettings, area_resize, decode_people, split_output
from mdeploy.keypoints import TF_OPENPOSE_COCO18, get_keypoint_set, map_names
from tests.helpers import SHARED

COCO18 = get_keypoint_set("coco18")
LAYOUT = TF_OPENPOSE_COCO18
THIN_PB = SHARED / "reference" / "tf-openpose" / "mobilenet_thin" / "graph_opt.pb"
REAL = SHARED / "data" / "realkp" / "coco"
INPUT_HW = (368, 432)

needs_release = pytest.mark.skipif(
    not (THIN_PB.is_file() and REAL.is_dir()), reason="tf-openpose's release or the real photos are not here: ../shared is absent"
)


# ------------------------------------------------------------------- the data tables


def test_coco18_and_the_release_channel_table_are_consistent():
    assert len(COCO18) == 18 and COCO18.names[1] == "neck" and COCO18.names[17] == "left_ear"
    assert len(LAYOUT.limbs) == 19 and LAYOUT.heatmaps == 19 and LAYOUT.pafs == 38 and LAYOUT.channels == 57
    assert LAYOUT.background == 18 and LAYOUT.new_person_limbs == 17
    assert LAYOUT.limbs[LAYOUT.paf_channels.index((0, 1))] == (1, 8)  # neck -> right hip owns PAF 0/1
    mapping = map_names(COCO18.names, get_keypoint_set("coco17"), source="coco18")
    assert mapping.dropped == ("neck",) and len(mapping.shared) == 17
    assert COCO18.flip_permutation()[2] == 5 and COCO18.flip_permutation()[16] == 17


def test_area_resize_repeats_cells_at_an_integer_factor():
    maps = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    np.testing.assert_array_equal(area_resize(maps, 8, 12), maps.repeat(4, 0).repeat(4, 1))


def test_area_resize_is_tensorflows_at_any_factor():
    tf = pytest.importorskip("tensorflow")
    maps = np.random.default_rng(0).random((7, 9, 3)).astype(np.float32)
    theirs = tf.image.resize(maps[None], (17, 20), method="area").numpy()[0]
    np.testing.assert_allclose(area_resize(maps, 17, 20), theirs, atol=1e-5)


# ------------------------------------------------------------------- synthetic people

SIZE = 30  # model-output cells; upsampled x4 = 120
PERSON = {"nose": (8.3, 4.6), "neck": (8.3, 8.2), "right_shoulder": (5.2, 9.1), "left_shoulder": (11.3, 9.3),
          "right_hip": (6.2, 16.3), "left_hip": (10.4, 16.2)}
LIMBS = [("neck", "right_shoulder"), ("neck", "left_shoulder"), ("neck", "right_hip"), ("neck", "left_hip"), ("neck", "nose")]


def synthetic(people, weak=(), strength=1.0):
    """Heatmaps (Gaussian blobs, sigma 1 cell) and PAFs (unit vectors within 1 cell of each limb).

    `weak` lists (person, limb) whose PAF is scaled down to 0.03 (below THRESH_VECTOR_SCORE).
    """
    heat = np.zeros((SIZE, SIZE, 19), np.float32)
    paf = np.zeros((SIZE, SIZE, 38), np.float32)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    for p, parts in enumerate(people):
        for name, (x, y) in parts.items():
            k = COCO18.index(name)
            heat[:, :, k] = np.maximum(heat[:, :, k], np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 2.0))
        for a, b in LIMBS:
            if a not in parts or b not in parts:
                continue
            ia, ib = COCO18.index(a), COCO18.index(b)
            limb = LAYOUT.limbs.index((ia, ib))
            cx, cy = LAYOUT.paf_channels[limb]
            (ax, ay), (bx, by) = parts[a], parts[b]
            length = math.hypot(bx - ax, by - ay)
            ux, uy = (bx - ax) / length, (by - ay) / length
            along = (xs - ax) * ux + (ys - ay) * uy
            across = np.abs((xs - ax) * uy - (ys - ay) * ux)
            on = (along >= -1) & (along <= length + 1) & (across <= 1.0)
            value = 0.03 if (p, (a, b)) in weak else strength
            paf[:, :, cx][on] = ux * value
            paf[:, :, cy][on] = uy * value
    heat[:, :, 18] = np.clip(1 - heat[:, :, :18].max(axis=2), 0, 1)
    return heat, paf


def shifted(parts, dx, dy=0.0):
    return {k: (x + dx, y + dy) for k, (x, y) in parts.items()}


def expected_cell(x):
    return 4 * x + 1.5  # a model cell's centre in the x4 upsampled map


def assert_person_at(person, parts, tol_cells=1.0):
    """Every part of `parts` found within `tol_cells` model cells, no other part."""
    found = {COCO18.names[k] for k in np.nonzero(person.present)[0]}
    assert found == set(parts), (found, set(parts))
    for name, (x, y) in parts.items():
        k = COCO18.index(name)
        px, py = person.keypoints[k, 0] * SIZE * 4, person.keypoints[k, 1] * SIZE * 4
        assert abs(px - expected_cell(x)) <= 4 * tol_cells and abs(py - expected_cell(y)) <= 4 * tol_cells, (name, px, py, x, y)


def test_two_people_are_found_with_their_parts_in_place():
    people = [PERSON, shifted(PERSON, 14.0, 3.0)]
    found = decode_people(*synthetic(people))
    assert len(found) == 2
    found.sort(key=lambda p: p.keypoints[1, 0])  # by the neck's x
    for person, truth in zip(found, people):
        assert_person_at(person, truth)
        assert person.score > PafSettings().min_score
        assert 0.9 < person.keypoints[1, 2] <= 1.0  # a part's score is the heatmap at its peak


def test_input_pixels_are_fractions_times_the_input_size():
    heat, paf = synthetic([PERSON])
    norm = decode_people(heat, paf)[0]
    pix = decode_people(heat, paf, input_size=(240, 480))[0]
    np.testing.assert_allclose(pix.keypoints[:, 0], norm.keypoints[:, 0] * 480, rtol=1e-6)
    np.testing.assert_allclose(pix.keypoints[:, 1], norm.keypoints[:, 1] * 240, rtol=1e-6)


def test_a_limb_with_a_weak_paf_is_rejected():
    people = [PERSON, shifted(PERSON, 14.0, 3.0)]
    found = decode_people(*synthetic(people, weak={(1, ("neck", "right_hip"))}))
    assert len(found) == 2
    found.sort(key=lambda p: p.keypoints[1, 0])
    assert_person_at(found[0], people[0])
    rest = {k: v for k, v in people[1].items() if k != "right_hip"}
    assert_person_at(found[1], rest)  # the right hip's blob is there but nothing joins it


def test_a_paf_across_the_limb_is_rejected():
    """A PAF pointing across the limb (a dot product of 0) joins nothing."""
    heat, paf = synthetic([PERSON])
    limb = LAYOUT.limbs.index((COCO18.index("neck"), COCO18.index("left_hip")))
    cx, cy = LAYOUT.paf_channels[limb]
    paf[:, :, cx], paf[:, :, cy] = paf[:, :, cy].copy(), -paf[:, :, cx].copy()  # rotated 90 degrees
    (person,) = decode_people(heat, paf)
    assert not person.present[COCO18.index("left_hip")] and person.present[COCO18.index("right_hip")]


def test_too_few_parts_is_nobody_and_nothing_is_nobody():
    three = {k: PERSON[k] for k in ("neck", "right_shoulder", "left_shoulder")}
    assert decode_people(*synthetic([three])) == []
    assert len(decode_people(*synthetic([three]), PafSettings(min_parts=3))) == 1
    assert decode_people(np.zeros((20, 24, 19), np.float32), np.zeros((20, 24, 38), np.float32)) == []


def test_wrong_channel_counts_are_clear_errors():
    with pytest.raises(InputError, match="57 output channels"):
        split_output(np.zeros((1, 10, 10, 56), np.float32))
    with pytest.raises(InputError, match="38 PAF channels"):
        decode_people(np.zeros((10, 10, 19), np.float32), np.zeros((10, 10, 36), np.float32))


# ------------------------------------------------------------------- the release on real photos


@pytest.fixture(scope="module")
def release_outputs():
    """{file name: (model output [46, 54, 57], annotations, (height, width))} for the 4 photos."""
    tf = pytest.importorskip("tensorflow")
    from PIL import Image

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(THIN_PB.read_bytes())
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph, name=""), [])
    run = wrapped.prune("image:0", "Openpose/concat_stage7:0")
    coco = json.loads((REAL / "test_coco.json").read_text())
    out = {}
    for image in coco["images"]:
        rgb = Image.open(REAL / image["file_name"]).convert("RGB").resize(INPUT_HW[::-1], Image.BICUBIC)
        bgr = np.asarray(rgb, np.float32)[None, :, :, ::-1].copy()  # the release takes BGR 0..255
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        out[image["file_name"]] = (run(tf.constant(bgr)).numpy()[0], anns, (image["height"], image["width"]), coco)
    return out



def _oks_like_distance(person, ann, size, names17):
    """Mean distance (/ sqrt(box area)) over the annotated visible joints the person has."""
    h, w = size
    kps = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)
    d = []
    for j, name in enumerate(names17):
        k = COCO18.index(name)
        if kps[j, 2] > 0 and person.present[k]:
            d.append(math.hypot(person.keypoints[k, 0] * w - kps[j, 0], person.keypoints[k, 1] * h - kps[j, 1]))
    if len(d) < 3:
        return math.inf
    return float(np.mean(d)) / math.sqrt(ann["bbox"][2] * ann["bbox"][3])


@needs_release
def test_the_release_finds_the_people_that_are_there(release_outputs):
    counts = {}
    for name, (output, anns, size, coco) in release_outputs.items():
        names17 = coco["categories"][0]["keypoints"]
        people = decode_people(*split_output(output))
        visible = [a for a in anns if a["num_keypoints"] > 0]
        counts[name] = (len(people), len(visible), len(anns))
        # each annotated person with keypoints is matched by its own decoded person, in place
        free = list(range(len(people)))
        for ann in sorted(visible, key=lambda a: -a["num_keypoints"]):
            dists = [(_oks_like_distance(people[i], ann, size, names17), i) for i in free]
            best, i = min(dists)
            assert best < 0.1, (name, ann["bbox"], best)
            free.remove(i)
    # measured: 1/1, 2/2 (3 annotated, one without keypoints), 4/4 (5 annotated), 5/5
    assert all(found == visible for found, visible, _ in counts.values()), counts
    assert sum(c[0] for c in counts.values()) == 12 and sum(c[2] for c in counts.values()) == 14


# --------------------------------------------- an independent implementation of the release's rules


def _release_estimator(output, upsample=4.0):
    """The estimator's TF graph: area up-sampling, the 25-tap smoother, 3x3 max-pool peaks."""
    import tensorflow as tf
    from scipy.stats import norm

    heat, paf = output[None, :, :, :19], output[None, :, :, 19:]
    size = (int(output.shape[0] * upsample), int(output.shape[1] * upsample))
    heat_up = tf.image.resize(heat, size, method="area")
    paf_up = tf.image.resize(paf, size, method="area")
    interval = (2 * 3.0 + 1.0) / 25
    edges = np.linspace(-3.0 - interval / 2.0, 3.0 + interval / 2.0, 26)
    bins = np.diff(norm.cdf(edges))
    kernel = np.sqrt(np.outer(bins, bins))
    kernel = (kernel / kernel.sum()).astype(np.float32)
    kernel = np.repeat(kernel.reshape(25, 25, 1, 1), 19, axis=2)
    smooth = tf.nn.depthwise_conv2d(heat_up, kernel, [1, 1, 1, 1], padding="SAME")
    pooled = tf.nn.max_pool2d(smooth, 3, 1, padding="SAME")
    peaks = tf.where(tf.equal(smooth, pooled), smooth, tf.zeros_like(smooth))
    return peaks.numpy()[0], heat_up.numpy()[0], paf_up.numpy()[0]


def _release_people(peaks, heat, paf):
    """pafprocess, step by step with plain loops; rows = 18 peak ids, score sum, part count."""
    heat_t, vec_t, vec_cnt, part_cnt, human_t, steps = 0.05, 0.05, 8, 4, 0.4, 10
    h1 = heat.shape[0]
    infos = [[] for _ in range(18)]
    line = []
    for part in range(18):
        for y in range(peaks.shape[0]):
            for x in np.nonzero(peaks[y, :, part] > heat_t)[0]:
                info = (int(x), y, float(heat[y, x, part]), len(line))
                infos[part].append(info)
                line.append(info)
    conn_all = []
    for (p1, p2), (c1, c2) in zip(LAYOUT.limbs, LAYOUT.paf_channels):
        cands = []
        for i, a in enumerate(infos[p1]):
            for j, b in enumerate(infos[p2]):
                vx, vy = b[0] - a[0], b[1] - a[1]
                n = math.sqrt(vx * vx + vy * vy)
                if n < 1e-12:
                    continue
                vx, vy = vx / n, vy / n
                total, count = 0.0, 0
                for s in range(steps):
                    lx = int(a[0] + s * (b[0] - a[0]) / steps + 0.5)
                    ly = int(a[1] + s * (b[1] - a[1]) / steps + 0.5)
                    dot = vx * paf[ly, lx, c1] + vy * paf[ly, lx, c2]
                    total += dot
                    if dot > vec_t:
                        count += 1
                crit2 = total / steps + min(0.0, 0.5 * h1 / n - 1.0)
                if count > vec_cnt and crit2 > 0:
                    cands.append((crit2, i, j))
        cands.sort(key=lambda c: c[0], reverse=True)
        conns = []
        for score, i, j in cands:
            if any(c[0] == i or c[1] == j for c in conns):
                continue
            conns.append((i, j, score, infos[p1][i][3], infos[p2][j][3]))
        conn_all.append(conns)
    rows = []
    for pair_id, (p1, p2) in enumerate(LAYOUT.limbs):
        for _, _, score, cid1, cid2 in conn_all[pair_id]:
            found = [r for r in rows if r[p1] == cid1 or r[p2] == cid2]
            if len(found) == 1:
                r = found[0]
                if r[p2] != cid2:
                    r[p2] = cid2
                    r[19] += 1
                    r[18] += line[cid2][2] + score
            elif len(found) == 2:
                r1, r2 = found
                if not any(r1[k] >= 0 and r2[k] >= 0 for k in range(18)):
                    for k in range(18):
                        r1[k] += r2[k] + 1
                    r1[19] += r2[19]
                    r1[18] += r2[18] + score
                    rows.remove(r2)
                else:
                    r1[p2] = cid2
                    r1[19] += 1
                    r1[18] += line[cid2][2] + score
            elif not found and pair_id < 17:
                r = [-1] * 20
                r[p1], r[p2] = cid1, cid2
                r[19] = 2
                r[18] = line[cid1][2] + line[cid2][2] + score
                rows.append(r)
    rows = [r for r in rows if not (r[19] < part_cnt or r[18] / r[19] < human_t)]
    return [({k: line[int(r[k])][:2] for k in range(18) if r[k] >= 0}, r[18] / r[19]) for r in rows]


@needs_release
def test_the_module_agrees_with_a_plain_implementation_of_the_release(release_outputs):
    for name, (output, _, _, _) in release_outputs.items():
        peaks, heat, paf = _release_estimator(output)
        reference = _release_people(peaks, heat, paf)
        ours = decode_people(*split_output(output))
        gh, gw = heat.shape[:2]
        assert len(ours) == len(reference), name
        for person, (parts, score) in zip(ours, reference):  # the same people, in the same order
            assert set(np.nonzero(person.present)[0].tolist()) == set(parts), name
            for k, (x, y) in parts.items():
                assert abs(person.keypoints[k, 0] * gw - x) <= 1 and abs(person.keypoints[k, 1] * gh - y) <= 1, (name, k)
            assert person.score == pytest.approx(score, abs=1e-3), name
