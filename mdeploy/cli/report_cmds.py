"""`mdeploy report`: regenerate a build's report, optionally against another build."""

from __future__ import annotations

from pathlib import Path

import typer

from mdeploy.cli import app
from mdeploy.cli.common import emit_json, guarded, human_size, stderr, table


def _build_folder(path: Path, what: str) -> Path:
    from mdeploy.errors import InputError
    from mdeploy.report.manifest import load_manifest

    try:
        load_manifest(path, hint="give build/<name> of a finished `mdeploy build`")
    except InputError as err:
        raise InputError(f"{what} {err.message}".strip(), hint=err.hint) from None
    return path


def _same_kind_of_build(build_dir: Path, other: Path, allow_different: bool) -> None:
    """Refuse to compare builds of another recipe or model (their deltas would mean nothing) unless asked."""
    from mdeploy.errors import InputError
    from mdeploy.report.compare import differences
    from mdeploy.report.manifest import load_manifest

    found = differences(build_dir, other, load_manifest(build_dir), load_manifest(other))
    if found and not allow_different:
        raise InputError(
            f"--compare {other} is not a build of the same recipe and model: {'; '.join(found)}",
            hint="compare two builds of one recipe, or pass --allow-different to compare them anyway",
        )


@app.command()
def report(
    build_dir: Path = typer.Argument(..., help="A build folder (build/<name>).", show_default=False),
    compare: Path | None = typer.Option(None, "--compare", help="Another build of the same recipe: show deltas."),
    allow_different: bool = typer.Option(
        False, "--allow-different", help="With --compare: compare even a build of another recipe or model."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print report.json on stdout."),
) -> None:
    """Write build/<name>/report/: report.html (self-contained), report.json, plots, junit.xml.

    With --compare, the report also shows size, accuracy and latency deltas against the other
    build, and the artifacts added or removed since it; a latency change is called significant
    only when it exceeds both builds' trial spread. A build of another recipe or model is
    refused unless --allow-different is given.
    """

    def body() -> int:
        from mdeploy.recipe.source import display_path
        from mdeploy.report.html import write_report

        _build_folder(build_dir, "")
        if compare is not None:
            _build_folder(compare, "--compare")
            _same_kind_of_build(build_dir, compare, allow_different)
        doc = write_report(build_dir, compare_with=compare)
        if json_output:
            emit_json(doc)
            return 0
        typer.echo(f"report: {display_path(build_dir / 'report' / 'report.html')} ({'all gates passed' if doc['ok'] else 'a gate failed'})")
        c = doc.get("compare")
        if c:
            rows = [[a["id"], human_size(a["size_delta"], signed=True), "-" if a["pckh_delta"] is None else f"{a['pckh_delta']:+.2f}",
                     "same bytes" if a["same_bytes"] else ""] for a in c["artifacts"]]
            for note in c.get("different") or []:
                stderr(f"note: compared anyway (--allow-different): {note}")
            if rows:
                typer.echo(table(["artifact", "size", f"{c.get('accuracy') or 'accuracy'} change", ""], rows))
            if c["only_here"]:
                typer.echo(f"added since {compare}: {', '.join(c['only_here'])}")
            if c["only_there"]:
                typer.echo(f"removed since {compare}: {', '.join(c['only_there'])}")
            if c["latency"]:
                typer.echo(table(
                    ["device", "artifact", "threads", "delegate", "median ms", "change", "significant"],
                    [[x["device"], x["artifact"], str(x["threads"]), x["delegate"], f"{x['before_ms']:.3f} -> {x['after_ms']:.3f}",
                      f"{x['change_pct']:+.1f}%", "yes" if x["significant"] else "no"] for x in c["latency"]],
                ))
        return 0

    guarded(body, json_output=json_output)
