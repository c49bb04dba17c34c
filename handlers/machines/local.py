"""This machine as a provider: commands run as subprocesses, paths live under a root directory."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from ralph.handlers.machines.base import (
    CommandFailed,
    CommandResult,
    CommandTimeout,
    FileInfo,
    Machine,
    MachineError,
    Progress,
    TransferFailed,
    TransferResult,
)
from ralph.handlers.machines.hashing import CHUNK, HashCache, sha256_file

from ralph import children


class OutsideRoot(MachineError, ValueError):
    """A path that would leave the machine's root: refused like any other machine refuses a path."""


class LocalMachine(Machine):
    """Commands run in ``root`` under bash; remote paths are relative to ``root`` and may not leave it."""

    def __init__(self, root: Path, *, hash_cache: Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.hashes = HashCache(hash_cache)

    def path(self, remote: str) -> Path:
        p = (self.root / remote).resolve()
        if p != self.root and self.root not in p.parents:
            raise OutsideRoot(f"{remote!r} is outside {self.root}")
        return p

    def run(self, command: str, *, check: bool = True, timeout: float | None = None,
            env: Mapping[str, str] | None = None) -> CommandResult:
        # Its own process group, so a timeout kills the command's children too, not just bash.
        try:
            done = children.run(["bash", "-c", command], cwd=self.root, env={**os.environ, **(env or {})},
                                timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            partial = _result(-1, expired.stdout or b"", expired.stderr or b"")
            raise CommandTimeout(command, expired.timeout, partial) from None
        result = _result(done.returncode, done.stdout, done.stderr)
        if check and not result.ok:
            raise CommandFailed(command, result)
        return result

    def file_info(self, remote: str) -> FileInfo | None:
        p = self.path(remote)
        if not p.exists():
            return None
        st = p.stat()
        return FileInfo(size=st.st_size, mtime=st.st_mtime, is_dir=p.is_dir())

    def put(self, local: Path, remote: str, *, progress: Progress | None = None) -> TransferResult:
        return self._copy(Path(local), self.path(remote), progress)

    def get(self, remote: str, local: Path, *, progress: Progress | None = None) -> TransferResult:
        return self._copy(self.path(remote), Path(local).absolute(), progress)

    def _copy(self, src: Path, dst: Path, progress: Progress | None) -> TransferResult:
        """Same contract as the SSH transfers: part file, resume, sha256 check, skip if present."""
        t0 = time.monotonic()
        size = src.stat().st_size
        sha = self.hashes.sha256(src)
        if dst.is_file() and dst.stat().st_size == size and self.hashes.sha256(dst) == sha:
            if progress:
                progress(size, size)
            return TransferResult(str(src), str(dst), size, sha, 0, 0, True, "skip", time.monotonic() - t0)
        dst.parent.mkdir(parents=True, exist_ok=True)
        part = dst.with_name(f".{dst.name}.ralph-part")
        offset = part.stat().st_size if part.exists() else 0
        if offset > size:
            part.unlink()
            offset = 0
        with src.open("rb") as fin, part.open("ab") as fout:
            fin.seek(offset)
            done = offset
            while chunk := fin.read(CHUNK):
                fout.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, size)
        if sha256_file(part) != sha:
            part.unlink()
            raise TransferFailed(f"{dst}: copy does not match {src}; partial data removed, retry")
        os.replace(part, dst)
        self.hashes.record(dst, sha)
        return TransferResult(str(src), str(dst), size, sha, size - offset, offset, False, "copy",
                              time.monotonic() - t0)

    def close(self) -> None:
        """Nothing to release: no connection is held."""


def _result(code: int, out: bytes | bytearray, err: bytes | bytearray) -> CommandResult:
    return CommandResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
