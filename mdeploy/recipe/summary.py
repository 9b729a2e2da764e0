"""A one-screen summary of a validated recipe (what `mdeploy validate` prints)."""

from __future__ import annotations

from mdeploy.recipe.schema import Recipe
from mdeploy.recipe.source import display_path


def summarize(recipe: Recipe) -> list[tuple[str, str]]:
    m = recipe.model
    rows: list[tuple[str, str]] = [("name", recipe.name)]
    if m.import_ is not None:
        imp = m.import_
        src = display_path(imp.path) if imp.path else imp.url
        names = []
        if imp.inputs:
            names.append(f"input {imp.inputs[0]}")
        if imp.outputs:
            names.append(f"output {imp.outputs[0]}")
        rows.append(("model", f"import {imp.format} {src}" + (f" ({', '.join(names)})" if names else "")))
    else:
        params = ", ".join(f"{k}={v}" for k, v in m.params.items())
        rows.append(("model", f"train {m.arch}" + (f" ({params})" if params else "")))
    inp = m.input
    size = f"{inp.size[0]}x{inp.size[1]}" if inp.size else "size from model"
    norm = ""
    if any(inp.mean) or any(s != 1 for s in inp.std):
        norm = f", mean {list(inp.mean)}, std {list(inp.std)}"
    rows.append(("input", f"{size} {inp.channels.upper()} [{inp.range[0]:g}, {inp.range[1]:g}]{norm}, resize {inp.resize}"))
    rows.append(("keypoints", m.keypoints))
    formats = []
    ex = recipe.export
    if ex.tflite:
        formats.append(f"tflite ({', '.join(ex.tflite.variants)})")
    for fmt in ("onnx", "coreml", "mace"):
        if getattr(ex, fmt) is not None:
            formats.append(fmt)
    rows.append(("export", ", ".join(formats) or "nothing"))
    s = recipe.verify.samples
    sample_desc = [f"{s.random} random"] + (["package photos"] if s.photos else []) + (
        [f"{len(s.images)} images"] if s.images else []
    )
    gates = [f"accuracy max drop {recipe.verify.accuracy.max_drop:g}"] if recipe.verify.accuracy else []
    gates.append(f"gpu ops {recipe.verify.gpu_ops}")
    gates.append(f"find people {recipe.verify.find_people}")
    rows.append(("verify", f"parity {recipe.verify.parity} on {', '.join(sample_desc)}; {', '.join(gates)}"))
    if recipe.data:
        splits = [(role, getattr(recipe.data, role), ("data", role)) for role in ("train", "calibration")
                  if getattr(recipe.data, role) is not None]
        for name, d, _ in splits + recipe.val_splits():
            if d.synthetic:
                desc = f"synthetic {d.synthetic.count} (seed {d.synthetic.seed})"
            elif d.images:
                desc = f"{d.kind_of} images in {', '.join(display_path(f) for f in d.images.folders)}"
            else:
                desc = f"{d.kind_of} {d.source} {display_path(getattr(d, d.source).annotations)}"
            rows.append((f"data.{name}" if name in ("train", "calibration") else "data.val" if name == "val" else f"data.val {name}", desc))
    if m.arch is not None:
        t = recipe.train
        rows.append(("train", f"{t.epochs} epochs, batch {t.batch_size}, {t.optimizer.name} lr {t.optimizer.lr:g}, {t.distribute}"))
    if recipe.devices:
        rows.append(("devices", ", ".join(recipe.devices)))
    if recipe.bench is not None:
        b = recipe.bench
        what = ", ".join(b.artifacts) if b.artifacts else "default artifacts"
        limits = ", ".join(f"{d} {ms:g} ms" for d, ms in b.max_latency_ms.items())
        rows.append(("bench", f"{what}; threads {', '.join(map(str, b.threads))}; {', '.join(b.delegates)}; "
                              f"{b.trials}x{b.runs} runs" + (f"; max median {limits}" if limits else "")))
    return rows
