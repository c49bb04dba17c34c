"""Upload throughput over loopback SSH: ralph's transfers beside scp and plain rsync.

    .venv/bin/python bench/upload.py [--size-mib 1024]

Starts the test sshd (tests/far/sshd.py), writes a random file (incompressible, like
safetensors) and prints one table: full uploads per method, bytes re-sent when resuming from
50%, and the time to confirm an already-present file with warm and with cold hash caches.
Loopback on this machine measures CPU cost (ciphers, Python, hashing), not a real link.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ralph.handlers.machines.ssh import SshMachine, SshTarget  # noqa: E402

from tests.far.sshd import start_sshd  # noqa: E402

MiB = 1 << 20


def _random_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 64 * MiB)
            f.write(os.urandom(n))
            left -= n


T = TypeVar("T")


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    args = ap.parse_args()
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="ralph-bench-"))
    server = start_sshd(work / "sshd")
    remote_dir = server.start_dir
    rows: list[tuple[str, str, str, str]] = []

    def row(name: str, seconds: float, sent: int | None, note: str = "") -> None:
        rate = f"{size / seconds / 1e6:8.1f}" if sent is None or sent else "       -"
        rows.append((name, f"{seconds:7.2f}", rate if "confirm" not in name else "       -",
                     ("" if sent is None else f"{sent / MiB:8.1f}") + (f"  {note}" if note else "")))

    try:
        src = work / "model.safetensors"
        _random_file(src, size)
        assert server.client_key is not None  # start_sshd made the client's key
        ssh = SshMachine(SshTarget(server.host, server.port, server.client_key),
                          known_hosts=work / "state" / "known_hosts")
        ssh.run("true")  # pins the host key
        # The references use OpenSSH's defaults, with only the key and the pinned host key.
        base = ["-i", str(server.client_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                *ssh.host_keys.openssh_options(ssh.target.known_hosts_name)]
        dest = f"root@{server.host}:"

        def clean() -> None:
            for p in remote_dir.iterdir():
                p.unlink()

        t, _ = _timed(lambda: subprocess.run(
            ["scp", "-q", "-P", str(server.port), *base, str(src), dest + "scp.bin"], check=True))
        row("scp (default cipher)", t, None)
        clean()
        t, _ = _timed(lambda: subprocess.run(
            ["rsync", "-e", " ".join(["ssh", "-p", str(server.port), *base]), str(src),
             dest + "rsync.bin"], check=True))
        row("rsync (plain)", t, None)
        clean()
        for method in ("rsync", "sftp"):
            (work / "state" / "sha256-cache.json").unlink(missing_ok=True)
            t, r = _timed(lambda: ssh.put(src, f"{method}.bin", method=method))  # noqa: B023 (called at once)
            row(f"ralph {method} (hash+send+verify)", t, r.bytes_sent)
            # Resume: the first half is already there from an interrupted run.
            final = remote_dir / f"{method}.bin"
            final.rename(remote_dir / f".{method}.bin.ralph-part")
            os.truncate(remote_dir / f".{method}.bin.ralph-part", size // 2)
            t, r = _timed(lambda: ssh.put(src, f"{method}.bin", method=method))  # noqa: B023 (called at once)
            row(f"ralph {method} resume from 50%", t, r.bytes_sent, f"resumed_from={r.resumed_from / MiB:.0f} MiB")
        t, r = _timed(lambda: ssh.put(src, "sftp.bin"))
        assert r.skipped
        row("ralph confirm present (warm caches)", t, r.bytes_sent)
        (work / "state" / "sha256-cache.json").unlink()
        shutil.rmtree(server.workdir / "userhome" / ".cache")
        t, r = _timed(lambda: ssh.put(src, "sftp.bin"))
        assert r.skipped
        row("ralph confirm present (cold caches)", t, r.bytes_sent, "hashes both sides")
        ssh.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nupload of {args.size_mib} MiB over loopback SSH (random data, page-cached source)\n")
    print(f"{'method':40} {'seconds':>7} {'MB/s':>8} {'MiB sent':>8}   (MB/s = file size / seconds)")
    for name, secs, rate, sent in rows:
        print(f"{name:40} {secs} {rate} {sent}")


if __name__ == "__main__":
    main()
