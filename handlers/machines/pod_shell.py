"""``pod.shell``: the shell handler with ``on: machine`` by default, under the name roadmap files use.

It keeps the run hooks of the RunPod handlers (a held pod's heartbeat from the first moment of a
run, orphans reaped), and needs no RunPod key: it runs on whichever machine is held.
"""

from __future__ import annotations

from ralph.handlers.facts import MachineHandle
from ralph.handlers.runpod.common import PodHandler
from ralph.handlers.shell import PLACES, ShellHandler

from ralph.facts import Need
from ralph.handler import Param


class PodShell(PodHandler, ShellHandler):
    __doc__ = ShellHandler.__doc__
    name = "pod.shell"
    needs = (Need(MachineHandle),)  # with its default on: machine
    needs_env = {}
    params = {**ShellHandler.params,
              "on": Param(str, "machine", "where the script runs: machine (the one a task holds), or here",
                          choices=PLACES)}
