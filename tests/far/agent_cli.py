#!/usr/bin/env python3
"""Stand-ins for a coding-agent CLI (``claude -p``, ``codex exec -``): the far side of the
``agent`` handler.  Each reads the prompt on standard input, as those do, and acts::

    agent_cli.py honest     runs the task's ```bash block from the prompt, exits with its status
    agent_cli.py liar       claims success, ticks the task's boxes and sets it DONE in the task file
                            (and adds a note to its **Notes** line), does no work
    agent_cli.py idle       says it is thinking and exits 0
    agent_cli.py hang       starts a child, writes both pids to hang-pids.txt, and never ends
    agent_cli.py crash      prints a traceback and exits 3
    agent_cli.py flood      prints 12 MB (a 1 MB line without a newline, $AGENT_SECRET_TOKEN if
                            passed), then works as honest
    agent_cli.py third-try  fails twice ("error: flaky build, try N"), appending N to agent-tries.txt;
                            the third time, if ralph's notes told it the second failure, works as honest

The try a third-try agent is at comes from ralph's prompt alone (its "### Iteration" notes).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    mode = sys.argv[1]
    prompt = sys.stdin.read()
    return BEHAVIOURS[mode](prompt)


def honest(prompt: str) -> int:
    found = re.search(r"```bash\n(.*?)```", prompt, re.S)
    if found is None:
        print("the prompt holds no bash block: nothing I know how to do")
        return 1
    print("running the task's bash block", flush=True)
    return subprocess.run(["bash", "-e", "-c", found.group(1)]).returncode


def liar(prompt: str) -> int:
    number = re.search(r"^# Task (\d+) of", prompt, re.M).group(1)
    path = Path(re.search(r"the task file `([^`]+)`", prompt).group(1))
    text = path.read_text(encoding="utf-8")
    start = text.index(f"### {number}. ")
    end = text.find("\n### ", start + 1)
    end = len(text) if end < 0 else end
    section = text[start:end].replace("- [ ]", "- [x]").replace("**Status**: IN_PROGRESS", "**Status**: DONE")
    section = section.replace("**Notes**: ", "**Notes**: (agent: all done) ")
    path.write_text(text[:start] + section + text[end:], encoding="utf-8")
    print("All acceptance criteria are met and every test passes. <promise>COMPLETE</promise>")
    return 0


def idle(prompt: str) -> int:
    print("Looking at the task… I will get to it.")
    return 0


def hang(prompt: str) -> int:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    Path("hang-pids.txt").write_text(f"{os.getpid()} {child.pid}\n")
    print("working on it", flush=True)
    while True:
        time.sleep(3600)


def crash(prompt: str) -> int:
    print("Traceback (most recent call last):\n  File \"agent.py\", line 1\nRuntimeError: the agent crashed")
    return 3


def flood(prompt: str) -> int:
    secret = os.environ.get("AGENT_SECRET_TOKEN", "")
    out = sys.stdout
    out.write("x" * 1_000_000 + secret + "y" * 1000 + "\n")
    line = f"progress line with {secret} in it, padded {'.' * 100}\n"
    for _ in range(11_000_000 // len(line)):
        out.write(line)
    out.flush()
    return honest(prompt)


def third_try(prompt: str) -> int:
    attempt = len(re.findall(r"^### Iteration \d+", prompt, re.M)) + 1
    with open("agent-tries.txt", "a", encoding="utf-8") as tries:
        tries.write(f"{attempt}\n")
    if attempt < 3:
        print(f"error: flaky build, try {attempt}")
        return 1
    if "flaky build, try 2" not in prompt:
        print("ralph's notes did not say how the last try failed")
        return 2
    return honest(prompt)


BEHAVIOURS = {"honest": honest, "liar": liar, "idle": idle, "hang": hang, "crash": crash, "flood": flood,
              "third-try": third_try}

if __name__ == "__main__":
    sys.exit(main())
