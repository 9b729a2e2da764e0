"""Hostile and broken inputs end in one clear error within seconds and megabytes (issue 15,
items 5-9): recipes (alias bombs, deep nesting, huge files, FIFOs, devices), model and image
paths, URL downloads (size, deadline, leftovers, archives, checksum messages), `.keras`
archives, image pixel budgets, and a report and bundle that never follow symlinks.

Cases whose failure mode would be a hang or a memory or disk blow-up run in a child process
under resource limits (address space, file size, wall clock), so a regression fails the test
instead of taking the machine with it. HTTP servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import signal
import struct
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from mdeploy.errors import EnvironmentProblem, InputError, ModelError
from mdeploy.fsutil import sha256_file
from tests.helpers import REPO, write

# ---------------------------------------------------------------------------- helpers


def run_bounded(code: str, *args: str, timeout: float = 60, memory: int = 2 << 30, fsize: int = 256 << 20,
                env: dict | None = None) -> dict:
    """Run `code` in a child Python under RLIMIT_AS / RLIMIT_FSIZE; it prints one JSON line."""
    limits = textwrap.dedent(f"""
        import resource, signal
        resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
        resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails (EFBIG) instead of killing
    """)
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    proc = subprocess.run([sys.executable, "-c", limits + textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def fifo(tmp_path):
    """A FIFO nobody writes to: opening it for reading (blocking) would hang forever."""
    path = tmp_path / "pipe.fifo"
    os.mkfifo(path)
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------- item 5: recipes

RECIPE_DRIVER = """
import json, sys, time, resource
from pathlib import Path
from typer.testing import CliRunner
from mdeploy.cli import app

class Hang(Exception):
    pass

def alarm(*_):
    raise Hang()

signal.signal(signal.SIGALRM, alarm)
runner = CliRunner()
out = {}
for case in json.loads(sys.argv[1]):
    name, args = case[0], case[1:]
    start = time.monotonic()
    signal.alarm(15)
    try:
        result = runner.invoke(app, args)
        code, text = result.exit_code, result.output
    except Hang:
        code, text = "hang", ""
    finally:
        signal.alarm(0)
    out[name] = {"code": code, "seconds": round(time.monotonic() - start, 3), "text": text[-600:]}
# peak resident memory of this process since its exec (ru_maxrss would include the forking parent's)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
out["maxrss_mb"] = int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _recipe_cases(tmp_path: Path, fifo: Path) -> list[list[str]]:
    # a billion-laughs alias bomb: 9 lists of 9 references, ten levels deep (9^10 values)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    write(tmp_path / "alias.yaml", "name: bomb\n" + "\n".join(lines) + "\n")
    # anchors nested inside each other through aliases: 3000 levels deep once expanded
    lines = ["b0: &b0 [1]"] + [f"b{i}: &b{i} [*b{i - 1}]" for i in range(1, 3000)]
    write(tmp_path / "alias_deep.yaml", "name: deep\n" + "\n".join(lines) + "\n")
    # merge keys (<<) chained through 3000 anchors: quadratic once expanded
    lines = ["m0: &m0 {k0: 1}"] + [f"m{i}: &m{i} {{<<: *m{i - 1}, k{i}: 1}}" for i in range(1, 3000)]
    write(tmp_path / "merge.yaml", "name: merge\n" + "\n".join(lines) + "\n")
    (tmp_path / "deep.yaml").write_text("name: deep\nmodel: " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "deep_map.yaml").write_text("name: deep\nmodel: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n")
    with open(tmp_path / "huge.yaml", "w") as fh:  # 18 MB of valid YAML
        fh.write("name: huge\ndescription: '" + "x" * (18 << 20) + "'\n")
    os.symlink("/dev/zero", tmp_path / "zero.yaml")
    write(tmp_path / "extends_zero.yaml", "extends: /dev/zero\nname: x\n")
    write(tmp_path / "extends_fifo.yaml", f"extends: {fifo}\nname: x\n")
    write(tmp_path / "extends_huge.yaml", "extends: huge.yaml\nname: x\n")
    for i in range(40):
        write(tmp_path / f"chain{i}.yaml", f"extends: chain{i + 1}.yaml\n")
    ok = write(tmp_path / "ok.yaml", "name: ok\nmodel: {arch: mv2_cpm, input: {size: [96, 96], channels: rgb, range: [0, 1]}}\n")
    return [
        ["alias_bomb", "validate", str(tmp_path / "alias.yaml")],
        ["alias_deep", "validate", str(tmp_path / "alias_deep.yaml")],
        ["merge_chain", "validate", str(tmp_path / "merge.yaml")],
        ["deep_lists", "validate", str(tmp_path / "deep.yaml")],
        ["deep_maps", "validate", str(tmp_path / "deep_map.yaml")],
        ["huge", "validate", str(tmp_path / "huge.yaml")],
        ["dev_zero", "validate", "/dev/zero"],
        ["symlink_to_dev_zero", "validate", str(tmp_path / "zero.yaml")],
        ["fifo", "validate", str(fifo)],
        ["folder", "validate", str(tmp_path)],
        ["extends_dev_zero", "validate", str(tmp_path / "extends_zero.yaml")],
        ["extends_fifo", "validate", str(fifo.parent / "extends_fifo.yaml")],
        ["extends_huge", "validate", str(tmp_path / "extends_huge.yaml")],
        ["extends_chain", "validate", str(tmp_path / "chain0.yaml")],
        ["set_deep", "validate", str(ok), "--set", "model.params.x=" + "[" * 5000 + "]" * 5000],
        ["set_bomb", "validate", str(ok), "--set",
         "model.params.x=" + "{a: &a [1,1,1,1,1,1,1,1,1,1], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
         "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
         "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], f: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]}"],
    ]


def test_hostile_recipes_are_refused_in_seconds_and_megabytes(tmp_path, fifo):
    cases = _recipe_cases(tmp_path, fifo)
    out = run_bounded(RECIPE_DRIVER, json.dumps(cases), timeout=120, memory=1536 << 20)
    expected = {
        "alias_bomb": "values once aliases (*) are expanded",
        "alias_deep": "nested deeper than 64 levels",
        "merge_chain": "values once aliases (*) are expanded",
        "deep_lists": "nested deeper than 64 levels",
        "deep_maps": "nested deeper than 64 levels",
        "huge": "is larger than 1 MiB",
        "dev_zero": "is a character device, not a regular file",
        "symlink_to_dev_zero": "is a character device, not a regular file",
        "fifo": "is a FIFO (named pipe), not a regular file",
        "folder": "is a folder, not a regular file",
        "extends_dev_zero": "extends: base recipe /dev/zero is a character device",
        "extends_fifo": "is a FIFO (named pipe)",
        "extends_huge": "huge.yaml is larger than 1 MiB",
        "extends_chain": "more than 16 recipes in one extends chain",
        "set_deep": "nested deeper than 64 levels",
        "set_bomb": "values once aliases (*) are expanded",
    }
    for name, words in expected.items():
        case = out[name]
        assert case["code"] == 2, (name, case)
        assert words in case["text"], (name, case["text"])
        assert case["seconds"] < 5, (name, case)
        assert "internal error" not in case["text"] and "Recursion" not in case["text"]
    assert out["maxrss_mb"] < 400, out["maxrss_mb"]


def test_limits_can_be_raised_for_one_run(tmp_path, monkeypatch):
    from mdeploy.recipe.source import load_tree

    path = write(tmp_path / "r.yaml", "name: deep\nx: " + "[" * 70 + "]" * 70 + "\n")
    with pytest.raises(InputError, match="nested deeper than 64 levels"):
        load_tree(path)
    monkeypatch.setenv("MDEPLOY_LIMIT_YAML_DEPTH", "100")
    assert load_tree(path)[0]["name"] == "deep"
    monkeypatch.setenv("MDEPLOY_LIMIT_YAML_DEPTH", "lots")
    with pytest.raises(InputError, match="MDEPLOY_LIMIT_YAML_DEPTH='lots' is not an integer"):
        load_tree(path)


IMPORT = """\
name: hostile
model:
  import: {{format: frozen_pb, path: {path}, inputs: [image], outputs: [out]}}
  input: {{size: [64, 64], channels: rgb, range: [0, 1]}}
"""


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "folder_with_fifo", "folder_with_device"])
def test_model_paths_that_are_not_regular_files_are_refused_before_reading(tmp_path, fifo, kind):
    from mdeploy.build import plan_build
    from mdeploy.pipeline import Cache
    from mdeploy.recipe import load_recipe

    model = tmp_path / "m.pb"
    if kind == "fifo":
        model = fifo
    elif kind == "dev_zero":
        os.symlink("/dev/zero", model)
    else:
        model = tmp_path / "saved"
        (model / "variables").mkdir(parents=True)
        (model / "saved_model.pb").write_bytes(b"x")
        if kind == "folder_with_fifo":
            os.mkfifo(model / "variables" / "variables.index")
        else:
            os.symlink("/dev/zero", model / "variables" / "variables.data-00000-of-00001")
    recipe = load_recipe(write(tmp_path / "r.yaml", IMPORT.format(path=model)))
    start = time.monotonic()
    with pytest.raises(InputError) as caught:
        plan_build(recipe, Cache(tmp_path / "cache"))
    assert time.monotonic() - start < 2
    assert caught.value.exit_code == 2
    assert ("FIFO" in caught.value.message or "character device" in caught.value.message), caught.value.message
    assert "r.yaml:3:" in caught.value.where


def test_init_import_of_a_fifo_is_refused(tmp_path, cli):
    os.mkfifo(tmp_path / "model.pb")
    result = cli("init", "demo", "--import", tmp_path / "model.pb", "--dest", tmp_path / "out")
    assert result.exit_code == 2 and "is a FIFO (named pipe), not a regular file or folder" in result.output


def test_release_weights_that_are_a_fifo_are_refused(tmp_path, fifo):
    from mdeploy.build import _init_digest
    from mdeploy.recipe import load_recipe

    recipe = load_recipe(write(tmp_path / "r.yaml", f"""\
        name: init
        model:
          arch: mv2_cpm
          init: {{path: {fifo}}}
          input: {{size: [96, 96], channels: rgb, range: [0, 1]}}
        data: {{train: {{synthetic: {{count: 8}}}}}}
        """))
    with pytest.raises(InputError, match=r"release weights .* is a FIFO \(named pipe\), not a regular file") as caught:
        _init_digest(recipe)
    assert "r.yaml:4:" in caught.value.where


def test_sample_images_that_are_not_regular_files_are_refused(tmp_path, fifo):
    from mdeploy.images import load_rgb

    zero = tmp_path / "zero.png"
    os.symlink("/dev/zero", zero)
    for path, words in ((fifo, "is a FIFO"), (zero, "is a character device"), (Path("/dev/zero"), "is a character device")):
        start = time.monotonic()
        with pytest.raises(InputError, match=words):
            load_rgb(path)
        assert time.monotonic() - start < 2


# ---------------------------------------------------------------------------- item 6: downloads


class _Server:
    """An HTTP server on 127.0.0.1 whose handler behaviour is chosen per path."""

    def __init__(self):
        self.stop = threading.Event()
        stop = self.stop

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                try:
                    getattr(self, "serve_" + self.path.strip("/").split(".")[0])()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def serve_announced(self):  # announces a huge file
                self.send_response(200)
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
                self.wfile.write(b"x" * 1000)

            def serve_unannounced(self):  # no Content-Length, more than the limit
                self.send_response(200)
                self.end_headers()
                for _ in range(20):
                    self.wfile.write(b"x" * 1000)

            def serve_drip_body(self):  # a byte every 0.2 s, forever
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                while not stop.wait(0.2):
                    self.wfile.write(b"x")
                    self.wfile.flush()

            def serve_drip_headers(self):  # a header line every 0.2 s: urlopen itself never returns
                self.wfile.write(b"HTTP/1.0 200 OK\r\n")
                i = 0
                while not stop.wait(0.2):
                    self.wfile.write(f"X-Slow-{i}: y\r\n".encode())
                    self.wfile.flush()
                    i += 1

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    srv = _Server()
    yield srv
    srv.close()


def _no_leftovers(cache: Path) -> None:
    downloads = cache / "downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == []  # no .part, no empty folder


@pytest.mark.parametrize("path, words", [("/announced.pb", "it is 954 MiB, over the limit of 1000 bytes"),
                                         ("/unannounced.pb", "the file is larger, over the limit of 1000 bytes")])
def test_download_stops_at_the_size_limit(tmp_path, server, monkeypatch, path, words):
    from mdeploy.importers.fetch import fetch

    monkeypatch.setenv("MDEPLOY_LIMIT_DOWNLOAD_BYTES", "1000")
    with pytest.raises(ModelError) as caught:
        fetch(server.url + path, "ab" * 32, tmp_path / "cache")
    assert words in caught.value.message and caught.value.exit_code == 2
    assert "MDEPLOY_LIMIT_DOWNLOAD_BYTES" in caught.value.hint
    _no_leftovers(tmp_path / "cache")


def test_local_download_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    from mdeploy.importers.fetch import fetch

    src = tmp_path / "big.pb"
    src.write_bytes(b"x" * 2000)
    monkeypatch.setenv("MDEPLOY_LIMIT_DOWNLOAD_BYTES", "1000")
    with pytest.raises(ModelError, match="over the limit of 1000 bytes"):
        fetch(src.as_uri(), sha256_file(src), tmp_path / "cache")
    _no_leftovers(tmp_path / "cache")


@pytest.mark.parametrize("path", ["/drip_body.pb", "/drip_headers.pb"])
def test_download_has_an_overall_deadline(tmp_path, server, monkeypatch, path):
    from mdeploy.importers.fetch import fetch

    monkeypatch.setenv("MDEPLOY_LIMIT_DOWNLOAD_SECONDS", "1")
    start = time.monotonic()
    with pytest.raises(EnvironmentProblem) as caught:
        fetch(server.url + path, "ab" * 32, tmp_path / "cache", timeout=30)
    assert time.monotonic() - start < 5
    assert "not complete after 1 s" in caught.value.message and caught.value.exit_code == 3
    _no_leftovers(tmp_path / "cache")


def test_file_urls_to_fifos_and_devices_are_refused(tmp_path, fifo):
    from mdeploy.importers.fetch import fetch

    for source, words in ((fifo.as_uri(), "is a FIFO"), ("file:///dev/zero", "is a character device")):
        start = time.monotonic()
        with pytest.raises(ModelError, match=words):
            fetch(source, "ab" * 32, tmp_path / "cache")
        assert time.monotonic() - start < 2
    _no_leftovers(tmp_path / "cache")


def test_part_files_and_empty_folders_of_a_killed_download_are_removed(tmp_path, server):
    """A download killed with SIGKILL leaves its .part; the next download removes it."""
    cache = tmp_path / "cache"
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from mdeploy.importers.fetch import fetch; "
                               "fetch(sys.argv[1], 'cd' * 32, Path(sys.argv[2]))", server.url + "/drip_body.pb", str(cache)],
        cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    folder = cache / "downloads" / ("cd" * 32)
    try:
        deadline = time.monotonic() + 20
        while not any(folder.glob(".*.part-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # well inside the download
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    parts = list(folder.glob(".drip_body.pb.part-*"))
    assert len(parts) == 1 and str(child.pid) in parts[0].name  # what the kill left
    live = cache / "downloads" / ("ef" * 32)  # a download in progress in another (live) process
    live.mkdir()
    (live / f".m.pb.part-{os.getpid()}-0123abcd").write_bytes(b"half")
    (cache / "downloads" / ("01" * 32)).mkdir()  # an empty folder of an older kill

    from mdeploy.importers.fetch import fetch

    src = tmp_path / "good.pb"
    src.write_bytes(b"good")
    fetch(src.as_uri(), sha256_file(src), cache)
    assert not folder.exists() and not (cache / "downloads" / ("01" * 32)).exists()
    assert (live / f".m.pb.part-{os.getpid()}-0123abcd").exists()  # a live process's download is left alone
    assert sorted(p.name for p in (cache / "downloads").iterdir()) == sorted([sha256_file(src), "ef" * 32])


def test_stale_part_named_by_a_dead_process_is_removed(tmp_path):
    from mdeploy.importers.fetch import remove_stale_downloads

    folder = tmp_path / "downloads" / ("ab" * 32)
    folder.mkdir(parents=True)
    (folder / f".m.pb.part-{dead_pid()}-0123abcd").write_bytes(b"half")
    remove_stale_downloads(tmp_path / "downloads")
    assert not folder.exists()


def test_failed_local_checksum_does_not_reveal_the_files_digest(tmp_path):
    from mdeploy.importers.fetch import verify_checksum

    secret = tmp_path / "secret"
    secret.write_bytes(b"private")
    with pytest.raises(ModelError) as caught:
        verify_checksum(secret, "ab" * 32)
    assert sha256_file(secret) not in caught.value.render()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_archives_are_unpacked_within_limits(tmp_path, monkeypatch, suffix):
    from mdeploy.importers.fetch import unpack

    pack = _zip if suffix == ".zip" else _tgz
    cache = tmp_path / "cache"
    many = pack(tmp_path / f"many{suffix}", {f"m/{i}.bin": b"x" for i in range(6)})
    monkeypatch.setenv("MDEPLOY_LIMIT_UNPACK_MEMBERS", "5")
    with pytest.raises(ModelError, match="holds more than 5 members"):
        unpack(many, cache_root=cache)
    monkeypatch.delenv("MDEPLOY_LIMIT_UNPACK_MEMBERS")

    big = pack(tmp_path / f"big{suffix}", {"m/a.bin": os.urandom(3000), "m/b.bin": os.urandom(3000)})
    monkeypatch.setenv("MDEPLOY_LIMIT_UNPACK_BYTES", "5000")
    with pytest.raises(ModelError, match=r"unpacks to more than 4.88 KiB \(at m/b.bin\)"):
        unpack(big, cache_root=cache)
    monkeypatch.delenv("MDEPLOY_LIMIT_UNPACK_BYTES")

    monkeypatch.setattr("mdeploy.limits.RATIO_FLOOR", 1 << 20)
    bomb = pack(tmp_path / f"bomb{suffix}", {"m/zeros.bin": bytes(8 << 20)})  # 8 MiB of zeros in a few KiB
    with pytest.raises(ModelError, match="unpacks to more than 100 times its size"):
        unpack(bomb, cache_root=cache)
    assert [p for p in (cache / "unpacked").iterdir()] == []  # nothing unpacked, no temporary left

    fine = pack(tmp_path / f"fine{suffix}", {"m/a.bin": b"x" * 100})
    assert (unpack(fine, cache_root=cache) / "a.bin").read_bytes() == b"x" * 100


# ---------------------------------------------------------------------------- item 7: .keras


def _raw_zip(path: Path, name: str, deflated: bytes, size: int, crc: int) -> Path:
    """A zip of one member given as raw deflate data (so a 1 GiB member costs no 1 GiB here)."""
    fname = name.encode()
    local = struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 8, 0, 0x21, crc, len(deflated), size, len(fname), 0)
    central = struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 8, 0, 0x21, crc, len(deflated), size,
                          len(fname), 0, 0, 0, 0, 0o644 << 16, 0)
    body = local + fname + deflated
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(fname), len(body), 0)
    path.write_bytes(body + central + fname + end)
    return path


def whitespace_keras(path: Path, gib: int = 1) -> Path:
    """A ~1 MB .keras whose config.json is `gib` GiB of spaces (honest deflate data and CRC)."""
    chunk = b" " * (1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)  # after a full flush every MiB compresses alike
    crc = 0
    for _ in range(1024 * gib):
        crc = zlib.crc32(chunk, crc)
    return _raw_zip(path, "config.json", block * (1024 * gib) + c.flush(), (1024 * gib) << 20, crc)


def test_keras_archive_with_a_gigabyte_of_whitespace_is_refused_quickly(tmp_path):
    from mdeploy.importers.keras import check_keras_archive

    bomb = whitespace_keras(tmp_path / "bomb.keras")
    assert bomb.stat().st_size < 1_100_000
    assert zipfile.ZipFile(bomb).getinfo("config.json").file_size == 1 << 30
    start = time.monotonic()
    with pytest.raises(ModelError, match=r"config.json unpacks to 1 GiB, over the limit of 16 MiB") as caught:
        check_keras_archive(bomb, where="r.yaml:3:5")
    assert time.monotonic() - start < 1
    assert caught.value.where == "r.yaml:3:5" and caught.value.exit_code == 2


def test_keras_import_and_runner_check_the_archive_before_keras_reads_it(tmp_path):
    """Through the importer and the runner (predict, report overlays), in a child process held
    to 1.5 GB of address space: Keras reading the 1 GiB config.json would exceed it."""
    whitespace_keras(tmp_path / "bomb.keras")
    (tmp_path / "notzip.keras").write_bytes(b"not a zip")
    out = run_bounded("""
        import json, sys
        from pathlib import Path
        from mdeploy.errors import ModelError
        from mdeploy.importers.keras import load
        from mdeploy.runners.keras import KerasRunner
        result = {}
        for name in ("bomb.keras", "notzip.keras"):
            path = Path(sys.argv[1]) / name
            for how, call in (("import", lambda: load(None, path, lambda *k: "r.yaml:3:5")), ("runner", lambda: KerasRunner(path))):
                try:
                    call()
                    result[f"{how}:{name}"] = "loaded"
                except ModelError as err:
                    result[f"{how}:{name}"] = err.message
        print(json.dumps(result))
    """, str(tmp_path), memory=1536 << 20)
    for how in ("import", "runner"):
        assert "config.json unpacks to 1 GiB" in out[f"{how}:bomb.keras"]
        assert "is not a Keras 3 .keras file (not a zip archive" in out[f"{how}:notzip.keras"]


def test_a_real_keras_file_passes_the_archive_check(tmp_path):
    from mdeploy.importers.keras import check_keras_archive

    ok = _zip(tmp_path / "m.keras", {"metadata.json": b"{}", "config.json": b"{}", "model.weights.h5": b"\0" * 1000})
    check_keras_archive(ok)


# ---------------------------------------------------------------------------- item 8: images


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that says it is width x height (1-bit grey) with almost no data: a pixel bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">2I5B", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_image_pixel_budget(tmp_path, monkeypatch):
    from PIL import Image

    from mdeploy.images import load_rgb

    start = time.monotonic()
    with pytest.raises(InputError, match="has more than 64,000,000 pixels"):  # Pillow's bomb error, turned into exit 2
        load_rgb(png_header(tmp_path / "bomb.png", 60000, 60000))
    with pytest.raises(InputError, match=r"is 9000x9000 \(81,000,000 pixels\), over the budget of 64,000,000"):
        load_rgb(png_header(tmp_path / "big.png", 9000, 9000))  # under Pillow's own limit: the budget refuses it
    assert time.monotonic() - start < 2
    Image.new("RGB", (20, 10)).save(tmp_path / "small.png")
    assert load_rgb(tmp_path / "small.png").shape == (10, 20, 3)
    monkeypatch.setenv("MDEPLOY_LIMIT_IMAGE_PIXELS", "100")
    with pytest.raises(InputError, match=r"small.png is 20x10 \(200 pixels\), over the budget of 100") as caught:
        load_rgb(tmp_path / "small.png")
    assert "MDEPLOY_LIMIT_IMAGE_PIXELS" in caught.value.hint
    assert Image.MAX_IMAGE_PIXELS >= 64_000_000  # a lower budget never lowers Pillow's own limit for others


def test_predict_refuses_an_image_bomb_with_exit_2(tmp_path, cli, monkeypatch):
    """`mdeploy predict` (the CLI, as a user runs it) on a pixel bomb: exit 2, one message."""
    import mdeploy.predict

    monkeypatch.setattr(mdeploy.predict, "open_predictor", _fake_predictor)  # no model needed to reach the image
    result = cli("predict", tmp_path / "m.tflite", png_header(tmp_path / "bomb.png", 60000, 60000))
    assert result.exit_code == 2, result.output
    assert "has more than 64,000,000 pixels" in result.output and "internal error" not in result.output


def _fake_predictor(artifact, spec=None, camera=None):
    from mdeploy.keypoints import get_keypoint_set

    class Spec:
        keypoints = get_keypoint_set("aic14")
        source: dict = {}

    class Predictor:
        spec = Spec()

    return Predictor()


def test_dataset_readers_apply_the_pixel_budget(tmp_path):
    from PIL import Image

    from mdeploy.data.coco import load_coco
    from mdeploy.data.mpii import load_mpii
    from mdeploy.keypoints import get_keypoint_set

    aic = get_keypoint_set("aic14")
    images = tmp_path / "images"
    images.mkdir()
    png_header(images / "bomb.png", 60000, 60000)
    entry = {"image": "bomb.png", "joints": [[10, 10]] * 16, "joints_vis": [1] * 16, "center": [5, 5], "scale": 1.0}
    (tmp_path / "m.json").write_text(json.dumps([entry]))
    with pytest.raises(InputError, match="bomb.png has more than 64,000,000 pixels"):
        load_mpii(tmp_path / "m.json", images, aic)

    Image.new("RGB", (10, 10)).save(images / "a.jpg")
    kps = [v for i in range(14) for v in (5.0 + i, 5.0, 2)]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100000, "height": 100000}],
            "annotations": [{"id": 1, "image_id": 1, "keypoints": kps, "num_keypoints": 14, "bbox": [1, 1, 5, 5]}],
            "categories": [{"id": 1, "name": "person", "keypoints": list(aic.names)}]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"c.json: image a.jpg is 100000x100000 \(10,000,000,000 pixels\), over the budget"):
        load_coco(tmp_path / "c.json", images, aic)


# ---------------------------------------------------------------------------- item 9: report and bundle


def _hostile_build(tmp_path: Path, fifo: Path) -> Path:
    """A build folder holding, besides its files, what a user or an attacker could put there."""
    build_dir = tmp_path / "build" / "demo"
    (build_dir / "tflite").mkdir(parents=True)
    (build_dir / "manifest.json").write_text('{"schema": "x"}\n')
    (build_dir / "tflite" / "demo_fp32.tflite").write_bytes(b"model")
    (build_dir / "NOTES.txt").write_text("mine")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    os.symlink(secret, build_dir / "passwd")
    os.symlink("/etc/passwd", build_dir / "etc_passwd")
    os.symlink("/dev/zero", build_dir / "zero.bin")
    os.symlink(tmp_path, build_dir / "linked_folder")
    os.rename(fifo, build_dir / "pipe")
    return build_dir


BUNDLE_DRIVER = """
import json, sys, zipfile
from pathlib import Path
from mdeploy.report.bundle import write_bundle
build_dir = Path(sys.argv[1])
first = write_bundle(build_dir, build_dir / "demo.zip")
size1 = first.stat().st_size
second = write_bundle(build_dir, build_dir / "demo.zip")
other = write_bundle(build_dir, build_dir / "again.zip")
print(json.dumps({"names": sorted(zipfile.ZipFile(second).namelist()), "other": sorted(zipfile.ZipFile(other).namelist()),
                  "sizes": [size1, second.stat().st_size], "same": first.read_bytes() == other.read_bytes()}))
"""


def test_bundle_holds_regular_files_only_and_never_itself(tmp_path, fifo):
    build_dir = _hostile_build(tmp_path, fifo)
    out = run_bounded(BUNDLE_DRIVER, str(build_dir), timeout=60, memory=1 << 30, fsize=64 << 20)
    expected = ["demo/NOTES.txt", "demo/manifest.json", "demo/tflite/demo_fp32.tflite"]
    assert out["names"] == expected  # no symlink (/etc/passwd, /dev/zero, a folder), no FIFO, no bundle
    assert out["other"] == expected  # an earlier bundle of this build (demo.zip) is not bundled either
    assert out["sizes"][0] == out["sizes"][1]  # written again inside the build folder: it does not grow


REPORT_DRIVER = """
import json, sys, time
from pathlib import Path
from mdeploy.devices import results
from mdeploy.report import html
from mdeploy.report.manifest import load_manifest
build_dir, staging = Path(sys.argv[1]), Path(sys.argv[2])
out = {}
start = time.monotonic()
html._overlays(build_dir, staging, None)  # regenerating the report: sources come from the old report
out["sources"] = sorted(p.name for p in (staging / "overlays" / "sources").iterdir())
out["bench"] = results.load(build_dir)
out["current"] = html.is_current(build_dir)
out["summary"] = html.previous_summary(build_dir)
try:
    load_manifest(build_dir)
    out["manifest"] = "read"
except Exception as err:
    out["manifest"] = err.message
out["seconds"] = time.monotonic() - start
print(json.dumps(out))
"""


def test_report_never_follows_symlinks_or_reads_devices(tmp_path, fifo):
    from PIL import Image

    build_dir = tmp_path / "build" / "demo"
    sources = build_dir / "report" / "overlays" / "sources"
    sources.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(sources / "real.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    os.symlink("/dev/zero", sources / "zero.png")
    os.symlink(tmp_path / "outside.png", sources / "outside.png")
    os.rename(fifo, sources / "pipe.png")
    (build_dir / "bench").mkdir()
    os.symlink("/dev/zero", build_dir / "bench" / "host.json")
    os.symlink("/dev/zero", build_dir / "report" / "report.json")
    (tmp_path / "elsewhere.json").write_text('{"schema": "mdeploy.manifest/1", "artifacts": []}')
    os.symlink(tmp_path / "elsewhere.json", build_dir / "manifest.json")
    out = run_bounded(REPORT_DRIVER, str(build_dir), str(tmp_path / "staging"), timeout=60, memory=1 << 30, fsize=64 << 20)
    assert out["sources"] == ["real.png"]
    assert out["bench"] == {} and out["current"] is False and out["summary"] == []
    assert "is a symlink, not a regular file" in out["manifest"]
    assert out["seconds"] < 5


def test_artifacts_replaced_by_symlinks_are_not_run_for_overlays(tmp_path):
    from mdeploy.limits import is_plain

    build_dir = tmp_path / "b"
    (build_dir / "model" / "saved_model" / "variables").mkdir(parents=True)
    (build_dir / "model" / "saved_model" / "saved_model.pb").write_bytes(b"x")
    (build_dir / "tflite").mkdir()
    (build_dir / "tflite" / "a.tflite").write_bytes(b"x")
    assert is_plain(build_dir / "tflite" / "a.tflite", build_dir) and is_plain(build_dir / "model" / "saved_model", build_dir)
    os.symlink("/dev/zero", build_dir / "tflite" / "b.tflite")
    os.symlink("/dev/zero", build_dir / "model" / "saved_model" / "variables" / "variables.index")
    assert not is_plain(build_dir / "tflite" / "b.tflite", build_dir)
    assert not is_plain(build_dir / "model" / "saved_model", build_dir)
    os.symlink(build_dir / "tflite", build_dir / "linked")
    assert not is_plain(build_dir / "linked" / "a.tflite", build_dir)
