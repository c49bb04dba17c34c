"""``ralph new``: the next numbered task file, from a template that runs as it is."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from .errors import RalphError
from .model import RESULTS_BEGIN, RESULTS_END

TEMPLATE = """\
# RALPH-TASK: {title}

## Overview
What this experiment is for, in a sentence or two.

## Success Criteria
- [ ] The result is written down

## Context
- **Goal**: {title}

## Tasks

### 1. Prepare
**Priority**: HIGH
**Status**: PENDING
**Handler**: shell
**Acceptance Criteria**:
- [ ] `output/notes.txt` exists

```bash
mkdir -p output
echo "prepared for: {title}" > output/notes.txt
```

---

### 2. Review the result
**Priority**: MEDIUM
**Status**: PENDING
**Handler**: manual
**Acceptance Criteria**:
- [ ] A person has read `output/notes.txt`

---

## Constraints
- Keep the cost low

## Exit Conditions
- The result is written down
"""


def slug(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:60] or "task"


def _next_path(directory: Path, name_slug: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in directory.glob("RALPH-*.md") if (m := re.match(r"RALPH-(\d+)", p.name))]
    return directory / f"RALPH-{max(numbers, default=0) + 1:03d}-{name_slug}.md"


def _create(path: Path, text: str) -> Path:
    with open(path, "x", encoding="utf-8") as out:  # never overwrite a person's file
        out.write(text)
    return path


def create_task_file(directory: Path, title: str) -> Path:
    if not title.strip() or "\n" in title:
        raise RalphError("the title must be one non-empty line")
    return _create(_next_path(directory, slug(title)), TEMPLATE.format(title=title.strip()))


_RESULTS = re.compile(rf"\n?{re.escape(RESULTS_BEGIN)}.*?{re.escape(RESULTS_END)}\n?", re.S)
_STATUS = re.compile(r"^(\*\*Status\*\*:[ \t]*)\S+", re.M)
_TICK = re.compile(r"^([ \t]*[-*+][ \t]+)\[[xX]\]", re.M)


def fresh_copy(text: str) -> str:
    """A task file's text as before any run: ralph's results blocks removed, every status PENDING,
    every box unticked; everything a person wrote is kept."""
    text = _RESULTS.sub("\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"
    return _TICK.sub(r"\1[ ]", _STATUS.sub(r"\1PENDING", text))


def copy_task_file(source: Path, directory: Path | None = None) -> Path:
    """``ralph new --from``: the experiment in ``source`` as the next number, ready to run again."""
    try:
        text = source.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RalphError(f"{source}: cannot be read: {error}") from error
    name_slug = re.sub(r"^RALPH-\d+-?", "", source.stem) or "task"
    return _create(_next_path(directory or source.parent, name_slug), fresh_copy(text))
