"""3-D skeletons: what each artifact of a 3-D model decodes, drawn in 3-D side by side.

For a family whose outputs carry depth, `Family.skeleton3d` gives each sample's person as
joints in mm relative to the root joint. The report then adds, for every overlay sample, one
small 3-D plot per artifact (the canonical model first, from the same run of each artifact
that draws its overlay tile): bones coloured by side as in the overlays (left blue, right
red, centre green), joints and frame in the artifact's colour of every plot, and the
reference skeleton (the canonical model's) in light grey behind the others, so a
quantized artifact's drift shows as grey beside colour. Every tile of a sample shares one
cube of axes centred on the root, so the eye compares like with like. The caption states the
numbers: the cube's half-width and each artifact's mean distance from the reference's
joints (root-relative, the root itself left out). A 2-D family gives no skeleton and the
report has no 3-D tiles. An artifact that cannot run here gets a greyed tile (the
reference's skeleton in grey) and the reason beside it, as its overlay tile does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TILE_INCHES = 2.56  # at 100 dpi: 256 px, the overlay tiles' height
FOLDER = "skeletons"  # overlays/skeletons/<sample nn>/<artifact nn>.png, beside overlays/tiles/
MIN_HALF_MM = 100.0  # the smallest cube drawn: a collapsed skeleton stays a dot, not a zoomed-in blur
GREY = "#c4c8cd"
VIEW = {"elev": 12.0, "azim": -62.0}  # a little from above and to the side: depth reads as depth


def mean_distance(reference: np.ndarray, skeleton: np.ndarray, root: int | None) -> float:
    """Mean distance in mm of `skeleton`'s joints from `reference`'s (both root-relative; the root left out)."""
    keep = np.ones(len(reference), bool)
    if root is not None and len(reference) > 1:
        keep[root] = False
    return float(np.linalg.norm(np.asarray(skeleton, np.float64)[keep] - np.asarray(reference, np.float64)[keep], axis=1).mean())


def _number(value: float) -> float | None:
    """A coordinate for report.json: 2 decimals, None where it is not finite (JSON has no NaN)."""
    return round(float(value), 2) if np.isfinite(value) else None


def mm(value: float) -> str:
    """A distance in mm as the caption and tile labels write it (three significant digits)."""
    return f"{value:.3g}"


def render(out_dir: Path, number: int, sample: str, rows: list[tuple[str, np.ndarray | None, str | None]], keypoints,
           colours: dict[str, str]) -> dict | None:
    """One sample's 3-D tiles, one per (artifact id, skeleton or None, why it did not run);
    None when no artifact gave a skeleton (a 2-D family, or nothing could run here)."""
    drawn = [(artifact, skeleton) for artifact, skeleton, _ in rows if skeleton is not None]
    if not drawn:
        return None
    reference_id, reference = drawn[0]
    root = keypoints.root_index
    finite = np.concatenate([np.abs(s[np.isfinite(s)]) for _, s in drawn] + [np.zeros(1)])
    half = float(max(MIN_HALF_MM, np.ceil(finite.max() * 1.1 / 50.0) * 50.0))  # a round number of mm
    folder = out_dir / FOLDER / f"{number:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    tiles = []
    for index, (artifact, skeleton, why) in enumerate(rows):
        file = folder / f"{index:02d}.png"
        colour = colours.get(artifact, "#1f77b4")
        distance = None if skeleton is None or artifact == reference_id else mean_distance(reference, skeleton, root)
        broken = distance is not None and not np.isfinite(distance)  # NaN or inf joints: said, not drawn as a number
        draw_tile(file, skeleton, None if artifact == reference_id else reference, keypoints, colour, half)
        tiles.append({"artifact": artifact, "image": file.relative_to(out_dir).as_posix(), "why": why, "colour": colour,
                      "mean_mm": None if distance is None or broken else round(distance, 4), "finite": not broken,
                      "joints_mm": None if skeleton is None else [[_number(v) for v in joint] for joint in skeleton]})
    return {"sample": sample, "reference": reference_id, "half_mm": half, "root": keypoints.root, "tiles": tiles,
            "unavailable": {t["artifact"]: t["why"] for t in tiles if t["why"]}}


def caption(entry: dict) -> str:
    """The text under a sample's 3-D tiles: what the axes and colours show, and each artifact's distance."""
    others = [t for t in entry["tiles"] if t["mean_mm"] is not None]
    text = (f"{entry['sample']}: the 3-D skeleton each artifact decodes, in mm relative to the {entry['root'] or 'root'} "
            f"joint (every cube spans ±{entry['half_mm']:g} mm; x to the right, y up, depth away from the camera); "
            "bones coloured by side as in the overlays, the frame and joints by artifact, the reference in grey behind")
    if others:
        text += (f"; mean joint distance from {entry['reference']}'s skeleton (the root left out): "
                 + ", ".join(f"{t['artifact']} {mm(t['mean_mm'])} mm" for t in others))
    broken = [t["artifact"] for t in entry["tiles"] if not t.get("finite", True)]
    if broken:
        text += f"; joints not finite: {', '.join(broken)}"
    if entry["unavailable"]:
        text += f" ({len(entry['unavailable'])} not run here)"
    return text + "."


def draw_tile(path: Path, skeleton: np.ndarray | None, reference: np.ndarray | None, keypoints, colour: str,
              half: float) -> Path:
    """A PNG of one artifact's skeleton (None: greyed, only the reference) in the shared cube."""
    import matplotlib

    from mdeploy.report.plots import STYLE, _figure

    with matplotlib.rc_context(STYLE):
        fig = _figure(TILE_INCHES, TILE_INCHES)
        greyed = skeleton is None
        fig.patch.set_facecolor("#eceef1" if greyed else "white")
        fig.patch.set_edgecolor(GREY if greyed else colour)
        fig.patch.set_linewidth(4)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0), projection="3d")
        ax.set_facecolor("none")
        if reference is not None:  # the canonical model's skeleton: behind the artifact's, or alone when it did not run
            _bones(ax, reference, keypoints, lambda _a, _b: GREY, width=2.5 if greyed else 3.0, alpha=1.0 if greyed else 0.8)
        if not greyed:
            _bones(ax, skeleton, keypoints, lambda a, b: _side(keypoints, a, b), width=2.0, alpha=1.0)
            x, y, z = _axes_order(skeleton)
            ax.scatter(x, y, z, s=9, color=colour, depthshade=False)
        for set_lim in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
            set_lim(-half, half)
        ax.set_box_aspect((1, 1, 1), zoom=1.08)
        ax.view_init(**VIEW)
        ticks = [-half, 0.0, half]
        ax.set_xticks(ticks), ax.set_yticks(ticks), ax.set_zticks(ticks)
        ax.set_xticklabels([]), ax.set_yticklabels([]), ax.set_zticklabels([])  # the cube's size is in the caption
        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
            axis.set_pane_color((0.96, 0.965, 0.975, 1.0) if not greyed else (0.9, 0.9, 0.91, 1.0))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", metadata={"Software": None}, facecolor=fig.get_facecolor(),
                    edgecolor=fig.get_edgecolor())
    return path


def _axes_order(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plot axes from (x right, y down, z away): x across, depth into the picture, up as up."""
    j = np.asarray(joints, np.float64)
    return j[:, 0], j[:, 2], -j[:, 1]


def _side(keypoints, a: int, b: int) -> str:
    from mdeploy.predict import CENTRE, LEFT, RIGHT

    def of(i: int):
        name = keypoints.names[i]
        return LEFT if name.startswith("left") else RIGHT if name.startswith("right") else CENTRE

    rgb = of(b) if of(a) == CENTRE else of(a)  # as the overlays colour a bone
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _bones(ax, joints: np.ndarray, keypoints, colour_of, *, width: float, alpha: float) -> None:
    x, y, z = _axes_order(joints)
    for a, b in keypoints.skeleton:
        if np.isfinite([x[a], y[a], z[a], x[b], y[b], z[b]]).all():
            ax.plot([x[a], x[b]], [y[a], y[b]], [z[a], z[b]], color=colour_of(a, b), linewidth=width, alpha=alpha,
                    solid_capstyle="round")
