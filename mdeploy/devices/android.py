"""What mdeploy does on an Android phone: describe it, read its state, push files, run benchmarks."""

from __future__ import annotations

import re
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mdeploy.devices.adb import Phone, check_remote_path, content_digest, quote
from mdeploy.devices.parsers import BenchFailure, parse_benchmark_model, parse_mace_run
from mdeploy.errors import DeviceError

REMOTE_ROOT = "/data/local/tmp/mdeploy"

# One shell call reads every state value; a missing file just leaves its value empty.
_STATE_SCRIPT = """
for f in scaling_governor scaling_cur_freq scaling_max_freq; do
  echo "@$f $(cat /sys/devices/system/cpu/cpu0/cpufreq/$f 2>/dev/null)"
done
for z in /sys/class/thermal/thermal_zone*; do
  echo "@zone $(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null)"
done
echo "@thermal $(dumpsys thermalservice 2>/dev/null | grep -m1 'Thermal Status' | sed 's/[^0-9]//g')"
dumpsys battery 2>/dev/null | sed -n 's/^ *\\(level\\|temperature\\): */@battery_\\1 /p'
"""


def describe(phone: Phone) -> dict:
    """Identity from getprop, plus battery state."""
    props = phone.getprops()
    soc = " ".join(v for v in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model")) if v) or props.get(
        "ro.board.platform"
    ) or props.get("ro.hardware")
    info = {
        "serial": phone.serial,
        "model": props.get("ro.product.model"),
        "manufacturer": props.get("ro.product.manufacturer"),
        "android": props.get("ro.build.version.release"),
        "sdk": props.get("ro.build.version.sdk"),
        "abi": props.get("ro.product.cpu.abi"),
        "soc": soc,
        "fingerprint": props.get("ro.build.fingerprint"),
    }
    state = read_state(phone)
    info["battery_level"] = state.get("battery_level")
    info["battery_temp_c"] = state.get("battery_temp_c")
    return info


def read_state(phone: Phone) -> dict:
    """CPU governor and frequencies, temperatures, thermal status and battery, as the phone reports them."""
    out = phone.shell(_STATE_SCRIPT, doing="reading its state").stdout
    state: dict = {}
    zones = []
    for line in out.splitlines():
        if not line.startswith("@"):
            continue
        key, _, value = line[1:].partition(" ")
        value = value.strip()
        if key == "scaling_governor" and value:
            state["cpu_governor"] = value
        elif key == "scaling_cur_freq" and value.isdigit():
            state["cpu_cur_freq_khz"] = int(value)
        elif key == "scaling_max_freq" and value.isdigit():
            state["cpu_max_freq_khz"] = int(value)
        elif key == "zone":
            parts = value.rsplit(" ", 1)
            if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
                zones.append((parts[0], int(parts[1]) / 1000.0))
        elif key == "thermal" and value.isdigit():
            state["thermal_status"] = int(value)
        elif key == "battery_level" and value.isdigit():
            state["battery_level"] = int(value)
        elif key == "battery_temperature" and re.fullmatch(r"-?\d+", value):
            state["battery_temp_c"] = int(value) / 10.0
    cpu = [t for name, t in zones if "cpu" in name.lower() or "soc" in name.lower()]
    if cpu or zones:
        state["cpu_temp_c"] = max(cpu or [t for _, t in zones])
    return state


# ---------------------------------------------------------------------------- push


@dataclass
class Pushed:
    local: Path
    remote: str
    sha256: str
    size: int
    skipped: bool  # already on the device with the same content
    seconds: float

    def to_json(self) -> dict:
        return {"local": str(self.local), "remote": self.remote, "sha256": self.sha256, "size": self.size,
                "skipped": self.skipped, "seconds": round(self.seconds, 3)}


def remote_path_for(local: Path, sha256: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._+\-]", "_", local.name)
    return check_remote_path(f"{REMOTE_ROOT}/{sha256[:16]}/{name}")


def push_file(phone: Phone, local: Path, *, executable: bool = False,
              progress: Callable[[str, int, int], None] | None = None) -> Pushed:
    """Copy `local` to /data/local/tmp/mdeploy/<content hash>/<name>, verified, atomically.

    The file is written under a temporary name, hashed on the device, and renamed only when
    the hash matches; a file already there with the same hash is not sent again. A transfer
    cut short leaves only a temporary file, which the next push to that folder removes.
    """
    start = time.monotonic()
    sha = content_digest(local)
    size = local.stat().st_size
    remote = remote_path_for(local, sha)
    folder = remote.rsplit("/", 1)[0]
    if phone.sha256(remote) == sha:
        if progress:
            progress(local.name, size, size)
        return Pushed(local, remote, sha, size, True, time.monotonic() - start)
    phone.shell(f"mkdir -p {shlex.quote(folder)} && rm -f {shlex.quote(folder)}/.*.part-*", check=True, doing=f"preparing {folder}")
    temp = check_remote_path(f"{folder}/.{remote.rsplit('/', 1)[1]}.part-{secrets.token_hex(4)}")
    phone.send_file(local, temp, mode=0o755 if executable else 0o644,
                    progress=(lambda done: progress(local.name, done, size)) if progress else None)
    got = phone.sha256(temp)
    if got != sha:
        phone.shell(["rm", "-f", temp], doing="removing a corrupt copy")
        raise DeviceError(f"{local.name} arrived corrupted on {phone.serial} (sha256 {got or 'missing'} instead of {sha[:16]}...)",
                          hint="run the command again; if it keeps failing, check the cable and the phone's free space")
    phone.shell(["mv", "-f", temp, remote], check=True, doing=f"moving {local.name} into place")
    return Pushed(local, remote, sha, size, False, time.monotonic() - start)


# ---------------------------------------------------------------------------- benchmark_model

DELEGATE_FLAGS = {
    "cpu": ["--use_xnnpack=false"],
    "xnnpack": ["--use_xnnpack=true"],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
}


def benchmark_model_argv(binary: str, model: str, *, threads: int, delegate: str, warmup: int, runs: int) -> list[str]:
    """TFLite benchmark_model's command line: exactly `warmup` + `runs` invocations, peak memory reported."""
    return [
        binary,
        f"--graph={model}",
        f"--num_threads={threads}",
        *DELEGATE_FLAGS[delegate],
        f"--warmup_runs={warmup}",
        "--warmup_min_secs=0",
        f"--num_runs={runs}",
        "--min_secs=0",
        "--report_peak_memory_footprint=true",
    ]


def run_benchmark_model(phone: Phone, binary: str, model: str, *, threads: int, delegate: str, warmup: int, runs: int,
                        timeout: float) -> dict:
    argv = benchmark_model_argv(binary, model, threads=threads, delegate=delegate, warmup=warmup, runs=runs)
    result = phone.shell(quote(argv), timeout=timeout, doing=f"running benchmark_model on {Path(model).name}")
    if result.code != 0:
        crashed = " (killed by a signal)" if result.code >= 128 else ""
        raise BenchFailure(f"benchmark_model exited with code {result.code}{crashed}: {result.tail(3) or 'no output'}",
                           hint="run the same command with `adb shell` to see the whole output; is the binary built for this ABI?")
    return parse_benchmark_model(result.stdout + "\n" + result.stderr)


# ---------------------------------------------------------------------------- mace_run


def mace_name(node: str) -> str:
    """How mace_run names a tensor's data file: every character but letters and digits -> '_'."""
    return re.sub(r"[^A-Za-z0-9]", "_", node)


def mace_run_argv(binary: str, *, model_tag: str, input_node: str, input_shape: list[int], output_node: str,
                  output_shape: list[int], model_file: str, data_file: str, input_prefix: str, output_prefix: str,
                  device: str, rounds: int, threads: int) -> list[str]:
    """MACE 1.x mace_run's command line for a model converted with graph and data as files."""
    return [
        binary,
        f"--model_name={model_tag}",
        f"--input_node={input_node}",
        f"--input_shape={','.join(str(d) for d in input_shape)}",
        f"--output_node={output_node}",
        f"--output_shape={','.join(str(d) for d in output_shape)}",
        f"--input_file={input_prefix}",
        f"--output_file={output_prefix}",
        f"--model_file={model_file}",
        f"--model_data_file={data_file}",
        f"--device={device}",
        f"--round={rounds}",
        f"--num_threads={threads}",
    ]


def run_mace_run(phone: Phone, argv: list[str], *, timeout: float) -> dict:
    result = phone.shell(quote(argv), timeout=timeout, doing="running mace_run")
    if result.code != 0:
        crashed = " (killed by a signal)" if result.code >= 128 else ""
        raise BenchFailure(f"mace_run exited with code {result.code}{crashed}: {result.tail(3) or 'no output'}",
                           hint="mace_run must come from the same MACE release as the converted model")
    return parse_mace_run(result.stdout + "\n" + result.stderr)
