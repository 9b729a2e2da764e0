"""What `push` and `bench` work on: artifacts from a recipe's build or from files, devices from names.

Shared by the `push`/`bench` commands and by the bench step of `mdeploy build`.
"""

from __future__ import annotations

from pathlib import Path


def selection(sources: list[str], out: Path, set_: list[str], artifact_ids: list[str], any_file: bool = False):
    """(recipe or None, build folder or None, items) from RECIPE or ARTIFACT arguments."""
    from mdeploy.devices.bench import Item
    from mdeploy.devices.results import build_of
    from mdeploy.errors import InputError
    from mdeploy.fsutil import sha256_file

    if not sources:
        raise InputError("give a recipe (its build's artifacts) or artifact files")
    recipes = [s for s in sources if s.endswith((".yaml", ".yml"))]
    if recipes:
        if len(sources) > 1:
            raise InputError("give one recipe, or artifact files, not both")
        from mdeploy.recipe import load_recipe

        recipe = load_recipe(recipes[0], set_)
        build_dir = out / recipe.name
        manifest = read_manifest(build_dir, recipes[0])
        by_id = {a["id"]: a for a in manifest["artifacts"]}
        wanted = list(artifact_ids) or default_artifacts(recipe, by_id)
        items = []
        for artifact_id in wanted:
            entry = by_id.get(artifact_id)
            if entry is None:
                raise InputError(f"{artifact_id} is not in {build_dir} (it holds: {', '.join(sorted(by_id))})",
                                 hint="add it to the recipe's export section and build again")
            items.append(Item(artifact_id, build_dir / entry["path"], entry["format"], entry["sha256"]))
        return recipe, build_dir, items
    if set_:
        raise InputError("--set applies to a recipe; none was given")
    items = []
    build_dirs = set()
    for source in sources:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"artifact not found: {path}")
        fmt = {".tflite": "tflite", ".onnx": "onnx"}.get(path.suffix, "file" if any_file else None)
        if fmt is None:
            raise InputError(f"{path}: mdeploy measures .tflite (phones and host) and .onnx (host) files")
        build = build_of(path)
        artifact_id = None
        if build is not None:
            manifest = read_manifest(build, str(path))
            rel = path.resolve().relative_to(build.resolve()).as_posix()
            artifact_id = next((a["id"] for a in manifest["artifacts"] if a["path"] == rel), None)
            if artifact_id is not None:
                build_dirs.add(build)
        items.append(Item(artifact_id, path.resolve(), fmt, sha256_file(path)))
    build_dir = build_dirs.pop() if len(build_dirs) == 1 else None
    return None, build_dir, items


def read_manifest(build_dir: Path, source: str) -> dict:
    from mdeploy.report.manifest import load_manifest

    return load_manifest(build_dir, hint=f"run `mdeploy build {source}` first (or pass --out where it was built)")


def default_artifacts(recipe, by_id: dict) -> list[str]:
    if recipe.bench is not None and recipe.bench.artifacts:
        return list(recipe.bench.artifacts)
    if recipe.app is not None and recipe.app.android is not None:
        return [recipe.app.android.artifact]
    return [i for i, a in by_id.items() if a["format"] in ("tflite", "onnx")]


def resolve_targets(names: list[str], all_: bool, recipe, default_host: bool):
    from mdeploy.devices.adb import connect_server
    from mdeploy.devices.profiles import load_profiles
    from mdeploy.devices.targets import Target, list_devices, resolve
    from mdeploy.errors import DeviceError, InputError

    folders = [Path.cwd()] + ([recipe.root] if recipe is not None and getattr(recipe, "root", None) else [])
    profiles = load_profiles(folders)
    servers = []

    def server_factory():
        if not servers:
            servers.append(connect_server())
        return servers[0]

    wanted = list(names) or (list(recipe.devices) if recipe is not None and recipe.devices else [])
    targets = []
    if all_:
        phones = [d for d in list_devices(server_factory()) if d.state == "device"]
        if not phones:
            raise DeviceError("--all: no phone is connected and ready", hint="`mdeploy devices` shows what adb sees")
        targets += [Target(d.serial, next(iter(profiles.matching(d.serial, d.model)), profiles.get("host")), d.serial) for d in phones]
        targets = [Target(t.name, t.profile if t.profile.alias != "host" else _anon(t.serial), t.serial) for t in targets]
    if not wanted and not targets:
        if not default_host:
            raise InputError("which device? pass --device NAME (a profile alias or serial) or --all")
        wanted = ["host"]
    seen = {t.name for t in targets}
    for name in wanted:
        if name not in seen:
            targets.append(resolve(name, profiles, server_factory))
            seen.add(name)
    return targets, server_factory


def _anon(serial: str):
    from mdeploy.devices.profiles import DeviceProfile

    return DeviceProfile(alias=serial, serial=serial)


def binary_for(target, recipe, flag: Path | None) -> Path | None:
    if flag is not None:
        return flag
    abi = target.profile.abi
    if recipe is not None and recipe.bench is not None and recipe.bench.benchmark_binary:
        table_ = recipe.bench.benchmark_binary
        if abi in table_:
            return table_[abi]
        if abi is None and len(table_) == 1:
            return next(iter(table_.values()))
    return target.profile.benchmark_binary


def over_limit(outcomes, section) -> list[str]:
    if section is None or not section.max_latency_ms:
        return []
    over = []
    for o in outcomes:
        limit = section.max_latency_ms.get(o.target.name)
        if limit is None or o.document is None:
            continue
        for r in o.document["results"]:
            if r["latency"]["median_ms"] > limit:
                over.append(f"{o.target.name} {r['artifact']} threads={r['threads']} {r['delegate']}: "
                            f"median {r['latency']['median_ms']:.2f} ms > {limit:g} ms")
    return over


def settings_for(section, runs=None, warmup=None, trials=None, threads=(), delegates=()):
    """BenchSettings from the recipe's bench section, with command-line values on top."""
    from mdeploy.devices.bench import BenchSettings

    return BenchSettings(
        runs=runs or (section.runs if section else 50),
        warmup=warmup if warmup is not None else (section.warmup if section else 5),
        trials=trials or (section.trials if section else 3),
        threads=tuple(threads) or (tuple(section.threads) if section else (1,)),
        delegates=tuple(delegates) or (tuple(section.delegates) if section else ("xnnpack",)),
        timeout=section.timeout_s if section else 600.0,
    )


def measured(build_dir: Path, device: str, settings) -> frozenset:
    """(artifact sha256, threads, delegate) already measured on `device` with the same runs/warmup/trials."""
    from mdeploy.devices import results

    data = results.load(build_dir).get(device)
    if data is None:
        return frozenset()
    old = data.get("settings", {})
    if (old.get("runs"), old.get("warmup"), old.get("trials")) != (settings.runs, settings.warmup, settings.trials):
        return frozenset()
    return frozenset((r.get("sha256"), r.get("threads"), r.get("delegate")) for r in data.get("results", []))


def bench_for_build(recipe, build_dir: Path, manifest: dict, *, use_cache: bool, log) -> dict:
    """The bench step of `mdeploy build` (recipes with a `bench` section): measure on the recipe's
    devices (default: host) what has not been measured with these settings, record it, and
    check `bench.max_latency_ms` against every current result."""
    from mdeploy.devices import results
    from mdeploy.devices.bench import MISSING_BINARY_HINT, Item, check_binary, configs, run_all
    from mdeploy.errors import InputError

    section = recipe.bench
    settings = settings_for(section)
    by_id = {a["id"]: a for a in manifest["artifacts"]}
    items = []
    for artifact_id in default_artifacts(recipe, by_id):
        entry = by_id.get(artifact_id)
        if entry is None:
            raise InputError(f"bench.artifacts names {artifact_id}, which this build does not hold",
                             where=recipe.where("bench", "artifacts"))
        items.append(Item(artifact_id, build_dir / entry["path"], entry["format"], entry["sha256"]))
    targets, server_factory = resolve_targets([], False, recipe, default_host=True)
    done, todo, binaries, kits = {}, [], {}, {}
    for target in targets:
        done[target.name] = measured(build_dir, target.name, settings) if use_cache else frozenset()
        kits[target.name] = mace_kit(recipe, build_dir, manifest, target)
        wanted = {(i.sha256, t, d) for i in items for t, d in configs(i, settings, host=target.is_host, mace=kits[target.name])}
        if wanted - done[target.name]:
            todo.append(target)
            if not target.is_host and any(i.format == "tflite" for i in items):
                binary = binary_for(target, recipe, None)
                if binary is None:
                    raise InputError(f"no benchmark_model for {target.name}", hint=MISSING_BINARY_HINT,
                                     where=recipe.where("bench", key=True))
                binaries[target.name] = check_binary(binary, target.profile.abi)
    outcomes = run_all(todo, items, settings, server_factory=server_factory, binaries=binaries, log=log, done=done, mace=kits) if todo else []
    for o in outcomes:
        if o.document is not None and o.document["results"]:
            results.record(build_dir, o.document)
    current = results.load(build_dir)
    limits = []
    hashes = {i.sha256 for i in items}
    for target in targets:
        limit = section.max_latency_ms.get(target.name)
        data = current.get(target.name) or {}
        for r in data.get("results", []):
            if r.get("sha256") not in hashes:
                continue
            median = r["latency"]["median_ms"]
            limits.append({
                "device": target.name, "artifact": r["artifact"], "threads": r["threads"], "delegate": r["delegate"],
                "median_ms": median, "limit_ms": limit, "ok": limit is None or median <= limit,
            })
    return {
        "measured": [t.name for t in todo],
        "cached": [t.name for t in targets if t not in todo],
        "outcomes": outcomes,
        "checks": limits,
    }


def mace_kit(recipe, build_dir: Path, manifest: dict, target, run_flag: Path | None = None, model_flag: Path | None = None,
             config_flag: Path | None = None):
    """The MaceKit for `target` when the recipe exports MACE and mace_run + the converted model are known.

    The tensors and shapes mace_run is given are the built graph's (the manifest's mace
    entry). When the model was converted from a deployment file of the user's own
    (`bench.mace_config`, `--mace-config`), that file is checked against MACE's rules and
    against the graph first, and its model tag names the converted files.
    """
    from mdeploy import mace_rules
    from mdeploy.devices.bench import MaceKit, check_binary
    from mdeploy.spec import ModelSpec

    if recipe is None or recipe.export.mace is None or target.is_host:
        return None
    section = recipe.bench
    run = run_flag
    if run is None and section is not None and section.mace_run:
        run = section.mace_run.get(target.profile.abi) or (next(iter(section.mace_run.values())) if len(section.mace_run) == 1 else None)
    run = run or target.profile.mace_run
    model_dir = model_flag or (section.mace_model if section is not None else None)
    if run is None or model_dir is None:
        return None
    check_binary(Path(run), target.profile.abi, "mace_run")
    entry = next((a for a in manifest["artifacts"] if a["id"] == "mace"), None)
    spec = ModelSpec.load(build_dir / "model" / "spec.json")
    details = (entry or {}).get("details") or {}
    io = {
        "input": details.get("input", spec.input.name),
        "input_shape": list(details.get("input_shape", spec.input.shape)),
        "output": details.get("output", spec.output.name),
        "output_shape": list(details.get("output_shape", spec.output.shape)),
    }
    # every output (a PAF model: heatmaps and pafs), against which a user's deployment file is checked;
    # mace_run is given the first only (timing needs no more)
    io["outputs"] = details.get("outputs") or (
        [{"name": o.name, "shape": list(o.shape)} for o in spec.outputs] if len(spec.outputs) > 1
        else [{"name": io["output"], "shape": io["output_shape"]}])
    tag = recipe.export.mace.model_tag or mace_rules.tag_for(recipe.name)
    config = config_flag or (section.mace_config if section is not None else None)
    if config is not None:
        tag = check_deployment_file(Path(config), io, tag)
    return MaceKit(
        run=Path(run),
        model_dir=Path(model_dir),
        tag=tag,
        input_node=io["input"],
        input_shape=tuple(io["input_shape"]),
        output_node=io["output"],
        output_shape=tuple(io["output_shape"]),
        input_range=spec.preprocessing.input_range(),
        runtimes=mace_rules.RUNTIME_DEVICES[recipe.export.mace.runtime],
    )


def check_deployment_file(path: Path, io: dict, tag: str) -> str:
    """Check a user's MACE deployment file against MACE's rules and the graph `io`; return its model tag."""
    from mdeploy import mace_rules
    from mdeploy.errors import InputError
    from mdeploy.limits import read_regular
    from mdeploy.recipe.source import parse_yaml

    try:
        raw = read_regular(path, "MACE deployment file", "recipe_bytes")
    except FileNotFoundError:
        raise InputError(f"MACE deployment file not found: {path}") from None
    config, _ = parse_yaml(raw.decode("utf-8", errors="replace"), str(path), path.parent)
    problems = mace_rules.validate(config, base=path.parent, check_files=False)
    models = config.get("models") if isinstance(config, dict) else None
    if isinstance(models, dict) and models and tag not in models:
        if len(models) == 1:
            tag = str(next(iter(models)))
        else:
            problems.append(f"models: no model tagged {tag!r} (it holds {', '.join(map(str, models))})")
    problems += mace_rules.graph_problems(config, io, tag)
    if problems:
        raise InputError(
            f"{path} does not fit the graph mdeploy built: {'; '.join(problems)}",
            hint="convert the model from the build's own deployment file (build/<name>/mace/<name>.yml), "
            "or correct these keys and convert again",
        )
    return tag
