"""`mdeploy bench` and `mdeploy push`: what to measure, on which devices, and how.

Each device runs in its own thread; a device that fails (disconnects, stalls, refuses)
ends with its error while the others go on. On a phone, every artifact (and the benchmark
tool) is pushed content-addressed, then `benchmark_model` runs `trials` times per thread
count and delegate, with the device's state read before and after. On the host, each
configuration runs in a separate Python process (`mdeploy.devices.host_bench`).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mdeploy import __version__
from mdeploy.devices import stats
from mdeploy.devices.parsers import BenchFailure
from mdeploy.devices.results import SCHEMA
from mdeploy.devices.targets import Target
from mdeploy.errors import DeviceError, InputError, MdeployError

HOST_DELEGATES = ("cpu", "xnnpack")
ANDROID_FORMATS = ("tflite", "mace")
HOST_FORMATS = ("tflite", "onnx")
_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64"}
_ABI_MACHINE = {"arm64-v8a": "aarch64", "armeabi-v7a": "arm", "x86_64": "x86_64", "x86": "x86"}


@dataclass(frozen=True)
class BenchSettings:
    runs: int = 50
    warmup: int = 5
    trials: int = 3
    threads: tuple[int, ...] = (1,)
    delegates: tuple[str, ...] = ("xnnpack",)
    timeout: float = 600.0  # seconds one benchmark_model call may go without output

    def to_json(self) -> dict:
        return {
            "runs": self.runs,
            "warmup": self.warmup,
            "trials": self.trials,
            "threads": list(self.threads),
            "delegates": list(self.delegates),
            "timeout_s": self.timeout,
        }


@dataclass(frozen=True)
class Item:
    """One artifact to measure."""

    artifact_id: str | None  # None for a file given on the command line outside a build
    path: Path
    format: str
    sha256: str

    @property
    def label(self) -> str:
        return self.artifact_id or self.path.name


@dataclass
class DeviceRun:
    target: Target
    document: dict | None = None
    error: str | None = None
    hint: str | None = None
    pushed: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


Log = Callable[[str], None]


def check_binary(binary: Path, abi: str | None, what: str = "benchmark_model") -> Path:
    """The local tool exists, is a file, and (when it is an ELF) is built for the device's ABI."""
    if not binary.is_file():
        raise InputError(f"{what} not found: {binary}")
    with open(binary, "rb") as fh:
        head = fh.read(20)
    if head[:4] == b"\x7fELF" and abi in _ABI_MACHINE:
        machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
        built_for = _ELF_MACHINES.get(machine, f"machine {machine}")
        if built_for != _ABI_MACHINE[abi]:
            raise InputError(
                f"{binary} is built for {built_for}, but the device's ABI is {abi}", hint=f"use a {what} built for {abi}"
            )
    elif head[:2] != b"#!" and head[:4] != b"\x7fELF":
        raise InputError(f"{binary} is neither an executable (ELF) nor a script; is it really {what}?")
    return binary


MISSING_BINARY_HINT = (
    "mdeploy never downloads it. Build it from TensorFlow "
    "(`bazel build -c opt --config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model`) or take the "
    "prebuilt nightly for your ABI linked from the TFLite 'Performance measurement' guide; then set "
    "benchmark_binary in devices.yaml, bench.benchmark_binary in the recipe, or pass --benchmark-binary"
)


# ---------------------------------------------------------------------------- host


def host_info() -> dict:
    info = {
        "serial": None,
        "model": platform.node() or "host",
        "os": f"{platform.system()} {platform.release()}",
        "abi": platform.machine(),
        "soc": _cpu_name(),
        "python": platform.python_version(),
    }
    try:
        import os

        info["cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    return info


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def host_state() -> dict:
    state: dict = {}
    cpufreq = Path("/sys/devices/system/cpu/cpu0/cpufreq")
    for name, key in (
        ("scaling_governor", "cpu_governor"),
        ("scaling_cur_freq", "cpu_cur_freq_khz"),
        ("scaling_max_freq", "cpu_max_freq_khz"),
    ):
        try:
            value = (cpufreq / name).read_text().strip()
        except OSError:
            continue
        state[key] = int(value) if value.isdigit() else value
    temps = []
    for zone in Path("/sys/class/thermal").glob("thermal_zone*"):
        try:
            temps.append(int((zone / "temp").read_text()) / 1000.0)
        except (OSError, ValueError):
            continue
    if temps:
        state["cpu_temp_c"] = max(temps)
    try:
        state["load_1min"] = round(float(Path("/proc/loadavg").read_text().split()[0]), 2)
    except (OSError, ValueError, IndexError):
        pass
    return state


def configs(item: Item, settings: BenchSettings, host: bool, mace: MaceKit | None = None) -> list[tuple[int, str]]:
    """(threads, delegate) pairs to measure `item` with (ONNX Runtime: cpu; MACE: its runtimes)."""
    if item.format == "tflite":
        delegates = settings.delegates
    elif item.format == "mace":
        delegates = tuple(f"mace-{r.lower()}" for r in (mace.runtimes if mace else ("CPU",)))
    else:
        delegates = ("cpu",)
    if (host and item.format not in HOST_FORMATS) or (not host and item.format not in ANDROID_FORMATS):
        return []
    return [(threads, delegate) for delegate in delegates for threads in settings.threads]


def bench_host(target: Target, items: list[Item], settings: BenchSettings, log: Log, done: frozenset = frozenset()) -> dict:
    results, failures = [], []
    for item in items:
        for threads, delegate in configs(item, settings, host=True):
            if (item.sha256, threads, delegate) in done:
                continue
            config = {"artifact": item.label, "threads": threads, "delegate": delegate}
            if delegate not in HOST_DELEGATES:
                failures.append(
                    dict(config, error=f"the {delegate} delegate does not exist on the host (only {', '.join(HOST_DELEGATES)})")
                )
                continue
            before = host_state()
            try:
                raw = _host_process(item, threads, delegate, settings)
            except BenchFailure as err:
                failures.append(dict(config, error=err.message))
                log(f"[{target.name}] {item.label} threads={threads} {delegate}: failed: {err.message}")
                continue
            after = host_state()
            latency = stats.summarize(raw["trials_ms"])
            reasons = stats.throttling(before, after, latency["trial_medians_ms"])
            results.append(_result(item, threads, delegate, latency, raw, before, after, reasons))
            log(
                f"[{target.name}] {item.label} threads={threads} {delegate}: median {latency['median_ms']:.2f} ms, "
                f"p90 {latency['p90_ms']:.2f} ms, spread {latency['spread_pct']:.1f}%"
            )
    return _document(target, host_info(), settings, results, failures)


def _host_process(item: Item, threads: int, delegate: str, settings: BenchSettings) -> dict:
    argv = [
        sys.executable,
        "-m",
        "mdeploy.devices.host_bench",
        str(item.path),
        "--format",
        item.format,
        "--threads",
        str(threads),
        "--delegate",
        delegate,
        "--warmup",
        str(settings.warmup),
        "--runs",
        str(settings.runs),
        "--trials",
        str(settings.trials),
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=settings.timeout)
    except subprocess.TimeoutExpired:
        raise BenchFailure(f"the host benchmark of {item.label} took longer than {settings.timeout:g} s") from None
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        raise BenchFailure(f"the host benchmark of {item.label} failed (exit {proc.returncode}): {tail}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchFailure(f"the host benchmark of {item.label} printed no result") from None


# ---------------------------------------------------------------------------- android


@dataclass(frozen=True)
class MaceKit:
    """What running a MACE model on a phone takes: MACE's own runner and converted model."""

    run: Path  # mace_run built for the device's ABI
    model_dir: Path  # MACE's converter output: <tag>.pb and <tag>.data
    tag: str
    input_node: str
    input_shape: tuple[int, ...]
    output_node: str
    output_shape: tuple[int, ...]
    input_range: tuple[float, float]
    runtimes: tuple[str, ...]  # "CPU", "GPU"

    def files(self) -> tuple[Path, Path]:
        graph, data = self.model_dir / f"{self.tag}.pb", self.model_dir / f"{self.tag}.data"
        for path in (graph, data):
            if not path.is_file():
                raise InputError(
                    f"{path} not found: bench.mace_model must be the folder where MACE's converter wrote {self.tag}.pb and {self.tag}.data"
                )
        return graph, data


MACE_MISSING = (
    "MACE runs need MACE's own mace_run and the model converted by MACE's tools (mdeploy builds the "
    "package they convert, not the MACE library): set bench.mace_run and bench.mace_model, or pass "
    "--mace-run and --mace-model"
)


def bench_android(
    target: Target,
    server_factory,
    items: list[Item],
    settings: BenchSettings,
    binary: Path | None,
    log: Log,
    progress=None,
    done: frozenset = frozenset(),
    mace: MaceKit | None = None,
) -> tuple[dict, list]:
    from mdeploy.devices.adb import Phone
    from mdeploy.devices.android import describe, push_file, read_state

    phone = Phone(server_factory(), target.serial)
    info = describe(phone)
    info["profile"] = target.profile.alias
    runnable = [i for i in items if i.format in ANDROID_FORMATS]
    if not runnable:
        raise InputError(f"nothing to benchmark on {target.name}: phones run {', '.join(ANDROID_FORMATS)} artifacts")
    pushed: list = []
    runners: dict[Item, Callable[[int, str], dict]] = {}
    failures: list = []
    tflite_items = [i for i in runnable if i.format == "tflite"]
    if tflite_items:
        if binary is None:
            raise InputError(f"no benchmark_model for {target.name} ({info.get('abi')})", hint=MISSING_BINARY_HINT)
        check_binary(binary, info.get("abi"))
        tool = push_file(phone, binary, executable=True, progress=progress)
        pushed.append(tool)
        for item in tflite_items:
            p = push_file(phone, item.path, progress=progress)
            pushed.append(p)
            runners[item] = _tflite_runner(phone, tool.remote, p.remote, settings)
            log(
                f"[{target.name}] {item.label}: {'already on the device' if p.skipped else f'pushed in {p.seconds:.1f} s'} ({p.remote})"
            )
    for item in (i for i in runnable if i.format == "mace"):
        if mace is None:
            failures += [
                {"artifact": item.label, "threads": t, "delegate": d, "error": MACE_MISSING}
                for t, d in configs(item, settings, host=False, mace=None)
            ]
            continue
        runners[item], more = _mace_runner(phone, mace, info.get("abi"), settings, progress)
        pushed += more
    results = []
    for item in runnable:
        if item not in runners:
            continue
        for threads, delegate in configs(item, settings, host=False, mace=mace):
            if (item.sha256, threads, delegate) in done:
                continue
            config = {"artifact": item.label, "threads": threads, "delegate": delegate}
            before = read_state(phone)
            trials = []
            try:
                for _ in range(settings.trials):
                    trials.append(runners[item](threads, delegate))
            except BenchFailure as err:
                failures.append(dict(config, error=err.message))
                log(f"[{target.name}] {item.label} threads={threads} {delegate}: failed: {err.message}")
                continue
            after = read_state(phone)
            latency = stats.summarize_averages([t["avg_ms"] for t in trials])
            reasons = stats.throttling(before, after, latency["trial_medians_ms"])
            raw = {
                "init_ms": trials[0]["init_ms"],
                "first_ms": trials[0]["first_ms"],
                "trials": trials,
                "peak_memory_mb": max((t.get("peak_memory_mb") or 0.0) for t in trials) or None,
            }
            results.append(_result(item, threads, delegate, latency, raw, before, after, reasons))
            log(
                f"[{target.name}] {item.label} threads={threads} {delegate}: median {latency['median_ms']:.2f} ms "
                f"over {settings.trials} trials (spread {latency['spread_pct']:.1f}%)" + (" THROTTLED" if reasons else "")
            )
    return _document(target, info, settings, results, failures), pushed


def _tflite_runner(phone, tool: str, model: str, settings: BenchSettings):
    from mdeploy.devices.android import run_benchmark_model

    def run(threads: int, delegate: str) -> dict:
        return run_benchmark_model(
            phone,
            tool,
            model,
            threads=threads,
            delegate=delegate,
            warmup=settings.warmup,
            runs=settings.runs,
            timeout=settings.timeout,
        )

    return run


def _mace_runner(phone, kit: MaceKit, abi: str | None, settings: BenchSettings, progress):
    """Push mace_run, the converted model and a random input file; return the per-configuration runner."""
    import tempfile

    import numpy as np

    from mdeploy.devices.android import mace_name, mace_run_argv, push_file, run_mace_run

    check_binary(kit.run, abi, "mace_run")
    graph, data = kit.files()
    with tempfile.TemporaryDirectory(prefix="mdeploy-mace-") as tmp:
        lo, hi = kit.input_range
        values = np.random.default_rng(0).uniform(lo, hi, kit.input_shape).astype("<f4")
        input_file = Path(tmp) / f"model_input_{mace_name(kit.input_node)}"
        input_file.write_bytes(values.tobytes())
        pushed = [
            push_file(phone, kit.run, executable=True, progress=progress),
            push_file(phone, graph, progress=progress),
            push_file(phone, data, progress=progress),
            push_file(phone, input_file, progress=progress),
        ]
    tool, graph_r, data_r, input_r = (p.remote for p in pushed)
    folder = input_r.rsplit("/", 1)[0]

    def run(threads: int, delegate: str) -> dict:
        argv = mace_run_argv(
            tool,
            model_tag=kit.tag,
            input_node=kit.input_node,
            input_shape=list(kit.input_shape),
            output_node=kit.output_node,
            output_shape=list(kit.output_shape),
            model_file=graph_r,
            data_file=data_r,
            input_prefix=f"{folder}/model_input",
            output_prefix=f"{folder}/model_out",
            device=delegate.split("-", 1)[1].upper(),
            rounds=settings.runs,
            threads=threads,
        )
        return run_mace_run(phone, argv, timeout=settings.timeout)

    return run, pushed


# ---------------------------------------------------------------------------- shared


def _result(
    item: Item, threads: int, delegate: str, latency: dict, raw: dict, before: dict, after: dict, reasons: list[str]
) -> dict:
    out = {
        "artifact": item.label,
        "file": item.path.name,
        "format": item.format,
        "sha256": item.sha256,
        "threads": threads,
        "delegate": delegate,
        "latency": latency,
        "init_ms": round(raw.get("init_ms", 0.0), 3),
        "first_ms": round(raw.get("first_ms", 0.0), 3),
        "peak_memory_mb": round(raw["peak_memory_mb"], 2) if raw.get("peak_memory_mb") else None,
        "state": {"before": before, "after": after},
        "throttled": reasons,
    }
    if "trials_ms" in raw:
        out["trials_ms"] = [[round(v, 4) for v in t] for t in raw["trials_ms"]]
    else:
        out["trials"] = raw.get("trials", [])
    return out


def _document(target: Target, info: dict, settings: BenchSettings, results: list, failures: list) -> dict:
    return {
        "schema": SCHEMA,
        "device": target.name,
        "profile": target.profile.alias,
        "info": info,
        "settings": settings.to_json(),
        "mdeploy": __version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": results,
        "failures": failures,
    }


def run_all(
    targets: list[Target],
    items: list[Item],
    settings: BenchSettings,
    *,
    server_factory,
    binaries: dict[str, Path | None],
    log: Log,
    progress=None,
    done: dict[str, frozenset] | None = None,
    mace: dict[str, MaceKit] | None = None,
) -> list[DeviceRun]:
    """Benchmark every target in parallel; each outcome holds its results or its error.

    `done` names, per target, the (artifact sha256, threads, delegate) already measured with
    these settings: they are not measured again.
    """
    done = done or {}
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            log(line)

    def one(target: Target) -> DeviceRun:
        run = DeviceRun(target)
        try:
            skip = done.get(target.name, frozenset())
            if target.is_host:
                run.document = bench_host(target, items, settings, say, skip)
            else:
                run.document, run.pushed = bench_android(
                    target,
                    server_factory,
                    items,
                    settings,
                    binaries.get(target.name),
                    say,
                    progress,
                    skip,
                    (mace or {}).get(target.name),
                )
        except MdeployError as err:
            run.error, run.hint = err.message, err.hint
            say(f"[{target.name}] failed: {err.message}")
        return run

    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        return list(pool.map(one, targets))


def push_all(
    targets: list[Target], files: list[tuple[Path, bool]], *, server_factory, log: Log, progress=None
) -> list[DeviceRun]:
    """Push (file, executable) pairs to every target in parallel."""
    from mdeploy.devices.adb import Phone
    from mdeploy.devices.android import push_file

    def one(target: Target) -> DeviceRun:
        run = DeviceRun(target)
        if target.is_host:
            run.error = "host is this machine: there is nothing to push"
            return run
        try:
            phone = Phone(server_factory(), target.serial)
            for path, executable in files:
                pushed = push_file(phone, path, executable=executable, progress=progress)
                run.pushed.append(pushed)
                log(
                    f"[{target.name}] {path.name}: {'already there' if pushed.skipped else f'{pushed.size / 1e6:.2f} MB in {pushed.seconds:.2f} s'} -> {pushed.remote}"
                )
        except DeviceError as err:
            run.error, run.hint = err.message, err.hint
            log(f"[{target.name}] failed: {err.message}")
        return run

    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        return list(pool.map(one, targets))
