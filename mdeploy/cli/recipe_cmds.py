"""Recipe commands: `validate`, `schema`, `init`."""

from __future__ import annotations

from pathlib import Path

import typer

from mdeploy.cli import app
from mdeploy.cli.common import emit_json, guarded, output_file, stderr

SET_HELP = "Override a recipe key, e.g. --set train.epochs=2 (value is YAML). Repeatable."


@app.command()
def validate(
    recipe: Path = typer.Argument(..., help="Recipe file.", show_default=False),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP, metavar="KEY=VALUE"),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check a recipe; nothing is built. Exit 0 when valid, 2 with every problem found."""

    def body() -> int:
        from mdeploy.build import pending_sections
        from mdeploy.errors import RecipeError
        from mdeploy.recipe import load_recipe
        from mdeploy.recipe.summary import summarize

        try:
            loaded = load_recipe(recipe, set_)
        except RecipeError as err:
            if json_output:
                emit_json({"ok": False, "issues": [i.to_json() for i in err.issues]})
                stderr(err.render())
                return err.exit_code
            raise
        from mdeploy.importers.tflite import check_exports

        check_exports(loaded)  # what `build` would refuse at planning
        pending = pending_sections(loaded)
        rows = summarize(loaded)
        missing = missing_model_files(loaded)
        for warning in missing:  # a warning: the machine that builds may hold the file
            where = f"{warning['where']}: " if warning["where"] else ""
            stderr(f"warning: {where}{warning['message']}")
            stderr(f"hint: {warning['hint']}")
        if json_output:
            emit_json({"ok": True, "recipe": str(recipe), "summary": dict(rows), "not_built": [p.to_json() for p in pending],
                       "warnings": missing})
            return 0
        typer.echo(f"ok: {recipe}")
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            typer.echo(f"  {key.ljust(width)}  {value}")
        if pending:
            typer.echo("validated but not built by this version of mdeploy:")
            for p in pending:
                typer.echo(f"  {p.render()}")
        return 0

    guarded(body, json_output=json_output)


def missing_model_files(loaded) -> list[dict]:
    """The model files a recipe names by path (model.import.path, model.init.path) that are not there."""
    from mdeploy.recipe.source import display_path

    out = []
    for key, what, kind in (("import", "model file", None), ("init", "release weights", "a TF1 frozen graph (.pb)")):
        section = getattr(loaded.model, "import_" if key == "import" else key)
        if section is None or section.path is None or Path(section.path).exists():
            continue
        kind = kind or f"a {section.format} file"
        checksum = f" with sha256 {section.sha256}" if section.sha256 else ""
        out.append({
            "key": f"model.{key}.path",
            "where": loaded.where("model", key, "path"),
            "message": f"{what} not found: {display_path(Path(section.path))} (a build on this machine would stop here)",
            "hint": f"model.{key}.path names {kind}{checksum}: copy it there, point the recipe at your copy "
                    f"(--set model.{key}.path=FILE), or give model.{key}.url and its sha256 to download it once into the cache",
        })
    return out


@app.command()
def schema(
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print the JSON Schema of recipes (for editor completion and CI checks)."""

    def body() -> int:
        import json

        from mdeploy.fsutil import atomic_write_text
        from mdeploy.recipe.schema import Recipe

        data = Recipe.model_json_schema(by_alias=True, mode="validation")
        data["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        data["title"] = "mdeploy recipe"
        text = json.dumps(data, indent=2) + "\n"
        if out is None:
            typer.echo(text, nl=False)
        else:
            atomic_write_text(output_file(out, "--out"), text)
            stderr(f"wrote {out}")
        return 0

    guarded(body)


_FORMATS = {".keras": "keras", ".pb": "frozen_pb", ".tflite": "tflite"}


@app.command()
def init(
    name: str = typer.Argument(..., help="Recipe name (letters, digits, '-', '_').", show_default=False),
    import_path: Path = typer.Option(
        ..., "--import", help="Model to import: .keras file, SavedModel folder, frozen .pb or .tflite."
    ),
    input_name: str | None = typer.Option(None, "--input", metavar="NAME", help="Input tensor name (default: the model's image input)."),
    output_name: str | None = typer.Option(
        None, "--output", metavar="NAME", help="Output tensor name (default: the deepest heatmap-like output, as listed)."
    ),
    channels: str | None = typer.Option(None, metavar="rgb|bgr", help="Channel order the model expects: rgb or bgr (default: probed)."),
    value_range: str | None = typer.Option(
        None, "--range", metavar="LOW,HIGH", help="Values of pixel 0 and 255, e.g. 0,255 or -1,1 (default: probed)."
    ),
    keypoints: str | None = typer.Option(None, metavar="SET", help="Keypoint set of the output channels (default: from their count)."),
    size: str | None = typer.Option(None, metavar="HEIGHT,WIDTH", help="Input HEIGHT,WIDTH, for models that accept any size."),
    probe_images: list[Path] = typer.Option(
        [], "--probe-images", metavar="PATH", help="More photos of people (files or folders) for the preprocessing probe. Repeatable."
    ),
    dest: Path = typer.Option(Path("."), help="Folder to write NAME.yaml into."),
    force: bool = typer.Option(False, help="Overwrite an existing recipe file."),
    json_output: bool = typer.Option(False, "--json", help="Print what was found and chosen as JSON."),
) -> None:
    """Write a starter recipe that imports a model.

    Lists the model's inputs and candidate outputs and proposes the pair to import.
    Without --channels/--range, it probes the preprocessing on photos of people.
    """

    def body() -> int:
        import os

        from mdeploy.codegen.render import render, write_inside
        from mdeploy.errors import InputError
        from mdeploy.importers.starter import inspect_model
        from mdeploy.recipe.loader import validate_tree
        from mdeploy.recipe.source import parse_yaml

        if import_path.is_dir():
            fmt = "saved_model"
        elif import_path.suffix in _FORMATS:
            fmt = _FORMATS[import_path.suffix]
        else:
            raise InputError(f"--import {import_path}: expected a .keras file, a SavedModel folder, a frozen .pb or a .tflite")
        if not import_path.exists():
            raise InputError(f"--import {import_path}: no such file or folder")
        if channels is not None and channels not in ("rgb", "bgr"):
            raise InputError(f"--channels expects rgb or bgr, got {channels!r}")
        lo_hi = _pair(value_range, "--range", float) if value_range is not None else None
        fed = _pair(size, "--size", int) if size is not None else None
        target = dest / f"{name}.yaml"
        if target.exists() and not force:
            raise InputError(f"{target} already exists", hint="use --force to overwrite it, or pick another name")
        rel = Path(os.path.relpath(import_path.absolute(), dest.absolute())).as_posix()

        def text_for(inputs, outputs, size_, channels_, range_, keypoints_, note) -> str:
            return render(
                "recipes/import.yaml.j2", name=name, filename=target.name, format=fmt, path=rel, inputs=inputs,
                outputs=outputs, size=size_, channels=channels_, range=[f"{v:g}" for v in range_],
                keypoints=keypoints_, note=note, variants=["fp32"] if fmt == "tflite" else ["fp32", "fp16"],
            )

        def check(text: str):
            data, sources = parse_yaml(text, str(target), dest.absolute())
            validate_tree(data, sources)  # never write a recipe that would not validate

        # The name, keypoint set and flags are checked before the (slow) model is read.
        check(text_for(["x"], ["x"], fed, channels or "rgb", lo_hi or (0, 1), keypoints or "aic14", []))
        found = inspect_model(fmt, import_path, input_name, output_name, channels, lo_hi, keypoints, fed, probe_images)
        text = text_for(found.inputs, found.outputs, fed, found.channels, found.range, found.keypoints, found.note())
        check(text)
        write_inside(dest, target.name, text)
        if json_output:
            emit_json({"ok": True, "recipe": str(target), **found.to_json()})
        else:
            for line in _listing(found, keypoints):
                typer.echo(line)
            typer.echo(f"wrote {target}")
        return 0

    guarded(body, json_output=json_output)


def _pair(text: str, flag: str, kind):
    from mdeploy.errors import InputError

    try:
        a, b = (kind(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise InputError(f"{flag} expects two numbers A,B, got {text!r}") from None
    return a, b


def _listing(found, keypoints_given: str | None) -> list[str]:
    """What init found and chose, as printed."""
    from mdeploy.cli.common import table
    from mdeploy.importers.interface import heatmap_match
    from mdeploy.importers.probe import close_call

    iface, picked = found.interface, found.choice
    if iface is None:
        return []
    facts = f", {iface.facts['nodes']} nodes" if "nodes" in iface.facts else ""
    lines = [f"model: {iface.path.name} ({iface.format}{facts})", "inputs:"]
    lines += ["  " + r for r in table(["name", "dtype", "shape"], [[t.name, t.dtype, t.shape_text()] for t in iface.inputs]).splitlines()]
    rows = []
    for t in iface.outputs:
        hm = heatmap_match(t.shape, picked.size)
        rows.append([t.name, t.op or t.dtype, t.shape_text(), (hm.text() if hm else "-") + (" (inner node)" if t.inner else "")])
    lines.append(f"candidate outputs ({iface.outputs_are}):")
    lines += ["  " + r for r in table(["name", "op" if iface.format == "frozen_pb" else "dtype", "shape", "reads as"], rows).splitlines()]
    reads = picked.heatmaps.text() if picked.heatmaps else "does not read as heatmaps of a known keypoint set: check it"
    def how(given: bool) -> str:
        return " (given)" if given else ""

    lines.append(f"{'chosen' if picked.input_given and picked.output_given else 'proposed'}: input {picked.input.name}"
                 f"{how(picked.input_given)} -> output {picked.output.name}{how(picked.output_given)} ({reads})")
    if picked.heatmaps and picked.heatmaps.also and keypoints_given is None:
        lines.append(f"note: {picked.output.shape[-1]} channels also match {', '.join(picked.heatmaps.also)}; "
                     f"{found.keypoints} is written: pass --keypoints to choose another")
    scores = found.scores
    if scores:
        lines.append(f"preprocessing probe on {len(found.photos)} photos of people (keypoints with a heatmap peak over {found.threshold:g}):")
        rendered = table(["setting", "keypoints", "mean peak"], [[s.label(), str(s.found), f"{s.mean_peak:.3f}"] for s in scores]).splitlines()
        rendered[2] += "  <- chosen"
        lines += ["  " + r for r in rendered]
        near = close_call(scores)
        if near is not None:
            lines.append(f"note: {near.label()} scored nearly as well, so the probe is not sure: add photos like the model's "
                         "training images with --probe-images, or check the model's training code")
        if scores[0].found == 0:
            lines.append("note: no setting found people in the photos: the probe could not tell; check channels and range")
    return lines
