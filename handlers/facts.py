"""The facts built-in handlers hand each other (see ralph/facts.py): a machine, the ComfyUI
server set up on it, the images a workflow made, what judging them found, and how long a
rented machine was held."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralph.facts import Fact

if TYPE_CHECKING:  # paramiko loads when a machine is reached, not when a handler is
    from ralph.handlers.machines.ssh import SshTarget


@dataclass(frozen=True)
class MachineHandle(Fact):
    """What tasks need to reach a machine: a pod, an SSH host or this machine (``kind``)."""

    key = "machine"
    what = "a machine"

    id: str
    name: str
    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    workspace: str  # "" : where SSH sessions start
    state_base: str  # where the machine's watchdog keeps its files (heartbeat.watch_dir)
    heartbeat_interval_s: float
    gpu: str = ""
    cost_per_hr: float = 0.0
    created_at: float = 0.0  # epoch seconds: the create call returned
    ready_at: float = 0.0  # epoch seconds: ssh true first answered
    kind: str = "runpod"  # or "ssh" (an existing machine) or "local" (this one): see owned.py

    def target(self) -> SshTarget:
        from ralph.handlers.machines.ssh import SshTarget

        return SshTarget(self.host, int(self.port), Path(self.key_file), user=self.user, alias=self.id,
                         workdir=self.workspace or None)

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def services_dir(self) -> str:
        """Where the machine records the services ralph started on it (pid and log files)."""
        return posixpath.join(self.workspace or ".", ".ralph", "services")


@dataclass(frozen=True)
class ComfyServer(Fact):
    """ComfyUI running on a machine's 127.0.0.1:``port``, installed in ``folder``."""

    key = "comfyui"
    what = "a ComfyUI server"

    machine: str  # the id of the machine it runs on
    port: int
    folder: str  # ComfyUI's folder on the machine: models/, input/, output/ are under it
    version: str | None = None
    files: list[str] = field(default_factory=list)  # the names of the model files and inputs placed
    # How comfyui.setup started it (empty: ralph did not), so comfyui.run can start it again.
    python: str = ""
    args: list[str] = field(default_factory=list)
    start_timeout: float = 180.0
    # What ran, for the session's record: torch's version and each placed file's sha256 ("": unknown),
    # ComfyUI's commit and tag and each custom node's commit ("": not a git checkout), and why the
    # ComfyUI that ran is not known to be the pinned one ("": it is, or nothing was pinned).
    torch: str | None = None
    sha256: dict[str, str] = field(default_factory=dict)
    commit: str = ""
    tag: str = ""
    custom_nodes: dict[str, str] = field(default_factory=dict)
    unpinned: str = ""


@dataclass(frozen=True)
class Images(Fact):
    """Images a workflow made, downloaded here: each with its path (as ralph writes paths for
    people), its variant and the parameters it was made with."""

    key = "images"
    what = "a set of images"

    images: list[dict[str, Any]]
    workflow: dict[str, Any] = field(default_factory=dict)  # the workflow's parameter values
    lint: list[str] = field(default_factory=list)  # the workflow check's warnings


@dataclass(frozen=True)
class Evaluation(Fact):
    """What judging the images found: their ranking and the best one's measures against the
    previous session's image."""

    key = "evaluation"
    what = "an evaluation of images"

    ranking: list[dict[str, Any]]
    previous: dict[str, Any] | None = None
    grain: dict[str, Any] | None = None
    colour: dict[str, Any] | None = None
    face: dict[str, Any] | None = None
    comparison: str | None = None  # the before/after picture
    success: bool | None = None
    gallery: dict[str, str] | None = None  # every variant × seed: {"png": …, "html": …}
    ranked: bool = False  # the ranking rests on measures ("best" means something only then)


@dataclass(frozen=True)
class MachineTime(Fact):
    """How long a rented machine was held, from its creation to its deletion."""

    key = "machine_time"
    what = "a machine's time"

    hours: float
