"""report/: report.json, plots, overlays (and 3-D skeletons) and one self-contained report.html per build.

`write_report` is what `mdeploy build` runs after its stages (and `mdeploy report` on demand).
The HTML embeds every image as a data URI and loads nothing, so it opens offline, attached
to a CI run or mailed. It is rendered with autoescaping: recipe text cannot inject markup.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

from mdeploy.fsutil import atomic_write_text, recover_dir, swap_dir, unique_sibling, write_json
from mdeploy.limits import NotRegular, open_regular, read_build_file
from mdeploy.report import collect, plots, skeletons

REPORT_DIR = "report"


def _environment():
    from mdeploy.codegen.render import sandboxed

    env = sandboxed(html=True)
    from mdeploy.units import human_size

    env.filters["size"] = human_size  # the CLI's units, exact bytes on hover (the template)
    env.filters["signed_size"] = lambda n: human_size(n, signed=True)
    return env


def _data_uri(path: Path) -> str:
    kind = "jpeg" if path.suffix == ".jpg" else "png"  # overlay tiles are JPEG, plots PNG
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _png_width(path: Path) -> int:
    """A PNG's width in pixels, from its header (IHDR follows the 8-byte signature)."""
    with open(path, "rb") as f:
        head = f.read(24)
    return int.from_bytes(head[16:20], "big") if head[12:16] == b"IHDR" else 0


def render_html(report: dict, folder: Path) -> str:
    """report.html for `report`, its plots, overlay and 3-D skeleton tiles read from `folder` and embedded.

    Plots come in `plots.PLOTS` order, each with the caption its own numbers give; the
    narrow ones (up to 700 px) pair up side by side where the page is wide enough. The 3-D
    skeletons' captions are written from the numbers in report.json (skeletons.caption)."""
    drawn = report.get("plots", {})
    figures = [{"key": key, "uri": _data_uri(folder / drawn[key]), "caption": plots.caption(key, report),
                "wide": _png_width(folder / drawn[key]) > 700} for key in plots.PLOTS if key in drawn]
    overlays = [_embedded(o, folder) for o in report.get("overlays", [])]
    drawn3d = [{**_embedded(s, folder), "caption": skeletons.caption(s)} for s in report.get("skeletons") or []]
    return _environment().get_template("report/report.html.j2").render(r=report, figures=figures, overlays=overlays,
                                                                        skeletons=drawn3d)


def _embedded(entry: dict, folder: Path) -> dict:
    """An overlay or 3-D skeleton sample with each tile's image as a data URI (tiles live under overlays/)."""
    return {**entry, "tiles": [{**t, "uri": _data_uri(folder / "overlays" / t["image"])} for t in entry.get("tiles", [])]}


def previous_summary(build_dir: Path) -> list:
    path = build_dir / REPORT_DIR / "report.json"
    try:
        return json.loads(read_build_file(path)).get("recipe", {}).get("summary") or []
    except (OSError, ValueError, AttributeError):
        return []


def is_current(build_dir: Path, summary: list | None = None) -> bool:
    """The report already describes exactly this build (same inputs, same mdeploy)."""
    path = build_dir / REPORT_DIR / "report.json"
    try:
        old = json.loads(read_build_file(path))
    except (OSError, ValueError):
        return False
    if not isinstance(old, dict):
        return False
    fresh = collect.collect(build_dir, summary if summary is not None else previous_summary(build_dir))
    return old.get("inputs") == fresh["inputs"] and old.get("report_by") == fresh["report_by"] and (build_dir / REPORT_DIR / "report.html").is_file()


def write_report(build_dir: Path, *, summary: list | None = None, extra_images: list[Path] | None = None,
                 compare_with: Path | None = None) -> dict:
    """Assemble report/ in a temporary folder and swap it in whole; returns the report document."""
    build_dir = Path(build_dir)
    summary = summary if summary is not None else previous_summary(build_dir)
    report = collect.collect(build_dir, summary)
    recover_dir(build_dir / REPORT_DIR)  # what a killed run left: a half-written or swapped-aside report
    staging = unique_sibling(build_dir / REPORT_DIR, "tmp")
    try:
        staging.mkdir(parents=True)
        report["plots"] = {key: f"plots/{key}.png" for key in plots.PLOTS
                           if plots.draw(key, report, staging / "plots" / f"{key}.png") is not None}
        report["overlays"], report["skeletons"] = _overlays(build_dir, staging, extra_images, plots.artifact_colours(report))
        if compare_with is not None:
            from mdeploy.report.compare import compare, differences

            other = collect.collect(Path(compare_with))
            report["compare"] = compare(report, other, str(compare_with))
            report["compare"]["different"] = differences(build_dir, Path(compare_with), report, other)
        write_json(staging / "report.json", report)
        atomic_write_text(staging / "report.html", render_html(report, staging))
        from mdeploy.report.junit import junit_xml

        atomic_write_text(staging / "junit.xml", junit_xml(report))
        swap_dir(staging, build_dir / REPORT_DIR)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _overlays(build_dir: Path, staging: Path, extra_images: list[Path] | None,
              colours: dict[str, str] | None = None) -> tuple[list[dict], list[dict]]:
    """Overlay tiles and 3-D skeleton tiles (a family with depth only); the extra source
    images are kept in overlays/sources/ for regeneration.

    Only regular files are copied: a dataset's image may be a symlink to one, but the copies
    kept in overlays/sources/ are mdeploy's own, so a symlink there (or a FIFO, a device) is
    skipped, never followed or read."""
    from mdeploy.report import overlays

    sources = staging / "overlays" / "sources"
    kept = []
    old_sources = build_dir / REPORT_DIR / "overlays" / "sources"
    from_build = not extra_images
    candidates = list(extra_images or []) or (sorted(old_sources.iterdir()) if _plain_dirs(build_dir, old_sources) else [])
    for path in candidates:
        target = sources / Path(path).name
        try:
            with open_regular(path, "overlay image", follow_symlinks=not from_build) as src:
                sources.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        except (NotRegular, OSError):
            target.unlink(missing_ok=True)
            continue
        kept.append(target)
    if not (build_dir / "model" / "spec.json").is_file():
        return [], []
    return overlays.render(build_dir, staging / "overlays", overlays.sample_images(kept), colours)


def _plain_dirs(root: Path, folder: Path) -> bool:
    """`folder` and every folder between `root` and it are folders, not symlinks."""
    for part in [folder, *folder.relative_to(root).parents][:-1]:
        path = part if part.is_absolute() else root / part
        if path.is_symlink() or not path.is_dir():
            return False
    return True
