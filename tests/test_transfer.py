"""Uploads and downloads over a real sshd: verified, resumed after drops, skipped when present."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from ralph.handlers.machines import hashing
from ralph.handlers.machines.base import TransferFailed
from ralph.handlers.machines.ssh import SshMachine, SshTarget
from ralph.handlers.machines.transfer import TransferInterrupted

from tests.far.sshd import SshServer, start_sshd

MiB = 1 << 20


def _provider(server: SshServer, state: Path) -> SshMachine:
    return SshMachine(SshTarget(server.host, server.port, server.client_key),
                       known_hosts=state / "known_hosts")


@pytest.fixture
def ssh(sshd: SshServer, tmp_path: Path):
    with _provider(sshd, tmp_path / "state") as p:
        yield p


def _random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("method", ["rsync", "sftp"])
def test_upload_verifies_then_skips_when_present(ssh, sshd, tmp_path, method) -> None:
    src = _random_file(tmp_path / "model.safetensors", 6 * MiB + 123)
    seen: list[tuple[int, int]] = []
    r = ssh.put(src, "models/ckpt/model.safetensors", method=method, progress=lambda d, t: seen.append((d, t)))
    dest = sshd.start_dir / "models/ckpt/model.safetensors"
    assert dest.read_bytes() == src.read_bytes()
    assert (r.method, r.skipped, r.size, r.sha256, r.resumed_from) == (method, False, src.stat().st_size, _sha(src), 0)
    assert r.bytes_sent >= r.size
    assert seen[-1] == (r.size, r.size) and all(t == r.size for _, t in seen)
    assert not list(dest.parent.glob(".*ralph-part"))
    again = ssh.put(src, "models/ckpt/model.safetensors", method=method)
    assert again.skipped and again.bytes_sent == 0 and again.sha256 == r.sha256


def test_changed_destination_is_replaced(ssh, sshd, tmp_path) -> None:
    src = _random_file(tmp_path / "a.bin", 2 * MiB)
    ssh.put(src, "a.bin")
    dest = sshd.start_dir / "a.bin"
    data = bytearray(dest.read_bytes())
    data[1000] ^= 0xFF  # same size, different content: must not be mistaken for present
    dest.write_bytes(bytes(data))
    r = ssh.put(src, "a.bin")
    assert not r.skipped and dest.read_bytes() == src.read_bytes()


def test_caches_spare_rehashing_and_track_changes(ssh, sshd, tmp_path) -> None:
    src = _random_file(tmp_path / "big.bin", 3 * MiB)
    ssh.put(src, "big.bin")
    # Prove the remote cache is what confirms presence: a wrong cached sha256 (with a matching
    # stamp) is believed, so the file is sent again rather than re-hashed.
    entries = list((sshd.workdir / "userhome/.cache/ralph/sha256").iterdir())
    assert len(entries) == 1
    stamp, real = entries[0].read_text().rsplit(" ", 1)
    entries[0].write_text(f"{stamp} {'0' * 64}\n")
    assert not ssh.put(src, "big.bin").skipped
    assert entries[0].read_text().split()[-1] == real.strip()
    # Local cache: reused while unchanged, recomputed once the file is rewritten.
    cache = hashing.HashCache(tmp_path / "c.json")
    cache.record(src, "f" * 64)
    assert cache.sha256(src) == "f" * 64
    src.write_bytes(src.read_bytes())
    assert cache.sha256(src) == _sha(src)


def test_falls_back_to_sftp_and_sha256sum_on_a_bare_remote(tmp_path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in Path("/usr/bin").iterdir():
        if tool.name not in ("rsync", "openssl"):
            (bin_dir / tool.name).symlink_to(tool)
    server = start_sshd(tmp_path / "s", env={"PATH": str(bin_dir)})
    try:
        with _provider(server, tmp_path / "state") as p:
            assert p.run("command -v rsync || command -v openssl", check=False).exit_code != 0
            src = _random_file(tmp_path / "x.bin", MiB)
            r = p.put(src, "x.bin")
            assert r.method == "sftp" and r.sha256 == _sha(src)
            assert (server.start_dir / "x.bin").read_bytes() == src.read_bytes()
            assert p.put(src, "x.bin").skipped
    finally:
        server.stop()


def _drop_when_part_reaches(server: SshServer, part: Path, size: int) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if part.exists() and part.stat().st_size >= size:
                server.drop_connections()
                return
            time.sleep(0.005)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("method", ["rsync", "sftp"])
def test_dropped_upload_resumes_where_it_stopped(ssh, sshd, tmp_path, method) -> None:
    size = 16 * MiB
    src = _random_file(tmp_path / "m.bin", size)
    part = sshd.start_dir / ".m.bin.ralph-part"
    watcher = _drop_when_part_reaches(sshd, part, size // 2)
    with pytest.raises(TransferInterrupted):
        ssh.put(src, "m.bin", method=method, attempts=1, bwlimit=16 * MiB)
    watcher.join()
    kept = part.stat().st_size
    assert size // 2 <= kept < size and not (sshd.start_dir / "m.bin").exists()
    r = ssh.put(src, "m.bin", method=method)
    assert r.resumed_from == kept and r.bytes_sent < size - kept + MiB // 2
    assert (sshd.start_dir / "m.bin").read_bytes() == src.read_bytes()


def test_drop_within_one_call_is_retried(ssh, sshd, tmp_path) -> None:
    size = 8 * MiB
    src = _random_file(tmp_path / "m.bin", size)
    dropped: list[int] = []

    def progress(done: int, total: int) -> None:
        if done >= total * 2 // 3 and not dropped:
            sshd.drop_connections()
            dropped.append(done)

    r = ssh.put(src, "m.bin", method="sftp", progress=progress)
    assert len(dropped) == 1 and not r.skipped
    # A restart would send everything again after the drop; a resume re-sends only what was
    # still in flight when the connection died.
    assert r.bytes_sent < size + dropped[0]
    assert (sshd.start_dir / "m.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("method", ["rsync", "sftp"])
@pytest.mark.parametrize("stale_mib", [2, 4], ids=["half", "full-size"])
def test_stale_partial_from_another_file_is_discarded(ssh, sshd, tmp_path, method, stale_mib) -> None:
    # A full-size part is one rsync would skip without its whole-file check.
    src = _random_file(tmp_path / "m.bin", 4 * MiB)
    (sshd.start_dir / ".m.bin.ralph-part").write_bytes(os.urandom(stale_mib * MiB))
    r = ssh.put(src, "m.bin", method=method)
    # rsync's whole-file check finds the foreign half and resends; ralph's sha256 finds it after SFTP.
    assert (sshd.start_dir / "m.bin").read_bytes() == src.read_bytes() and r.sha256 == _sha(src)
    assert r.resumed_from == 0 or method == "rsync"
    assert ssh.put(src, "m.bin", method=method).skipped  # the remote cache holds the right sha256


@pytest.mark.parametrize("method", ["rsync", "sftp"])
def test_local_file_changed_while_uploading_is_refused(ssh, sshd, tmp_path, method) -> None:
    # The sha256 is taken while sending: a file rewritten meanwhile must not be vouched for.
    src = _random_file(tmp_path / "m.bin", 8 * MiB)
    rewritten: list[int] = []

    def progress(done: int, total: int) -> None:
        if not rewritten and done < total:
            rewritten.append(done)
            with src.open("r+b") as f:
                f.write(os.urandom(MiB))

    with pytest.raises(TransferFailed, match="changed while it was uploaded"):
        ssh.put(src, "m.bin", method=method, progress=progress, bwlimit=16 * MiB)
    assert rewritten and not (sshd.start_dir / "m.bin").exists()


@pytest.mark.parametrize("method", ["rsync", "sftp"])
def test_download_resumes_verifies_and_skips(ssh, sshd, tmp_path, method) -> None:
    remote = _random_file(sshd.start_dir / "out put.png", 5 * MiB)
    local = tmp_path / "dl" / "out put.png"
    local.parent.mkdir()
    (local.parent / ".out put.png.ralph-part").write_bytes(remote.read_bytes()[: 2 * MiB])
    r = ssh.get("out put.png", local, method=method)
    assert local.read_bytes() == remote.read_bytes()
    assert (r.resumed_from, r.bytes_sent, r.sha256) == (2 * MiB, 3 * MiB, _sha(remote))
    assert ssh.get("out put.png", local, method=method).skipped


@pytest.mark.parametrize("method", ["rsync", "sftp"])
def test_nasty_names_transfer_literally(ssh, sshd, tmp_path, method) -> None:
    name = "$(touch pwned) `id` it's; a\nb é.bin"
    src = _random_file(tmp_path / "src.bin", 100_000)
    assert not ssh.put(src, f"d ir/{name}", method=method).skipped
    assert (sshd.start_dir / "d ir" / name).read_bytes() == src.read_bytes()
    back = tmp_path / "back.bin"
    ssh.get(f"d ir/{name}", back, method=method)
    assert back.read_bytes() == src.read_bytes()
    assert not list(sshd.start_dir.rglob("pwned*")) and not list(sshd.workdir.rglob("pwned"))
