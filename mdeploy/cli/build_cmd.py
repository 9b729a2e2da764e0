"""`mdeploy build`: recipe -> verified artifacts + manifest in build/<name>/."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mdeploy.cli import app
from mdeploy.cli.common import (
    emit_json,
    fit_lines,
    guarded,
    human_size,
    output_file,
    output_folder,
    stderr,
    stdout_width,
    table,
)
from mdeploy.cli.recipe_cmds import SET_HELP


@app.command()
def build(
    recipe: Path = typer.Argument(..., help="Recipe file.", show_default=False),
    only: list[str] = typer.Option([], "--only", metavar="STAGE", help="Run only this stage or group (model, export, tflite, verify, ...). Repeatable."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP, metavar="KEY=VALUE"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Re-run every selected stage even when cached."),
    out: Path = typer.Option(Path("build"), "--out", help="Folder that holds build/<name>/ folders."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    ci: bool | None = typer.Option(
        None, "--ci/--no-ci", help="CI mode (default: on when the CI variable is true): JSON summary on stdout, plain log lines on stderr."
    ),
    junit: Path | None = typer.Option(None, "--junit", help="Also write the gates as JUnit XML here (always in report/junit.xml)."),
    bundle: Path | None = typer.Option(None, "--bundle", help="Write artifacts + manifest + report into this .zip."),
) -> None:
    """Build every artifact the recipe asks for, verify each, and write the manifest and report.

    Exit 1 when a verification gate fails (artifacts, manifest and report are still written).
    """
    ci_mode = ci if ci is not None else os.environ.get("CI", "").lower() in ("1", "true", "yes")
    json_output = json_output or ci_mode

    def body() -> int:
        from mdeploy.build import build as run_build
        from mdeploy.cli.progress import build_progress
        from mdeploy.errors import MdeployError
        from mdeploy.recipe import load_recipe

        if bundle is not None and bundle.suffix != ".zip":
            from mdeploy.errors import InputError

            raise InputError(f"--bundle {bundle}: the bundle is a zip file; name it *.zip")
        output_folder(out, "--out")  # wrong kinds of path fail now, not after the build
        output_file(junit, "--junit")
        output_file(bundle, "--bundle")
        loaded = load_recipe(recipe, set_)
        with build_progress(ci_mode) as progress:
            result = run_build(loaded, out_root=out, use_cache=not no_cache, only=only or None, progress=progress)
        for pending in result.plan.pending:
            stderr(f"warning: {pending.render()}")
        extras = {"report": str(result.build_dir / "report" / "report.html")}
        if junit is not None:
            from mdeploy.fsutil import atomic_write_bytes

            atomic_write_bytes(junit, (result.build_dir / "report" / "junit.xml").read_bytes())
            extras["junit"] = str(junit)
        if bundle is not None:
            from mdeploy.report.bundle import write_bundle

            extras["bundle"] = str(write_bundle(result.build_dir, bundle))
        if json_output:
            emit_json(dict(summary_json(result), **extras))
        else:
            width = stdout_width()
            typer.echo(fit_lines(render_summary(result, width=width), width))
            for kind, path in extras.items():
                typer.echo(fit_lines(f"{kind}: {_rel(Path(path))}", width))
        try:
            result.raise_for_gates()
        except MdeployError as err:
            if not json_output:
                raise
            stderr(err.render())  # the summary on stdout already says ok: false; one JSON document only
            return err.exit_code
        return 0

    guarded(body, json_output=json_output)


def _parity_cell(gate) -> str:
    if gate is None:
        return "-"
    m = gate.metrics
    if gate.status == "not run":
        return "not run"
    if gate.status == "unverified":
        return f"unverified ({m.get('unverified', '').split(':')[0]})"
    if "runtime_error" in m:
        return "does not run"
    if not m.get("shape_ok", True):
        return f"shape {m['artifact_shape']} != {m['reference_shape']}"
    agree = "n/a" if m["agreement"] is None else f"{m['agreement'] * 100:.1f}%"
    cell = f"max_abs {m['max_abs']:.2g}, agree {agree}"
    ref = m.get("reference_kernels") or {}
    if "runtime_error" in ref:
        cell += "; ref kernels fail"
    elif ref.get("agreement") is not None and m["agreement"] is not None and abs(ref["agreement"] - m["agreement"]) >= 0.0005:
        cell += f" (ref kernels {ref['agreement'] * 100:.1f}%)"
    return cell


def _peak(disagreement: dict) -> str:
    """'0.27 (weak)': the reference heatmap's peak, and whether it was one clear peak (evaluate/decode.py)."""
    peak = disagreement.get("reference_peak")
    if peak is None:
        return "-"
    clear = disagreement.get("reference_clear")
    return f"{peak:.2f}" + ("" if clear is None else " (clear)" if clear else " (weak)")


def render_summary(result, width: int | None = None) -> str:
    """The build's tables and notes; with `width` (a terminal's) every table fits in it."""
    from mdeploy.build import describe_changes
    from mdeploy.evaluate.metrics import LABELS, unit

    parity = {g.artifact: g for g in result.gates if g.gate == "parity"}
    accuracy = {(g.artifact, g.split): g for g in result.gates if g.gate == "accuracy"}
    splits = [name for name, _, _ in result.recipe.val_splits()]
    headers = []
    for split in splits:
        ref = accuracy.get(("model", split))
        metric = (ref.metrics.get("metric") if ref else None) or "accuracy"
        headers.append(f"{split}: {LABELS.get(metric, metric)}")
    rows = []
    glue: dict[str, list[dict]] = {}
    for art in result.manifest["artifacts"]:
        if art["id"].startswith("glue/"):  # one row per app platform, not per source file
            glue.setdefault(art["id"].split("/")[1], []).append(art)
            continue
        p = parity.get(art["id"])
        if art["id"] == "model":
            cell, status = "reference", "ok"
        else:
            cell, status = _parity_cell(p), (p.status if p else "ok")
        cells = []
        for split in splits:
            a = accuracy.get((art["id"], split))
            cells.append(_accuracy_cell(a))
            if a is not None and a.status == "failed":
                status = "failed"
        rows.append([art["id"], art["path"], human_size(art["size"]), cell, *cells, status])
    for platform, files in glue.items():
        size = human_size(sum(f["size"] for f in files))
        rows.append([f"glue/{platform}", f"glue/{platform}/ ({len(files)} sources)", size, "-", *["-"] * len(splits), "ok"])
    # At a terminal's width the file column goes first (the artifact id names it; the report lists paths).
    lines = [table(["artifact", "file", "size", "parity", *headers, "status"], rows, width=width, drop=(1,))]
    if splits:
        lines.append(_splits_line(result, splits))
    note = (result.manifest.get("provenance") or {}).get("note")
    if note:
        lines.append(f"note: {note}")
    accuracy_failures = [g for g in result.gates if g.status == "failed" and g.gate == "accuracy"]
    if accuracy_failures:
        lines.append("")
        lines.append("accuracy problems:")
        lines.append(
            table(
                ["artifact", "split", "metric", "value", "reference", "drop", "limit"],
                [[g.artifact, g.split, LABELS.get(g.metrics.get("metric"), "-"), _fmt((g.metrics.get("metrics") or {}).get(g.metrics.get("metric"))),
                  _fmt(g.metrics.get("reference")), _fmt(g.metrics.get("drop")), _fmt(g.checks[0]["limit"])] for g in accuracy_failures],
                width=width,
            )
        )
        for g in accuracy_failures:
            changes = describe_changes(g.metrics.get("changed_joints"), unit(g.metrics.get("metric")))
            if changes:
                lines.append(f"{g.artifact} on {g.split}: {changes.removeprefix('; ')}")
    failing = [g for g in result.gates if g.status in ("failed", "warned") and g.gate == "parity"]
    if failing:
        lines.append("")
        lines.append("parity problems:")
        problem_rows = []
        for g in failing:
            for c in g.checks:
                if not c["ok"]:
                    problem_rows.append([g.artifact, c["check"], _fmt(c["value"]), _fmt(c["limit"]), c["detail"]])
        lines.append(table(["artifact", "check", "value", "limit", "detail"], problem_rows, width=width))
        dis = [(g.artifact, d) for g in failing for d in g.metrics.get("disagreements", [])]
        if dis:
            lines.append("")
            lines.append("keypoints whose argmax cell moved (first ones):")
            lines.append(
                table(
                    ["artifact", "sample", "keypoint", "reference (row, col)", "artifact (row, col)", "reference peak"],
                    [[a, d["sample"], d["keypoint"], _cell(d.get("reference_cell")), _cell(d.get("artifact_cell")), _peak(d)]
                     for a, d in dis[:12]],
                    width=width,
                )
            )
    lines += quantization_lines(result.manifest)
    for art in result.manifest["artifacts"]:
        command = (art.get("details") or {}).get("convert_command")
        if command:
            lines.append("")
            lines.append(f"{art['id']}: build the MACE library from this package with\n  {command}")
    state = {"unchanged": "up to date", "manifest": "manifest updated", "assembled": "written"}[result.written]
    lines.append("")
    lines.append(f"build {state}: {_rel(result.build_dir)}")
    lines += [app_line(update) for update in result.apps]
    lines += bench_lines(result, width)
    return "\n".join(lines)


def quantization_lines(manifest: dict) -> list[str]:
    """What each int8 artifact was calibrated on, and the layers the mixed-precision search kept in float."""
    out = []
    for art in manifest["artifacts"]:
        details = art.get("details") or {}
        cal = details.get("calibration")
        if cal:
            unlabelled = "unlabelled " if cal.get("source") == "images" else ""
            out.append(f"{art['id']}: calibrated on {cal['images']} {unlabelled}images of data.{cal['split']} ({cal['kind']}) "
                       f"and {cal['photos']} photos")
            if cal.get("warning"):
                out.append(f"  warning: {cal['warning']}")
        mixed = details.get("mixed_precision") or {}
        if mixed.get("needed"):
            layers = mixed.get("float_layers") or []
            if mixed.get("passed"):
                if mixed.get("groups"):
                    groups = [(g["group"].rsplit("/", 1)[-1] or "(all)", g["output_error"]) for g in mixed["groups"]]
                    kept = ", ".join(f"{name} (output error {error:g} with it in float)" for name, error in groups)
                else:
                    kept = ", ".join(f"{layer['tensor']} ({layer['channel_error']:g})" for layer in layers)
                out.append(f"  {len(layers)} layer(s) kept in float to pass verify.accuracy ({mixed.get('order')} order): {kept}")
            else:
                out.append(f"  mixed precision: no {mixed.get('limit')} layers in float passed verify.accuracy; the int8 file is plain "
                           "(export.tflite.mixed_precision: a higher max_float_layers, or enabled: false to skip the search)")
    return [""] + out if out else []


def bench_lines(result, width: int | None = None) -> list[str]:
    if result.bench_error is not None:
        return [f"bench: not run ({result.bench_error.message})"]
    if result.bench_skipped:
        return [f"bench: not run ({result.bench_skipped})"]
    if result.bench is None:
        return []
    gates = [g for g in result.gates if g.gate == "bench"]
    if not gates:
        return ["bench: nothing measured"]
    out = [""]
    rows = []
    for g in gates:
        limit = g.checks[0]["limit"] if g.checks else None
        rows.append([g.artifact, f"{g.metrics['median_ms']:.2f}", "-" if limit is None else f"{limit:g}", g.status])
    out.append(table(["benchmark (artifact@device)", "median ms", "limit ms", "status"], rows, width=width))
    if result.bench["cached"]:
        out.append(f"bench: results reused for {', '.join(result.bench['cached'])} (same artifacts and settings; --no-cache re-measures)")
    for o in result.bench_failures:
        out.append(f"bench on {o.target.name} failed: {o.error or o.document['failures'][0]['error']}")
    return out


def app_line(update) -> str:
    """One line per app the build feeds: what changed in its project."""
    where = f"{update.platform} app {_rel(update.dest)}"
    if update.skipped:
        return f"{where}: not updated ({update.skipped})"
    r = update.report
    if not r.changed:
        return f"{where}: up to date ({update.artifact_id})"
    parts = [f"{len(r.written)} file{'s' if len(r.written) != 1 else ''} written"]
    if r.removed:
        parts.append(f"{len(r.removed)} old model{'s' if len(r.removed) != 1 else ''} removed")
    if r.kept:
        parts.append(f"{len(r.kept)} of your edited files kept")
    return f"{where}: {', '.join(parts)} ({update.artifact_id} -> {update.model})"


def _accuracy_cell(gate) -> str:
    """The split's metric of one artifact, with its change against the canonical model."""
    if gate is None or gate.status == "not run":
        return "-"
    if gate.status == "unverified":
        return "unverified"
    m = gate.metrics
    if "runtime_error" in m:
        return "does not run"
    value = ((m.get("crops") or m).get("metrics") or {}).get(m.get("metric"))  # the mean over crops where scored so
    if value is None:
        return "n/a"
    from mdeploy.evaluate.metrics import LOWER_IS_BETTER, unit

    metric = m.get("metric")
    drop = m.get("drop")  # positive = worse; the cell shows the change of the value itself
    change = None if drop is None else (drop if metric in LOWER_IS_BETTER else 0.0 - drop)
    se = m.get("drop_se")  # the change is the mean over crops of each person (evaluate/crops.py)
    cell = f"{value:.1f}{unit(metric)}" + ("" if change is None else f" ({change:+.1f}{'' if se is None else f' +-{se:.1f}'})")
    ref = ((m.get("reference_kernels") or {}).get("metrics") or {}).get(metric)
    original = (m.get("metrics") or {}).get(metric)  # the reference kernels score the original crops
    if ref is not None and original is not None and abs(ref - original) >= 0.05:
        cell += f" ref {ref:.1f}{unit(metric)}"  # TFLite's reference kernels disagree with XNNPACK
    return cell


def _splits_line(result, splits: list[str]) -> str:
    """What each accuracy column was measured on: kind and size of the split."""
    parts = []
    for split in splits:
        gate = next((g for g in result.gates if g.gate == "accuracy" and g.artifact == "model" and g.split == split), None)
        info = (gate.metrics.get("split") if gate else None) or {}
        if info:
            crops = (gate.metrics.get("crops") or {}).get("copies")
            parts.append(f"{split} = {info['kind']}, {info['people']} people in {info['images']} images"
                         + (f", means over {crops} crops of each" if crops else ""))
        else:
            parts.append(f"{split} = not measured")
    return "accuracy on: " + "; ".join(parts) + " (change against the canonical model in brackets)"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _rel(path: Path) -> str:
    from mdeploy.recipe.source import display_path

    return display_path(path)


def summary_json(result) -> dict:
    stages = []
    for stage in result.plan.stages:
        record = result.outcome.records.get(stage.name)
        stages.append(
            {
                "name": stage.name,
                "status": record.status if record else "skipped",
                "seconds": round(record.seconds, 3) if record and record.status == "ran" else 0.0,
            }
        )
    return {
        "ok": not result.failed_gates and not result.bench_failures and result.bench_error is None,
        "build_dir": str(result.build_dir),
        "written": result.written,
        "stages": stages,
        "artifacts": result.manifest["artifacts"],
        "gates": [g.to_json() for g in result.gates],
        "not_built": [p.to_json() for p in result.plan.pending],
        "apps": [a.to_json() for a in result.apps],
        "bench": None if result.bench is None else {
            "measured": result.bench["measured"],
            "cached": result.bench["cached"],
            "checks": result.bench["checks"],
            "failures": [{"device": o.target.name, "error": o.error, "failures": (o.document or {}).get("failures", [])}
                         for o in result.bench_failures],
        },
        "bench_skipped": result.bench_skipped,
        "bench_error": result.bench_error.to_json() if result.bench_error is not None else None,
    }


def _cell(value) -> str:
    """An output cell (row, col) of a disagreement, or what stands in for it ("not found")."""
    return str(tuple(value)) if isinstance(value, (list, tuple)) else str(value or "-")
