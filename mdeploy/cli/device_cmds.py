"""`mdeploy devices`, `mdeploy push`, `mdeploy bench`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from mdeploy.cli import app
from mdeploy.cli.common import emit_json, guarded, human_size, stderr, table
from mdeploy.cli.recipe_cmds import SET_HELP

DEVICE_HELP = "Profile alias from devices.yaml, a serial, or host. Repeatable."


@app.command()
def devices(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Connected phones (state, model, Android, ABI, SoC, battery) and the profiles they match.

    The adb server is the running one (ANDROID_ADB_SERVER_HOST/PORT are honoured), or one
    started from the adb shipped with adbutils. `host` is always listed.
    """

    def body() -> int:
        from mdeploy.devices.adb import STATE_HELP, Phone, connect_server
        from mdeploy.devices.android import describe
        from mdeploy.devices.bench import host_info
        from mdeploy.devices.profiles import load_profiles
        from mdeploy.devices.targets import list_devices
        from mdeploy.errors import DeviceError

        profiles = load_profiles()
        server = connect_server()
        rows = []
        for d in list_devices(server):
            entry = {"serial": d.serial, "state": d.state, "model": d.model}
            if d.state == "device":
                try:
                    entry.update(describe(Phone(server, d.serial)))
                except DeviceError as err:
                    entry["error"] = err.message
            else:
                entry["hint"] = STATE_HELP.get(d.state)
            entry["profiles"] = [p.alias for p in profiles.matching(d.serial, entry.get("model"))]
            rows.append(entry)
        host = dict(host_info(), serial="host", state="device", profiles=["host"])
        matched = {a for r in rows for a in r["profiles"]}
        missing = [a for a in profiles.aliases() if a != "host" and a not in matched]
        if json_output:
            emit_json({"ok": True, "server": f"{server.host}:{server.port}", "server_started": server.started,
                       "devices": rows, "host": host, "profiles_not_connected": missing,
                       "profile_files": [str(f) for f in profiles.files]})
            return 0
        table_rows = [["host", "device", host.get("model") or "-", host.get("os") or "-", host.get("abi") or "-",
                       host.get("soc") or "-", "-", "host"]]
        for r in rows:
            battery = f"{r['battery_level']}% {r['battery_temp_c']:.1f}C" if r.get("battery_level") is not None else "-"
            table_rows.append([r["serial"], r["state"], r.get("model") or "-", r.get("android") or "-", r.get("abi") or "-",
                               r.get("soc") or "-", battery, ", ".join(r["profiles"]) or "-"])
        typer.echo(table(["serial", "state", "model", "android", "abi", "soc", "battery", "profiles"], table_rows))
        if not rows:
            from mdeploy.devices.targets import NO_PHONE_HINT

            typer.echo(f"no phone found: {NO_PHONE_HINT}")
        for r in rows:
            if r.get("hint"):
                typer.echo(f"{r['serial']} is {r['state']}: {r['hint']}")
            if r.get("error"):
                typer.echo(f"{r['serial']}: {r['error']}")
        if missing:
            typer.echo(f"profiles with no connected device: {', '.join(missing)}")
        if server.started:
            typer.echo(f"(started an adb server on port {server.port}; it keeps running, as adb's own does)")
        return 0

    guarded(body, json_output=json_output)


class _Progress:
    """A one-line transfer progress bar on stderr (a plain line per file when not a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, name: str, done: int, total: int) -> None:
        if self.tty:
            now = time.monotonic()
            if done < total and now - self.last < 0.1:
                return
            self.last = now
            width = 24
            filled = int(width * done / total) if total else width
            sys.stderr.write(f"\r  {name[:40]:40s} [{'#' * filled}{'.' * (width - filled)}] {human_size(done):>10s}/{human_size(total)}")
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()


# ---------------------------------------------------------------------------- push


@app.command()
def push(
    sources: list[str] = typer.Argument(None, help="A recipe (its build's artifacts) or artifact files.", show_default=False),
    device: list[str] = typer.Option([], "--device", metavar="DEVICE", help=DEVICE_HELP),
    all_: bool = typer.Option(False, "--all", help="Every connected phone."),
    artifact: list[str] = typer.Option([], "--artifact", metavar="ID", help="Artifact id of the recipe's build, e.g. tflite/fp16. Repeatable."),
    benchmark_binary: Path | None = typer.Option(None, "--benchmark-binary", help="TFLite benchmark_model for the device's ABI."),
    out: Path = typer.Option(Path("build"), "--out", help="Folder that holds build/<name>/."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP, metavar="KEY=VALUE"),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Copy artifacts (and the benchmark tool) to phones, verified by sha256.

    Files land in /data/local/tmp/mdeploy/<content hash>/ under a temporary name and are
    renamed once the hash on the device matches; files already there are skipped. Exit 3
    when a device fails (the others still get their files).
    """

    def body() -> int:
        from mdeploy.devices.bench import check_binary, push_all
        from mdeploy.devices.plan import binary_for, resolve_targets, selection

        recipe, _build_dir, items = selection(sources or [], out, set_, artifact, any_file=True)
        targets, server_factory = resolve_targets(device, all_, recipe, default_host=False)
        runs_files = {}
        for target in targets:
            files = [(i.path, False) for i in items]
            binary = binary_for(target, recipe, benchmark_binary)
            if binary is not None:
                files.insert(0, (check_binary(binary, target.profile.abi), True))
            runs_files[target.name] = files
        runs = []
        for target in targets:  # one file list per device (binaries differ by ABI), in parallel below
            runs.append((target, runs_files[target.name]))
        outcomes = []
        if runs:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=len(runs)) as pool:
                futures = [pool.submit(push_all, [t], f, server_factory=server_factory, log=stderr, progress=_Progress()) for t, f in runs]
                outcomes = [f.result()[0] for f in futures]
        failed = [o for o in outcomes if not o.ok]
        if json_output:
            emit_json({"ok": not failed, "devices": [
                {"device": o.target.name, "serial": o.target.serial, "ok": o.ok, "error": o.error, "hint": o.hint,
                 "files": [p.to_json() for p in o.pushed]} for o in outcomes]})
        else:
            rows = [[o.target.name, p.local.name, p.remote, human_size(p.size), "skipped (same hash)" if p.skipped else f"{p.seconds:.2f} s"]
                    for o in outcomes for p in o.pushed]
            if rows:
                typer.echo(table(["device", "file", "on the device", "size", "pushed"], rows))
        return _device_failures(failed, json_output)

    guarded(body, json_output=json_output)


def _device_failures(failed, json_output: bool) -> int:
    if not failed:
        return 0
    for o in failed:
        stderr(f"error: {o.target.name}: {o.error}")
        if o.hint:
            stderr(f"hint: {o.hint}")
    return 3


# ---------------------------------------------------------------------------- bench


@app.command()
def bench(
    sources: list[str] = typer.Argument(None, help="A recipe (its build's artifacts) or artifact files.", show_default=False),
    device: list[str] = typer.Option([], "--device", metavar="DEVICE", help=DEVICE_HELP + " Default: the recipe's devices, else host."),
    all_: bool = typer.Option(False, "--all", help="Every connected phone."),
    artifact: list[str] = typer.Option([], "--artifact", metavar="ID", help="Artifact id of the recipe's build, e.g. tflite/fp16. Repeatable."),
    runs: int | None = typer.Option(None, "--runs", min=1, help="Timed runs per trial (recipe bench.runs, else 50)."),
    warmup: int | None = typer.Option(None, "--warmup", min=0, help="Untimed runs before each trial (else 5)."),
    trials: int | None = typer.Option(None, "--trials", min=1, help="Repeats of the measurement (else 3)."),
    threads: list[int] = typer.Option([], "--threads", min=1, help="Thread count. Repeatable (else recipe, else 1)."),
    delegate: list[str] = typer.Option([], "--delegate", metavar="NAME", help="cpu, xnnpack, gpu or nnapi. Repeatable (else xnnpack)."),
    benchmark_binary: Path | None = typer.Option(None, "--benchmark-binary", help="TFLite benchmark_model for the phones' ABI."),
    mace_run: Path | None = typer.Option(None, "--mace-run", help="MACE's mace_run for the phones' ABI (artifact mace)."),
    mace_model: Path | None = typer.Option(None, "--mace-model", help="Folder of MACE's converted <tag>.pb and <tag>.data."),
    mace_config: Path | None = typer.Option(
        None, "--mace-config", help="The deployment file --mace-model was converted from, if not the build's (checked against the graph)."
    ),
    out: Path = typer.Option(Path("build"), "--out", help="Folder that holds build/<name>/."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP, metavar="KEY=VALUE"),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Measure latency (median, p90, spread over trials) and memory on phones and on the host.

    Results go to build/<name>/bench/<device>.json and the build's manifest. Devices run in
    parallel; exit 3 when one fails (the others' results are kept), exit 1 when a median
    exceeds the recipe's bench.max_latency_ms for that device.
    """

    def body() -> int:
        from mdeploy.devices import results
        from mdeploy.devices.bench import MISSING_BINARY_HINT, BenchSettings, check_binary, run_all
        from mdeploy.devices.plan import binary_for, mace_kit, over_limit, read_manifest, resolve_targets, selection
        from mdeploy.errors import GateFailure, InputError

        recipe, build_dir, items = selection(sources or [], out, set_, artifact)
        section = recipe.bench if recipe is not None else None
        for d in delegate:
            if d not in ("cpu", "xnnpack", "gpu", "nnapi"):
                raise InputError(f"--delegate {d!r}: choose cpu, xnnpack, gpu or nnapi")
        settings = BenchSettings(
            runs=runs or (section.runs if section else 50),
            warmup=warmup if warmup is not None else (section.warmup if section else 5),
            trials=trials or (section.trials if section else 3),
            threads=tuple(threads) or (tuple(section.threads) if section else (1,)),
            delegates=tuple(delegate) or (tuple(section.delegates) if section else ("xnnpack",)),
            timeout=section.timeout_s if section else 600.0,
        )
        targets, server_factory = resolve_targets(device, all_, recipe, default_host=True)
        binaries, kits = {}, {}
        needs_tflite = any(i.format == "tflite" for i in items)
        for target in targets:
            if target.is_host:
                continue
            if build_dir is not None and recipe is not None:
                kits[target.name] = mace_kit(recipe, build_dir, read_manifest(build_dir, str(sources[0])), target, mace_run, mace_model,
                                           mace_config)
            if not needs_tflite:
                continue
            binary = binary_for(target, recipe, benchmark_binary)
            if binary is None:
                raise InputError(f"no benchmark_model for {target.name}" + (f" ({target.profile.abi})" if target.profile.abi else ""),
                                 hint=MISSING_BINARY_HINT)
            binaries[target.name] = check_binary(binary, target.profile.abi)
        outcomes = run_all(targets, items, settings, server_factory=server_factory, binaries=binaries, log=stderr,
                           progress=_Progress(), mace=kits)
        written = {}
        for o in outcomes:
            if o.document is not None and build_dir is not None and o.document["results"]:
                written[o.target.name] = str(results.record(build_dir, o.document))
        over = over_limit(outcomes, section)
        for o in outcomes:  # a configuration the tool could not measure fails the device's run
            if o.ok and o.document is not None and o.document["failures"]:
                first = o.document["failures"][0]
                o.error = f"{len(o.document['failures'])} configuration(s) not measured; first: {first['artifact']} " \
                          f"threads={first['threads']} {first['delegate']}: {first['error']}"
        failed = [o for o in outcomes if not o.ok]
        if json_output:
            emit_json({"ok": not failed and not over, "build_dir": str(build_dir) if build_dir else None, "devices": [
                {"device": o.target.name, "serial": o.target.serial, "ok": o.ok, "error": o.error, "hint": o.hint,
                 "file": written.get(o.target.name), **({"info": o.document["info"], "results": o.document["results"],
                                                         "failures": o.document["failures"]} if o.document else {})}
                for o in outcomes], "over_limit": over})
        else:
            typer.echo(render_bench(outcomes, written))
        code = _device_failures(failed, json_output)
        if code:
            return code
        if over:
            raise GateFailure(f"{len(over)} measurement(s) over bench.max_latency_ms: " + "; ".join(over))
        return 0

    guarded(body, json_output=json_output)


def render_bench(outcomes, written: dict) -> str:
    rows = []
    for o in outcomes:
        if o.document is None:
            rows.append([o.target.name, "-", "-", "-", "-", "-", "-", "-", f"failed: {o.error}"])
            continue
        for r in o.document["results"]:
            lat = r["latency"]
            note = ("throttled: " + "; ".join(r["throttled"])) if r["throttled"] else ""
            memory = f"{r['peak_memory_mb']:.1f} MB" if r.get("peak_memory_mb") else "-"
            rows.append([o.target.name, r["artifact"], str(r["threads"]), r["delegate"], f"{lat['median_ms']:.2f}",
                         f"{lat['p90_ms']:.2f}", f"{lat['spread_pct']:.1f}%", memory, note])
        for f in o.document["failures"]:
            rows.append([o.target.name, f["artifact"], str(f["threads"]), f["delegate"], "-", "-", "-", "-", f"failed: {f['error']}"])
    lines = [table(["device", "artifact", "threads", "delegate", "median ms", "p90 ms", "spread", "peak mem", "notes"], rows)]
    for name, path in written.items():
        from mdeploy.recipe.source import display_path

        lines.append(f"{name}: results in {display_path(Path(path))}")
    return "\n".join(lines)
