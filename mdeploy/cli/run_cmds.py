"""`mdeploy train`, `mdeploy eval`, `mdeploy predict`."""

from __future__ import annotations

from pathlib import Path

import typer

from mdeploy.cli import app
from mdeploy.cli.common import emit_json, guarded, output_file, output_folder, stderr, table
from mdeploy.cli.recipe_cmds import SET_HELP

RECIPE_SUFFIXES = (".yaml", ".yml")


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="Recipe with model.arch and data.", show_default=False),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP, metavar="KEY=VALUE"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Train again even when a trained model is cached."),
    out: Path = typer.Option(Path("build"), "--out", help="Folder that holds build/<name>/ folders."),
    json_output: bool = typer.Option(False, "--json", help="Print the training summary as JSON."),
) -> None:
    """Train the recipe's model (data, training, canonical model); resumes an interrupted run.

    With train.distribute: multi_worker, run the same command on every worker (TF_CONFIG set).
    """

    def body() -> int:
        from mdeploy.build import build as run_build
        from mdeploy.errors import InputError
        from mdeploy.recipe import load_recipe

        output_folder(out, "--out")
        loaded = load_recipe(recipe, set_)
        if loaded.model.arch is None:
            raise InputError("this recipe imports its model (model.import): there is nothing to train", where=loaded.where("model"))
        from mdeploy.cli.progress import build_progress, ci_from_environment

        with build_progress(ci_from_environment() or json_output) as progress:
            result = run_build(loaded, out_root=out, use_cache=not no_cache, only=["train"], progress=progress)
        summary = result.manifest.get("training") or {}
        if json_output:
            emit_json({"ok": True, "build_dir": str(result.build_dir), "training": summary})
            return 0
        from mdeploy.evaluate.metrics import LABELS

        history = summary.get("history", [])
        # the validation metrics the model's family reported (PCKh, AP, MPJPE ...), in the order it gave them
        shown = [k for k in dict.fromkeys(k for h in history for k in h if k.startswith("val_"))
                 if k != "val_pckh@0.5_labelled" and any(h.get(k) is not None for h in history)][:3]
        rows = [[str(h["epoch"]), str(h["step"]), f"{h['loss']:.3f}", *(_value(h.get(k), k[4:]) for k in shown)] for h in history]
        typer.echo(table(["epoch", "step", "loss", *(f"val {LABELS.get(k[4:], k[4:])}" for k in shown)], rows))
        typer.echo(f"\n{summary.get('steps', 0)} steps at {summary.get('images_per_second', 0)} images/s; model in {result.build_dir / 'model'}")
        return 0

    guarded(body, json_output=json_output)


def _metrics_of(results) -> list[str]:
    """The metrics that have a value in any of `results`, in the order they were computed."""
    results = list(results)
    return [m for m in dict.fromkeys(k for r in results for k in r["metrics"]) if any(r["metrics"].get(m) is not None for r in results)]


def _value(value, metric: str) -> str:
    from mdeploy.evaluate.metrics import unit

    return "-" if value is None else f"{value:.1f}{unit(metric)}"


@app.command("eval")
def eval_(
    target: Path = typer.Argument(..., help="A recipe (its build's artifacts) or one artifact.", show_default=False),
    data: Path | None = typer.Option(None, "--data", help="Keypoints json: COCO or MPII layout (default: the recipe's data.val splits)."),
    images: Path | None = typer.Option(None, "--images", help="Image folder of --data (default: images/ beside it)."),
    kind: str = typer.Option("unknown", "--kind", metavar="KIND", help="What --data holds, for the tables: real, synthetic or unknown."),
    spec: Path | None = typer.Option(None, "--spec", help="spec.json of the artifact (default: found in its build)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Score only the first N samples."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP, metavar="KEY=VALUE"),
    out: Path = typer.Option(Path("build"), "--out", help="Folder that holds build/<name>/ folders."),
    json_output: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """Accuracy of models on keypoint splits, by their family's metric: PCKh where the data has head joints
    (PCK@0.2 torso otherwise) for one person, COCO keypoint AP for several, MPJPE for 3D joints."""

    def body() -> int:
        from mdeploy.evaluate.metrics import LABELS

        splits, provenance = _evaluate_target(target, data, images, kind, spec, limit, set_, out)
        note = (provenance or {}).get("note")
        if json_output:
            first = splits[0]["results"] if splits else {}
            emit_json({"ok": True, "splits": splits, "results": first, "provenance": provenance})
            return 0
        if note:
            stderr(f"note: {note}")
        for i, split in enumerate(splits):
            results = split["results"]
            shown = _metrics_of(results.values())
            norms = "; ".join(f"{k} = {v}" for k, v in (next(iter(results.values()), {}).get("normalisers") or {}).items())
            typer.echo(f"{'' if i == 0 else chr(10)}split {split['name']}: {split['kind']}, {split['people']} people in {split['images']} images"
                       + (f" ({norms})" if norms else ""))
            typer.echo(table(["artifact", "samples", *[LABELS.get(m, m) for m in shown]],
                             [[a, str(r["samples"]), *[_value(r["metrics"].get(m), m) for m in shown]] for a, r in results.items()]))
        first = next(iter(splits[0]["results"].values()), None) if splits else None
        if first and first.get("per_joint"):
            shown = [m for m in _metrics_of([first]) if m != "pckh@0.5_labelled"]
            typer.echo("")
            typer.echo(f"per joint, {next(iter(splits[0]['results']))} on {splits[0]['name']}:")
            typer.echo(
                table(
                    ["joint", *[LABELS.get(m, m) for m in shown], "visible", "labelled"],
                    [[j, *[_value(v.get(m), m) for m in shown], str(v.get("visible", "-")), str(v.get("labelled", "-"))]
                     for j, v in first["per_joint"].items()],
                )
            )
        return 0

    guarded(body, json_output=json_output)


def _evaluate_target(target, data, images, kind, spec, limit, overrides, out) -> tuple[list[dict], dict | None]:
    """Per split: its name, kind, size and {artifact: result}; and the model's provenance."""
    from mdeploy.errors import InputError

    if kind not in ("real", "synthetic", "unknown"):
        raise InputError(f"--kind expects real, synthetic or unknown, got {kind!r}")
    if target.suffix in RECIPE_SUFFIXES:
        from mdeploy.build import build as run_build
        from mdeploy.recipe import load_recipe

        recipe = load_recipe(target, overrides)
        if data is None:
            if not recipe.val_splits():
                raise InputError("the recipe has no data.val split; pass --data", where=recipe.where("data"))
            if not (Path(out) / recipe.name / "manifest.json").is_file():
                what = "trains its model first (minutes to hours)" if recipe.model.arch else "imports and converts its model first"
                raise InputError(
                    f"{target} has no build in {Path(out) / recipe.name}: `mdeploy eval` scores a build's artifacts",
                    hint=f"run `mdeploy build {target}` (it {what}), then `mdeploy eval {target}` again",
                )
            result = run_build(recipe, out_root=out, only=["accuracy"], progress=stderr)
            splits = []
            for name, section, _ in recipe.val_splits():
                gates = [g for g in result.gates if g.gate == "accuracy" and g.split == name and g.metrics.get("metrics")]
                info = next((g.metrics["split"] for g in gates if "split" in g.metrics), {"people": 0, "images": 0})
                splits.append({"name": name, "kind": section.kind_of, "people": info["people"], "images": info["images"],
                               "results": {g.artifact: g.metrics for g in gates}})
            return splits, result.manifest.get("provenance")
        build_dir = Path(out) / recipe.name
        if not (build_dir / "manifest.json").is_file():
            raise InputError(f"{build_dir} holds no build", hint=f"run `mdeploy build {target}` first")
        artifacts = _build_artifacts(build_dir)
    elif target.is_dir() and (target / "manifest.json").is_file():
        artifacts = _build_artifacts(target)
    else:
        artifacts = {target.name: target}
    if data is None:
        raise InputError("--data is required to score an artifact")
    return _score(artifacts, data, images or Path(data).parent / "images", kind, spec, limit)


def _build_artifacts(build_dir: Path) -> dict[str, Path]:
    from mdeploy.report.manifest import load_manifest

    manifest = load_manifest(build_dir)
    runnable = {"saved_model", "tflite", "onnx"}
    return {a["id"]: build_dir / a["path"] for a in manifest["artifacts"] if a["format"] in runnable}


def _score(artifacts: dict[str, Path], data: Path, images: Path, kind: str, spec_path: Path | None, limit: int | None):
    from mdeploy.data import load_keypoints
    from mdeploy.families import family_of
    from mdeploy.predict import find_spec, open_artifact
    from mdeploy.spec import provenance

    results, ds, prov = {}, None, None
    for name, path in artifacts.items():
        spec = find_spec(path, spec_path)
        prov = prov or provenance(spec.source)
        ds = load_keypoints(data, images, spec.keypoints)
        if name == next(iter(artifacts)):
            for note in ds.notes:
                stderr(f"{Path(data).name}: {note}")
        runner = open_artifact(path)
        stderr(f"scoring {name} on {min(len(ds), limit or len(ds))} samples ...")
        results[name] = family_of(spec).evaluate(runner, spec, ds, limit=limit).to_json()
    split = {"name": Path(data).stem, "kind": kind, "people": ds.people if ds else 0, "images": ds.images if ds else 0, "results": results}
    return [split], prov


@app.command()
def predict(
    artifact: Path = typer.Argument(..., help="Model artifact (.tflite, .keras, SavedModel folder).", show_default=False),
    sources: list[Path] = typer.Argument(
        ..., help="Images, folders of images, glob patterns ('photos/*.jpg'), or one video file.", show_default=False, metavar="SOURCE"
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o",
        help="Where results go: a folder (<source name>_pose.png/.mp4 in it), or a file name for one source. "
             "Default: beside each source.",
    ),
    spec: Path | None = typer.Option(None, "--spec", help="spec.json of the artifact (default: found in its build)."),
    window: int = typer.Option(3, min=1, help="Video: frames averaged per joint."),
    focal: str | None = typer.Option(
        None, "--focal", metavar="FX,FY",
        help="3-D models: the camera's focal length in pixels of the source image (one number for both axes). "
             "With --principal and --root-depth each joint gains its camera-space X, Y, Z in mm.",
    ),
    principal: str | None = typer.Option(
        None, "--principal", metavar="CX,CY", help="3-D models: the camera's principal point in pixels of the source image."
    ),
    root_depth: str | None = typer.Option(
        None, "--root-depth", metavar="MM",
        help="3-D models: the root joint's distance from the camera in mm (needed with --focal unless the spec's "
             "root depth is a constant); depths become absolute.",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print every result (keypoints, file written) as JSON."),
) -> None:
    """Draw the predicted skeleton on images (or every frame of a video) and print the keypoints.

    Each result is written beside its source as <source name>_pose.png (or .mp4), unless --out
    names a folder or a file. A 3-D model also gives each joint's depth in mm; with --focal,
    --principal and --root-depth, its position in camera space (x right, y down, z forward).
    """

    def body() -> int:
        from mdeploy.predict import expand_sources, is_video, open_predictor, parse_camera, predict_video, result_paths

        camera = parse_camera(focal, principal, root_depth)
        inputs = expand_sources(sources)
        camera.check_sources(inputs)
        if out is not None and (out.is_dir() or len(inputs) > 1):
            output_folder(out, "--out")
        else:
            output_file(out, "--out")
        targets = result_paths(inputs, out)
        from mdeploy.spec import provenance

        predictor = open_predictor(artifact, spec, camera)
        note = provenance(predictor.spec.source)["note"]
        if note and not json_output:
            stderr(f"note: {note}")
        if is_video(inputs[0]):
            targets[0].parent.mkdir(parents=True, exist_ok=True)
            frames = predict_video(predictor, inputs[0], targets[0], window)
            if json_output:
                result = {"source": str(inputs[0]), "out": str(targets[0]), "frames": frames}
                emit_json({"ok": True, "frames": frames, "out": str(targets[0]), "results": [result], "note": note})
            else:
                typer.echo(f"wrote {targets[0]} ({frames} frames)")
            return 0
        results = []
        for source, target in zip(inputs, targets):
            rows = _predict_image(predictor, source, target)
            results.append({"source": str(source), "out": str(target), "keypoints": rows})
            if not json_output and len(inputs) > 1:
                mean = sum(r["confidence"] for r in rows) / max(len(rows), 1)
                typer.echo(f"wrote {target} (mean confidence {mean:.2f})")
        if json_output:
            single = {"out": results[0]["out"], "keypoints": results[0]["keypoints"]} if len(results) == 1 else {}
            emit_json({"ok": True, **single, "results": results, "note": note})
        elif len(results) == 1:
            rows = results[0]["keypoints"]
            lifted = bool(rows) and "camera_mm" in rows[0]  # a 3-D model with --focal: camera space too
            typer.echo(table(["joint", "x", "y", "confidence", *(("X mm", "Y mm", "Z mm") if lifted else ())],
                             [[r["joint"], f"{r['x']:.1f}", f"{r['y']:.1f}", f"{r['confidence']:.3f}",
                               *((f"{v:.1f}" for v in r["camera_mm"]) if lifted else ())] for r in rows]))
            typer.echo(f"\nwrote {targets[0]}")
        return 0

    guarded(body, json_output=json_output)


def _predict_image(predictor, source: Path, target: Path) -> list[dict]:
    """Predict one image, write it with the skeleton drawn to `target`; its keypoints."""
    import io

    from PIL import Image

    from mdeploy.fsutil import atomic_write_bytes
    from mdeploy.images import load_rgb
    kps = predictor.spec.keypoints
    rgb = load_rgb(source)
    people, extras = predictor.predict(rgb)
    drawn = predictor.draw(rgb, people)
    buf = io.BytesIO()
    fmt = "JPEG" if target.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(drawn).save(buf, format=fmt)
    atomic_write_bytes(target, buf.getvalue())
    def row(person: int, joint: int, p) -> dict:
        extra = extras[person][joint] if extras else {}  # what the family adds, e.g. a 3D model's depth in mm
        return {"joint": kps.names[joint], "x": round(float(p[0]), 1), "y": round(float(p[1]), 1),
                "confidence": round(float(p[2]), 3), **extra}

    if not predictor.multi_person:
        return [row(0, j, p) for j, p in enumerate(people[0])]
    # a multi-person model: each row says whose joint it is; parts not found are left out
    return [{"person": i, **row(i, j, p)} for i, points in enumerate(people) for j, p in enumerate(points) if p[2] >= 0]
