"""Resumable, verified file transfers between this machine and a provider's machine.

Every transfer writes to a hidden ``.<name>.ralph-part`` beside the destination, appends to
whatever an interrupted earlier run left there, checks size and sha256 against the source,
and only then renames it into place, so a destination path never holds a partial file.
Upload engines: rsync over OpenSSH (``--append-verify``, no compression, AES-GCM, the
provider's key/port/pinned host key) when both sides have rsync, else pipelined SFTP with a
large window. A destination that already holds the same size and sha256 is skipped; sha256s
are cached against (size, mtime, ctime) on both sides, so confirming an unchanged multi-GB
file costs a stat and one round trip instead of a full re-hash.

An upload hashes the local file in a thread while it sends. rsync verifies its copy against
the sender's whole-file checksum itself (``--append-verify`` resends the file on a mismatch),
so the remote side then only records the sha256 instead of reading the file a second time; an
SFTP copy, and a part rsync skipped as already full-size, are hashed on the remote side.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import paramiko
from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.base import MachineError, Progress, TransferFailed, TransferResult
from ralph.handlers.machines.hashing import CHUNK, file_stamp, sha256_file

from ralph import children

if TYPE_CHECKING:
    from ralph.handlers.machines.ssh import SshMachine

Method = Literal["auto", "rsync", "sftp"]
# rsync exit codes that mean the link or the far side went away: worth resuming.
_RSYNC_INTERRUPTED = {10, 12, 20, 30, 35, 255}
_PROGRESS = re.compile(rb"^\s*([\d,]+)\s+\d+%")
_SENT = re.compile(r"Total bytes sent: ([\d,]+)")


class TransferInterrupted(MachineError):
    """The connection dropped mid-transfer; the partial file stays and a rerun resumes it."""

    def __init__(self, message: str, sent: int = 0):
        super().__init__(message)
        self.sent = sent  # payload bytes that crossed the link before the drop


def part_name(path: str) -> str:
    head, tail = posixpath.split(path)
    return posixpath.join(head, f".{tail}.ralph-part")


# -- the remote side --------------------------------------------------------------------------
# Shell functions shared by the remote scripts; file names only ever arrive as "$1" from quoted
# assignments, and hashing reads stdin so odd names cannot alter the output format. OpenSSL's
# sha256 is preferred where installed: about 4x faster than coreutils' sha256sum (no SHA-NI),
# which matters when verifying a 6.5 GB checkpoint on the pod.
_SH_LIB = r"""
_r_hash() { if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; else sha256sum; fi; }
_r_cache() { k=$(realpath -m -- "$1" | sha256sum); printf '%s/%s' "$HOME/.cache/ralph/sha256" "${k%% *}"; }
_r_stat() { stat -c '%s %.9Y %.9Z %i' -- "$1"; }
_r_store() { c=$(_r_cache "$1"); mkdir -p "${c%/*}" && printf '%s %s\n' "$3" "$2" > "$c.$$" && mv -f -- "$c.$$" "$c"; }
_r_cached() { c=$(_r_cache "$1"); [ -f "$c" ] || return 1; read -r s m t i h < "$c"; [ "$s $m $t $i" = "$(_r_stat "$1")" ] && printf '%s\n' "$h"; }
_r_sha() {
  _r_cached "$1" && return 0
  s0=$(_r_stat "$1") && h=$(_r_hash < "$1") || return 1
  h=${h%% *}; [ "$(_r_stat "$1")" = "$s0" ] && _r_store "$1" "$h" "$s0"; printf '%s\n' "$h"
}
"""  # noqa: E501 (a shell script's lines)


def _remote(ssh: SshMachine, script: str, **values: str) -> str:
    return ssh.run(_SH_LIB + remote_shell.assign(**values) + script, timeout=None).stdout


@dataclass(frozen=True)
class _RemoteState:
    size: int | None
    sha256: str | None  # only when the remote cache still matches the file
    part: int | None
    rsync: bool


def _probe(ssh: SshMachine, path: str, part: str) -> _RemoteState:
    out = _remote(ssh, """
if [ -f "$f" ]; then echo "size $(stat -c %s -- "$f")"; h=$(_r_cached "$f") && echo "sha256 $h"; fi
[ -f "$p" ] && echo "part $(stat -c %s -- "$p")"
command -v rsync >/dev/null 2>&1 && echo rsync
true""", f=path, p=part)
    fields = dict((line.split(" ", 1) + [""])[:2] for line in out.splitlines() if line)
    return _RemoteState(size=int(fields["size"]) if "size" in fields else None,
                        sha256=fields.get("sha256"),
                        part=int(fields["part"]) if "part" in fields else None,
                        rsync="rsync" in fields)


def remote_sha256(ssh: SshMachine, remote: str) -> str:
    """sha256 of a remote file, from the remote cache when the file is unchanged."""
    return _remote(ssh, '_r_sha "$f"', f=ssh.path(remote)).strip()


# -- engines ----------------------------------------------------------------------------------
def _rsync(ssh: SshMachine, src: str, dst: str, size: int, progress: Progress | None,
           bwlimit: int | None) -> int:
    """One rsync run appending to ``dst``; returns bytes rsync sent over the link."""
    argv = ["rsync", "-s", "--partial", "--append-verify", "--stats", "--info=progress2",
            "--timeout=120", "-e", shlex.join(ssh.openssh_args())]
    if bwlimit:
        argv.append(f"--bwlimit={max(1, bwlimit // 1024)}")
    argv += [src, dst]
    with tempfile.TemporaryFile() as err, children.running(
        argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL
    ) as proc:  # rsync and its ssh: one group, which dies with ralph
        output = bytearray()
        pending = b""
        first = last = None
        stdout = cast(io.BufferedReader, proc.stdout)  # stdout=PIPE
        while data := stdout.read1(1 << 16):
            output += data
            *pieces, pending = re.split(rb"[\r\n]", pending + data)
            for piece in pieces:
                if m := _PROGRESS.match(piece):
                    last = min(int(m.group(1).replace(b",", b"")), size)
                    first = last if first is None else first
                    if progress:
                        progress(last, size)
        code = proc.wait()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace").strip()
    if "Host key verification failed" in stderr:
        raise MachineError(f"rsync refused the host key of {ssh.target.known_hosts_name}: {stderr}")
    if code in _RSYNC_INTERRUPTED:
        # No --stats after a drop: count what the progress lines showed moving.
        raise TransferInterrupted(f"rsync interrupted (exit {code}): {stderr}",
                                  (last or 0) - (first or 0))
    if code != 0:
        raise MachineError(f"rsync failed (exit {code}): {stderr}")
    sent = _SENT.search(output.decode("utf-8", "replace"))
    return int(sent.group(1).replace(",", "")) if sent else 0


class _Throttle:
    def __init__(self, rate: int | None):
        self.rate, self.t0, self.n = rate, time.monotonic(), 0

    def __call__(self, n: int) -> None:
        self.n += n
        if self.rate and (ahead := self.n / self.rate - (time.monotonic() - self.t0)) > 0:
            time.sleep(ahead)


def _dropped(ssh: SshMachine, e: BaseException) -> bool:
    """A connection failure, as opposed to an SFTP status error such as permission denied."""
    return isinstance(e, (EOFError, paramiko.SSHException, ConnectionError)) or not ssh.transport_alive()


def _sftp_put(ssh: SshMachine, local: Path, part: str, size: int, offset: int,
              progress: Progress | None, bwlimit: int | None) -> int:
    def open_ends(sftp: paramiko.SFTPClient) -> tuple[Any, Any]:
        src, dst = local.open("rb"), sftp.open(part, "r+b" if offset else "wb")
        dst.set_pipelined(True)  # acks are collected lazily instead of one round trip per 32 KiB
        src.seek(offset)
        dst.seek(offset)
        return src, dst

    return _sftp_copy(ssh, open_ends, "upload", size, offset, progress, bwlimit)


def _sftp_get(ssh: SshMachine, remote: str, part: Path, size: int, offset: int,
              progress: Progress | None, bwlimit: int | None) -> int:
    def open_ends(sftp: paramiko.SFTPClient) -> tuple[Any, Any]:
        src, dst = sftp.open(remote, "rb"), part.open("ab")
        src.seek(offset)
        src.prefetch(size)  # many reads in flight: the download mirror of pipelining
        return src, dst

    return _sftp_copy(ssh, open_ends, "download", size, offset, progress, bwlimit)


def _sftp_copy(ssh: SshMachine, open_ends: Callable[[paramiko.SFTPClient], tuple[Any, Any]], what: str,
               size: int, offset: int, progress: Progress | None, bwlimit: int | None) -> int:
    """Copy the rest of the file between the two ends ``open_ends`` gives, both already at
    ``offset``; a dropped connection becomes TransferInterrupted with the bytes that arrived."""
    throttle = _Throttle(bwlimit)
    done = offset
    try:
        src, dst = open_ends(ssh.sftp())
        with src, dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
                done += len(chunk)
                throttle(len(chunk))
                if progress:
                    progress(done, size)
    except (EOFError, OSError, paramiko.SSHException) as e:
        if not _dropped(ssh, e):
            raise
        ssh.close()
        raise TransferInterrupted(f"SFTP {what} interrupted at a connection drop: {e}", done - offset) from e
    return size - offset


def _engine(method: Method, remote_rsync: bool) -> str:
    if method != "auto":
        return method
    return "rsync" if remote_rsync and shutil.which("rsync") else "sftp"


def _retrying(attempts: int, step, resume_point):
    """Run ``step(offset)`` until it completes, resuming from ``resume_point()`` after drops."""
    sent = 0
    for attempt in range(1, attempts + 1):
        try:
            return sent + step(resume_point())
        except TransferInterrupted as e:
            sent += e.sent
            if attempt == attempts:
                e.sent = sent
                raise
            time.sleep(min(2 ** attempt * 0.25, 5))
    raise AssertionError("unreachable")


# -- public API ---------------------------------------------------------------------------------
def upload(ssh: SshMachine, local: Path, remote: str, *, progress: Progress | None = None,
           method: Method = "auto", attempts: int = 3, bwlimit: int | None = None) -> TransferResult:
    """Copy ``local`` to ``remote`` on ``ssh``'s machine; ``bwlimit`` is in bytes/s.

    Raises ``TransferInterrupted`` when the link keeps dropping (``attempts`` runs); the
    partial file stays, and the next call resumes it.
    """
    t0 = time.monotonic()
    local = local.resolve()
    stat0 = os.stat(local)
    size = stat0.st_size
    local_sha = ssh.hashes.sha256_ahead(local)
    dest = ssh.path(remote)
    part = part_name(dest)
    state = _probe(ssh, dest, part)
    if state.size == size and (state.sha256 or remote_sha256(ssh, dest)) == (sha := local_sha()):
        if progress:
            progress(size, size)
        return TransferResult(str(local), dest, size, sha, 0, 0, True, "skip", time.monotonic() - t0)
    engine = _engine(method, state.rsync)
    resumed_from = state.part if state.part is not None and state.part <= size else 0
    _remote(ssh, 'mkdir -p -- "$(dirname -- "$f")"; [ -f "$p" ] && [ "$(stat -c %s -- "$p")" -gt "$n" ] '
                 '&& rm -f -- "$p"; true', f=dest, p=part, n=str(size))

    def part_size() -> int:
        return int(_remote(ssh, '[ -f "$p" ] && stat -c %s -- "$p" || echo 0', p=part))

    # rsync checks the whole file it appended to against the sender's checksum (and resends it on a
    # mismatch), so its copy needs no second reading on the remote side: only its size is checked
    # and the local sha256 recorded. But rsync skips a part that is already full-size, unchecked:
    # that one, like an SFTP copy, is hashed there.
    rsync_checked = False
    if engine == "rsync":
        def step(offset: int) -> int:
            nonlocal rsync_checked
            sent = _rsync(ssh, str(local), ssh.rsync_spec(part), size, progress, bwlimit)
            rsync_checked = offset < size
            return sent
    else:
        def step(offset: int) -> int:
            return _sftp_put(ssh, local, part, size, offset, progress, bwlimit)

    sent = 0
    for fresh in (False, True):
        sent += _retrying(attempts, step, part_size)
        sha = local_sha()
        if file_stamp(os.stat(local)) != file_stamp(stat0):
            raise TransferFailed(f"{local} changed while it was uploaded; run again to send the new version")
        check = ('[ "$(stat -c %s -- "$p")" = "$n" ] && h=$want || exit 1' if rsync_checked
                 else 'h=$(_r_hash < "$p") && h=${h%% *} || exit 1')
        verdict = _remote(ssh, check + """
if [ "$h" != "$want" ]; then rm -f -- "$p"; echo "mismatch $h"; exit 0; fi
mv -f -- "$p" "$f" && _r_store "$f" "$h" "$(_r_stat "$f")" && echo ok""", p=part, f=dest, want=sha,
                          n=str(size)).strip()
        if verdict == "ok":
            return TransferResult(str(local), dest, size, sha, sent, resumed_from, False, engine,
                                  time.monotonic() - t0)
        if fresh:
            break
        resumed_from = 0  # the partial data was not this file's: start over once
    raise TransferFailed(f"{dest}: uploaded copy does not match {local} ({verdict}, want {sha})")


def download(ssh: SshMachine, remote: str, local: Path, *, progress: Progress | None = None,
             method: Method = "auto", attempts: int = 3, bwlimit: int | None = None) -> TransferResult:
    """Copy ``remote`` from ``ssh``'s machine to ``local``, resuming and verifying like ``upload``."""
    t0 = time.monotonic()
    src = ssh.path(remote)
    local = local.absolute()
    state = _probe(ssh, src, part_name(src))
    if state.size is None:
        raise FileNotFoundError(f"{ssh.target.known_hosts_name}:{src}")
    size = state.size
    sha = state.sha256 or remote_sha256(ssh, src)
    if local.is_file() and local.stat().st_size == size and ssh.hashes.sha256(local) == sha:
        if progress:
            progress(size, size)
        return TransferResult(src, str(local), size, sha, 0, 0, True, "skip", time.monotonic() - t0)
    local.parent.mkdir(parents=True, exist_ok=True)
    part = local.with_name(f".{local.name}.ralph-part")
    if part.exists() and part.stat().st_size > size:
        part.unlink()
    resumed_from = part.stat().st_size if part.exists() else 0
    engine = _engine(method, state.rsync)

    def part_size() -> int:
        return part.stat().st_size if part.exists() else 0

    if engine == "rsync":
        def step(offset: int) -> int:
            _rsync(ssh, ssh.rsync_spec(src), str(part), size, progress, bwlimit)
            return size - offset  # what rsync --stats counts as "sent" is the request side here
    else:
        def step(offset: int) -> int:
            return _sftp_get(ssh, src, part, size, offset, progress, bwlimit)

    sent = 0
    for fresh in (False, True):
        sent += _retrying(attempts, step, part_size)
        got = sha256_file(part)
        if got == sha:
            os.replace(part, local)
            ssh.hashes.record(local, sha)
            return TransferResult(src, str(local), size, sha, sent, resumed_from, False, engine,
                                  time.monotonic() - t0)
        part.unlink()
        if fresh:
            break
        resumed_from = 0
    raise TransferFailed(f"{local}: downloaded copy does not match {src} (got {got}, want {sha})")
