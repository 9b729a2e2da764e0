"""Model files by URL: checksum-keyed cache, verification, archives. file:// URLs stand in for
http(s) (the same urllib download path), so no test needs the network."""

from __future__ import annotations

import io
import tarfile

import pytest

from mdeploy.errors import EnvironmentProblem, ModelError
from mdeploy.fsutil import sha256_file
from mdeploy.importers.fetch import fetch, unpack


def test_download_is_verified_cached_and_reused(tmp_path):
    src = tmp_path / "model.pb"
    src.write_bytes(b"model bytes")
    sha = sha256_file(src)
    got = fetch(src.as_uri(), sha, tmp_path / "cache")
    assert got == tmp_path / "cache" / "downloads" / sha / "model.pb"
    assert got.read_bytes() == b"model bytes"
    src.unlink()  # the cache answers without the source
    assert fetch(src.as_uri(), sha, tmp_path / "cache") == got


def test_checksum_mismatch_caches_nothing(tmp_path):
    src = tmp_path / "model.pb"
    src.write_bytes(b"tampered")
    wrong = "ab" * 32
    with pytest.raises(ModelError) as caught:
        fetch(src.as_uri(), wrong, tmp_path / "cache", where="r.yaml:4:10")
    assert caught.value.message == f"checksum mismatch for {src.as_uri()}: its sha256 is not the expected {wrong}"
    assert sha256_file(src) not in caught.value.render()  # a file:// url must not reveal a local file's hash
    assert caught.value.where == "r.yaml:4:10"
    assert not (tmp_path / "cache" / "downloads" / wrong).exists()  # no .part, no empty folder


def test_damaged_cache_entry_is_downloaded_again(tmp_path):
    src = tmp_path / "model.pb"
    src.write_bytes(b"good")
    sha = sha256_file(src)
    cached = fetch(src.as_uri(), sha, tmp_path / "cache")
    cached.write_bytes(b"bad!")
    assert fetch(src.as_uri(), sha, tmp_path / "cache").read_bytes() == b"good"


def test_unreachable_url_is_an_environment_problem(tmp_path):
    with pytest.raises(EnvironmentProblem) as caught:
        fetch((tmp_path / "absent.pb").as_uri(), "ab" * 32, tmp_path / "cache")
    assert caught.value.exit_code == 3
    assert "cannot download" in caught.value.message


def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_archive_unpacks_to_its_single_folder(tmp_path):
    archive = tmp_path / "m.tar.gz"
    _tar(archive, {"exported/saved_model.pb": b"x", "exported/variables/variables.index": b"y"})
    root = unpack(archive)
    assert root.name == "exported" and (root / "saved_model.pb").read_bytes() == b"x"
    assert unpack(archive) == root  # once


def test_archive_escaping_its_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    _tar(archive, {"../../outside.txt": b"x"})
    with pytest.raises(ModelError) as caught:
        unpack(archive)
    assert "member outside its folder" in caught.value.message
    assert not (tmp_path.parent / "outside.txt").exists()
    assert not (tmp_path / "evil.tar.gz.d").exists()
