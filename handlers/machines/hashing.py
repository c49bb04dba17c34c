"""sha256 of local files, and a cache of them that a rewrite of the file invalidates.

Apart from transfer.py so that this machine (``LocalMachine``) verifies its copies without
loading the SSH stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ralph.handlers.machines.base import Progress

from ralph.textfile import write_atomically

CHUNK = 1 << 20


def sha256_file(path: Path, progress: Progress | None = None, start: int = 0) -> str:
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK * 8):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(start + done, total)
    return h.hexdigest()


def file_stamp(st: os.stat_result) -> list[int]:
    # ctime cannot be set back by touch, so an in-place rewrite always invalidates the entry.
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class HashCache:
    """sha256 of local files, reused while (size, mtime, ctime, inode) are unchanged."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def _load(self) -> dict[str, list]:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def lookup(self, path: Path) -> str | None:
        entry = self._load().get(str(path.resolve()))
        if entry and entry[:-1] == file_stamp(path.stat()):
            return entry[-1]
        return None

    def record(self, path: Path, sha256: str, stamp: list[int] | None = None) -> None:
        with self._lock:
            data = self._load()
            data[str(path.resolve())] = [*(stamp or file_stamp(path.stat())), sha256]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps(data).encode())

    def sha256(self, path: Path) -> str:
        if (known := self.lookup(path)) is not None:
            return known
        before = file_stamp(path.stat())
        digest = sha256_file(path)
        if file_stamp(path.stat()) == before:  # changed while hashing: do not cache a torn read
            self.record(path, digest, before)
        return digest

    def sha256_ahead(self, path: Path) -> Callable[[], str]:
        """Start hashing ``path`` in a thread and return what waits for its digest, so the
        caller can send the file meanwhile (hashlib releases the GIL on large reads)."""
        if (known := self.lookup(path)) is not None:
            return lambda: known
        pool = ThreadPoolExecutor(1, thread_name_prefix="sha256")
        future = pool.submit(self.sha256, path)
        pool.shutdown(wait=False)  # the thread ends with the hash
        return future.result
