"""``ralph new``: the next numbered task file, from a template that runs as it is."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from .errors import RalphError

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


def create_task_file(directory: Path, title: str) -> Path:
    if not title.strip() or "\n" in title:
        raise RalphError("the title must be one non-empty line")
    directory.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in directory.glob("RALPH-*.md") if (m := re.match(r"RALPH-(\d+)", p.name))]
    path = directory / f"RALPH-{max(numbers, default=0) + 1:03d}-{slug(title)}.md"
    with open(path, "x", encoding="utf-8") as out:  # never overwrite a person's file
        out.write(TEMPLATE.format(title=title.strip()))
    return path
