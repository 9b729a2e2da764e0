"""`mdeploy models`, `mdeploy data synth|convert`."""

from __future__ import annotations

from pathlib import Path

import typer

from mdeploy.cli import app
from mdeploy.cli.common import emit_json, guarded, stderr, table

data_app = typer.Typer(help="Datasets: generate synthetic figures, convert AI Challenger annotations.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command()
def models(
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
    all_: bool = typer.Option(True, "--all/--no-test", help="Include the tiny test-only architectures."),
) -> None:
    """List the registered architectures: parameters, MACs, outputs and stride at the default input."""

    def body() -> int:
        from mdeploy.models.describe import describe_all

        rows = describe_all(include_test=all_)
        if json_output:
            emit_json(rows)
            return 0
        typer.echo(
            table(
                ["name", "input", "stride", "params", "GMACs", "final output", "stages", "notes"],
                [
                    [
                        r["name"],
                        "x".join(map(str, r["input_size"])),
                        str(r["output_stride"]),
                        f"{r['parameters'] / 1e6:.3f} M",
                        f"{r['macs'] / 1e9:.3f}",
                        r["final_output"],
                        str(len(r["outputs"])),
                        "test only" if r["test_only"] else ", ".join(f"{k}={v}" for k, v in r["params"].items()),
                    ]
                    for r in rows
                ],
            )
        )
        return 0

    guarded(body, json_output=json_output)


@data_app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Folder to write images/ and annotations.json into.", show_default=False),
    count: int = typer.Option(1000, min=1, help="Number of images."),
    seed: int = typer.Option(0, help="Same seed, same dataset."),
    size: int = typer.Option(192, min=32, max=1024, help="Image width and height."),
) -> None:
    """Generate a synthetic COCO-keypoints dataset of articulated figures (14 aic14 keypoints).

    Accuracy on these figures says nothing about accuracy on photographs of people.
    """

    def body() -> int:
        from mdeploy.data.synthetic import SynthConfig, generate
        from mdeploy.errors import InputError

        if (out / "annotations.json").exists():
            raise InputError(f"{out} already holds a dataset (annotations.json)", hint="choose an empty folder")
        generate(SynthConfig(count=count, seed=seed, size=size), out, progress=lambda d, t: None)
        typer.echo(f"wrote {count} images and {out / 'annotations.json'}")
        return 0

    guarded(body)


@data_app.command("convert")
def convert(
    annotations: Path = typer.Argument(..., help="AI Challenger keypoint annotations (json).", show_default=False),
    out: Path = typer.Option(..., "--out", help="COCO-keypoints json to write."),
    images: Path | None = typer.Option(None, "--images", help="Image folder: sizes are read, missing images skipped."),
    from_: str = typer.Option("aic", "--from", metavar="FORMAT", help="Source format (aic: AI Challenger)."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Convert AI Challenger annotations to COCO keypoints (what recipes' data.*.coco read)."""

    def body() -> int:
        from mdeploy.data.aic import convert_aic
        from mdeploy.errors import InputError

        if from_ != "aic":
            raise InputError(f"--from {from_}: unknown source format; expected: aic")
        report = convert_aic(annotations, images, out)
        if json_output:
            emit_json(report.to_json())
        else:
            typer.echo(f"wrote {out}: {report.people} people in {report.images} images")
            if report.skipped_images:
                stderr(
                    f"skipped {report.skipped_images} image(s) with no usable person"
                    + (f" ({report.missing_files} missing from {images})" if report.missing_files else "")
                )
        return 0

    guarded(body, json_output=json_output)
