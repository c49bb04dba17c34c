"""A task file as lines of text that go back to exactly the bytes they came from.

Markdown files come with LF, CRLF, CR or mixed line endings, sometimes a BOM, sometimes no
final newline.  ralph edits them line by line, so it keeps every line's own ending and only
ever replaces whole lines; bytes it did not mean to touch are written back unchanged.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

BOM = "\ufeff"
_LINE = re.compile(r"([^\r\n]*)(\r\n|\r|\n|$)")


class DecodeError(ValueError):
    """The file is not UTF-8; ``line`` is where the first bad byte sits (1-based)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class Text:
    """Lines without their endings, the endings themselves, and whether a BOM led the file."""

    lines: list[str]
    endings: list[str]
    bom: bool = False

    @classmethod
    def decode(cls, data: bytes) -> Text:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            # Count every ending ralph splits on, so a CR-only file names the right line.
            line = len(re.findall(rb"\r\n|\r|\n", data[: error.start])) + 1
            raise DecodeError(line, f"not valid UTF-8 (byte {error.start})") from None
        bom = text.startswith(BOM)
        if bom:
            text = text[1:]
        return cls.split(text, bom=bom)

    @classmethod
    def split(cls, text: str, *, bom: bool = False) -> Text:
        lines: list[str] = []
        endings: list[str] = []
        # Only CR, LF and CRLF end lines here, unlike str.splitlines() which also splits
        # on form feeds and Unicode separators that markdown treats as ordinary text.
        for match in _LINE.finditer(text):
            content, ending = match.groups()
            if not ending and not content and match.start() == len(text):
                break
            lines.append(content)
            endings.append(ending)
        return cls(lines, endings, bom)

    def encode(self) -> bytes:
        body = "".join(chain.from_iterable(zip(self.lines, self.endings, strict=False)))
        return ((BOM if self.bom else "") + body).encode("utf-8")

    @property
    def newline(self) -> str:
        """The ending most lines use: inserted lines take it."""
        counts = Counter(self.endings)
        counts.pop("", None)  # an unterminated last line
        return max(counts, key=lambda e: counts[e]) if counts else "\n"

    def normalised(self) -> str:
        """The text with every ending as ``\\n``: line k here is line k of the file."""
        return "".join(line + "\n" for line in self.lines)

    def replace(self, start: int, stop: int, new_lines: list[str]) -> None:
        """Replace lines ``[start, stop)`` (0-based) by ``new_lines``.

        Replaced lines keep their own endings, added lines take the file's dominant one,
        and a file without a final newline stays without one.
        """
        newline = self.newline
        endings = [newline] * len(new_lines)
        for offset in range(min(len(new_lines), stop - start)):
            endings[offset] = self.endings[start + offset] or newline
        unterminated = bool(self.lines) and not self.endings[-1]
        if unterminated and stop == len(self.lines):
            if new_lines:
                endings[-1] = ""
                if start == len(self.lines):
                    self.endings[start - 1] = newline
            elif start > 0:
                self.endings[start - 1] = ""
        self.lines[start:stop] = new_lines
        self.endings[start:stop] = endings
        self._keep_line_breaks(start - 1, start + len(new_lines))

    def _keep_line_breaks(self, first: int, last: int) -> None:
        """Where lines meet around an edit, keep a CR and an empty LF line from reading as one CRLF.

        Only an added line's ending changes, or failing that the CR line's (to CRLF, the
        same line break), so untouched lines keep their bytes.
        """
        for k in range(max(first, 0), min(last, len(self.lines) - 1)):
            if self.endings[k] == "\r" and not self.lines[k + 1] and self.endings[k + 1] == "\n":
                if k + 1 < last:
                    self.endings[k + 1] = "\r"
                else:
                    self.endings[k] = "\r\n"


def read_text(path: Path) -> tuple[bytes, Text]:
    data = path.read_bytes()
    return data, Text.decode(data)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a crash leaves either the old file or the new one.

    The temporary file sits in the same directory (so ``rename`` stays atomic), is flushed
    to disk before the rename, and takes the old file's permission bits.  A symbolic link is
    followed: the file it points to is replaced and the link stays a link.
    """
    path = Path(os.path.realpath(path))
    directory = path.parent
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".ralph-tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
