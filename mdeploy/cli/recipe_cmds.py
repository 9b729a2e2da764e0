"""Recipe commands: `validate`, `schema`, `init`."""

from __future__ import annotations

from pathlib import Path

import typer

from mdeploy.cli import app
from mdeploy.cli.common import emit_json, guarded, stderr

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
        pending = pending_sections(loaded)
        rows = summarize(loaded)
        if json_output:
            emit_json({"ok": True, "recipe": str(recipe), "summary": dict(rows), "not_built": [p.to_json() for p in pending]})
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
            atomic_write_text(out, text)
            stderr(f"wrote {out}")
        return 0

    guarded(body)


_FORMATS = {".keras": "keras", ".pb": "frozen_pb"}


@app.command()
def init(
    name: str = typer.Argument(..., help="Recipe name (letters, digits, '-', '_').", show_default=False),
    import_path: Path = typer.Option(..., "--import", help="Model to import: .keras file, SavedModel folder or frozen .pb."),
    input_name: str | None = typer.Option(None, "--input", help="Input tensor name (frozen .pb)."),
    output_name: str | None = typer.Option(None, "--output", help="Output tensor name (frozen .pb; several-output models)."),
    channels: str = typer.Option("rgb", help="Channel order the model expects: rgb or bgr."),
    value_range: str = typer.Option("0,1", "--range", help="Values of pixel 0 and 255, e.g. 0,255 or -1,1."),
    keypoints: str = typer.Option("aic14", help="Keypoint set of the output channels."),
    dest: Path = typer.Option(Path("."), help="Folder to write NAME.yaml into."),
    force: bool = typer.Option(False, help="Overwrite an existing recipe file."),
) -> None:
    """Write a starter recipe that imports a model."""

    def body() -> int:
        import os

        from mdeploy.codegen.render import render, write_inside
        from mdeploy.errors import InputError
        from mdeploy.recipe.loader import validate_tree
        from mdeploy.recipe.source import parse_yaml

        if import_path.is_dir():
            fmt = "saved_model"
        elif import_path.suffix in _FORMATS:
            fmt = _FORMATS[import_path.suffix]
        else:
            raise InputError(f"--import {import_path}: expected a .keras file, a SavedModel folder or a frozen .pb")
        if fmt == "frozen_pb" and not (input_name and output_name):
            raise InputError("a frozen .pb needs --input and --output tensor names")
        try:
            lo, hi = (float(v) for v in value_range.split(","))
        except ValueError:
            raise InputError(f"--range expects LOW,HIGH, got {value_range!r}") from None
        target = dest / f"{name}.yaml"
        if target.exists() and not force:
            raise InputError(f"{target} already exists", hint="use --force to overwrite it, or pick another name")
        rel = os.path.relpath(import_path.absolute(), dest.absolute())
        text = render(
            "recipes/import.yaml.j2",
            name=name,
            filename=target.name,
            format=fmt,
            path=Path(rel).as_posix(),
            inputs=[input_name] if input_name else [],
            outputs=[output_name] if output_name else [],
            size=None,
            channels=channels,
            range=[f"{lo:g}", f"{hi:g}"],
            keypoints=keypoints,
        )
        data, sources = parse_yaml(text, str(target), dest.absolute())
        validate_tree(data, sources)  # never write a recipe that would not validate
        write_inside(dest, target.name, text)
        typer.echo(f"wrote {target}")
        return 0

    guarded(body)
