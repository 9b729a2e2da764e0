"""`mdeploy scaffold`: write or update the Android / iOS demo app for a recipe."""

from __future__ import annotations

from pathlib import Path

import typer

from mdeploy.cli import app
from mdeploy.cli.common import emit_json, guarded
from mdeploy.cli.recipe_cmds import SET_HELP

DEFAULT_RECIPES = {"android": "recipes/cpm_android.yaml", "ios": "recipes/hourglass_ios.yaml"}


@app.command()
def scaffold(
    platform: str = typer.Argument(..., help="android or ios.", show_default=False),
    recipe: Path | None = typer.Option(
        None, "--recipe", help="Recipe the app is for (default: recipes/cpm_android.yaml or recipes/hourglass_ios.yaml)."
    ),
    dest: Path | None = typer.Option(None, "--dest", help="App folder (default: the recipe's app.<platform>.project, else android_demo/ or ios_demo/)."),
    out: Path = typer.Option(Path("build"), "--out", help="Folder that holds build/<name>/: its artifact and spec are used when built."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP, metavar="KEY=VALUE"),
    force: bool = typer.Option(False, "--force", help="Overwrite generated files you edited, and your changes to scaffolded files."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be written; write nothing."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Create the demo app for a recipe, or bring an existing one up to date.

    The app's own sources are written once and are then yours; the generated glue is
    rewritten from the model's spec (a glue file you edited is refused unless --force);
    the model is copied from the recipe's build when there is one. Nothing is written
    outside the app folder, and an unchanged file is never touched.
    """

    def body() -> int:
        from mdeploy.codegen.apps import DEFAULT_PROJECT, app_model, app_settings, check_platform, write_app
        from mdeploy.errors import InputError
        from mdeploy.recipe import load_recipe

        check_platform(platform)
        path = recipe
        if path is None:
            path = Path(DEFAULT_RECIPES[platform])
            if not path.is_file():
                raise InputError(f"no recipe given and {path} is not here", hint="pass --recipe RECIPE.yaml")
        loaded = load_recipe(path, set_)
        target = dest or Path(app_settings(loaded, platform)["project"] or DEFAULT_PROJECT[platform])
        model = app_model(loaded, platform, out / loaded.name)
        update = write_app(model, target, force=force, dry_run=dry_run)
        if json_output:
            emit_json({"ok": True, "dry_run": dry_run, **update.to_json()})
        else:
            typer.echo(describe(update, dry_run, out / loaded.name, path))
        return 0

    guarded(body, json_output=json_output)


def describe(update, dry_run: bool, build_dir: Path, recipe: Path) -> str:
    from mdeploy.recipe.source import display_path

    r = update.report
    verb = "would write" if dry_run else "wrote"
    lines = [f"{update.platform} app {display_path(update.dest)} for {update.artifact_id}:"]
    if r.written:
        lines.append(f"  {verb} {len(r.written)}: " + ", ".join(r.written))
    if r.removed:
        lines.append(f"  {'would remove' if dry_run else 'removed'} old models: " + ", ".join(r.removed))
    if r.kept:
        lines.append(f"  kept {len(r.kept)} file(s) you changed (--force replaces them): " + ", ".join(r.kept))
    if r.unchanged:
        lines.append(f"  {len(r.unchanged)} file(s) already up to date")
    if update.model is None:
        lines.append(f"  model: not copied: {display_path(build_dir)} has no build; run `mdeploy build {display_path(recipe)}`")
    return "\n".join(lines)
