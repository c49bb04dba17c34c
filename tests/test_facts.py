"""Facts between tasks: ``ralph check`` names a need no earlier task provides, at the task's
line; a published fact is in state.json for the tasks after (and a resumed run); a machine
stops the services started on it when it is released, whatever started them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ralph.handlers.facts import MachineHandle
from ralph.handlers.machines import services, session

from ralph.context import Context
from ralph.facts import Need
from ralph.handler import Handler, Result
from ralph.state import RunState
from tests.engine.project import make_project, task
from tests.waiting import wait_for

SLEEPER = "import time\ntime.sleep(600)\n"


class StartsService(Handler):
    """Starts a long-running program as a service of the held machine, as comfyui.setup starts ComfyUI."""

    name = "test.starts-service"
    needs = (Need(MachineHandle),)

    def run(self, ctx: Context) -> Result:
        handle, machine = session.connect(ctx)
        script = Path(handle.workspace) / "sleeper.py"
        script.write_text(SLEEPER)
        pid = services.start(machine, handle.services_dir, "sleeper", [sys.executable, str(script)], handle.workspace)
        return Result(summary=f"started pid {pid}", data={"pid": pid})


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_check_names_a_task_that_needs_a_machine_no_earlier_task_provides(tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        task(1, "Prepare", handler="step"),
        task(2, "Shell on the pod", handler="pod.shell", params={"timeout": 60}),
        task(3, "Use this machine", handler="machine.local"),
        task(4, "Shell again", handler="pod.shell"),
    )
    text = project.file.read_text().replace("**Handler**: pod.shell\n",
                                            "**Handler**: pod.shell\n\n```bash\ntrue\n```\n")
    project.file.write_text(text)
    result = project.cli("check", project.file.name)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines == [f"{project.file.name}:{_line_of(project.file, '### 2.')}: error: task 2 (pod.shell) needs a "
                     "machine: no earlier task provides one"], lines  # task 4 comes after machine.local
    assert project.cli("run", project.file.name).returncode == 2, "a run is refused before anything starts"
    assert not (tmp_path / ".ralph" / project.file.stem / "state.json").exists()


def test_a_server_parameter_stands_in_for_the_machine_comfyui_run_needs(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Generate", handler="comfyui.run"))
    needs = [line for line in project.cli("check", project.file.name).stdout.splitlines() if "needs" in line]
    assert needs == [f"{project.file.name}:{_line_of(project.file, '### 1.')}: error: task 1 (comfyui.run) needs a "
                     "machine: no earlier task provides one (or give server:, or executor: serverless)"]
    given = make_project(tmp_path / "given", task(1, "Generate", handler="comfyui.run",
                                                  params={"server": "http://127.0.0.1:1"}))
    assert not [line for line in given.cli("check", given.file.name).stdout.splitlines() if "needs" in line]


def test_a_released_machine_stops_the_services_started_on_it(tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        task(1, "Use this machine", handler="machine.local"),
        task(2, "Start a service", handler="starts-service"),
        task(3, "Release", handler="machine.release"),
        config="  starts-service: tests.test_facts:StartsService\n",
    )
    project.run(only=1)
    project.run(only=2)  # a run of its own: the machine comes from the state
    state = RunState(tmp_path / ".ralph" / project.file.stem)
    pid = state.data["tasks"]["2"]["result"]["data"]["pid"]
    handle = MachineHandle.from_record(state.resources.get(MachineHandle.key))
    assert handle is not None and handle.kind == "local", "the machine is a fact in state.json"
    assert alive(pid)
    try:
        project.run(only=3)
        wait_for(lambda: not alive(pid), 30, "the service to stop")
        released = RunState(tmp_path / ".ralph" / project.file.stem)
        assert released.data["tasks"]["3"]["result"]["summary"] == "released this machine; stopped sleeper"
        assert released.resources.get(MachineHandle.key) is None
    finally:
        if alive(pid):
            os.killpg(pid, 9)


def _line_of(path: Path, start: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(start))
