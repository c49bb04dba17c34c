"""Step 4 of comfyui.setup: ComfyUI as a background service on the machine's 127.0.0.1:<port>.

Started as one of the machine's services (machines/services.py: its pid and log files are in the
machine's services folder, and releasing the machine stops it), health-checked through an SSH
tunnel (``/system_stats``), started again when its pid is dead. No marker: it is checked live.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ralph.handlers.comfyui.workspace import Layout
from ralph.handlers.machines import services
from ralph.handlers.machines.base import Machine

from ralph.handler import TaskFailed

SERVICE = "comfyui"  # its name among the machine's services
DEFAULT_PORT = 8188  # ComfyUI's own default


def service_pid(provider: Machine, folder: str) -> int | None:
    """The pid of the ComfyUI ralph started, when it is still alive (``folder``: the machine's services)."""
    return services.pid(provider, folder, SERVICE)


def stop_service(provider: Machine, folder: str, grace: float = 10.0) -> bool:
    """Stop the ComfyUI ralph started (TERM, then KILL after ``grace`` s)."""
    return services.stop(provider, folder, SERVICE, grace)


def _stats(url: str) -> dict[str, Any] | None:
    import httpx

    try:
        response = httpx.get(f"{url}/system_stats", timeout=5)
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def ensure_service(provider: Machine, folder: str, layout: Layout, python: str, port: int, args: list[str],
                   timeout: float, log: Callable[[str], None]) -> dict[str, Any]:
    """ComfyUI answering on 127.0.0.1:``port``: the one running, else one started now."""
    from ralph.handlers.machines.forwarding import forward

    pid = service_pid(provider, folder)
    log_file = services.log_file(folder, SERVICE)
    with forward(provider, remote_port=port) as tunnel:
        stats = _stats(tunnel.url)
        started = False
        if stats is None and pid is None:
            argv = [python, "main.py", *args, "--listen", "127.0.0.1", "--port", str(port)]
            pid, started = services.start(provider, folder, SERVICE, argv, layout.comfyui), True
            log(f"started ComfyUI (pid {pid}): {' '.join(argv)}")
        deadline = time.monotonic() + timeout
        while stats is None:
            if time.monotonic() > deadline:
                raise TaskFailed(f"ComfyUI did not answer /system_stats on 127.0.0.1:{port} within {timeout:g} s "
                                 f"({tunnel.error or 'through the SSH tunnel'}); log {log_file}:\n"
                                 f"{services.log_tail(provider, folder, SERVICE)}")
            time.sleep(0.5)
            stats = _stats(tunnel.url)
            if stats is None and pid is not None and service_pid(provider, folder) is None:
                raise TaskFailed(f"ComfyUI (pid {pid}) exited while starting; log {log_file}:\n"
                                 f"{services.log_tail(provider, folder, SERVICE)}")
    system = stats.get("system", {}) if isinstance(stats, dict) else {}
    return {"port": port, "pid": pid, "started": started, "ours": pid is not None,
            "version": system.get("comfyui_version"), "pytorch": system.get("pytorch_version"),
            "devices": [d.get("name") for d in stats.get("devices", []) if isinstance(d, dict)]}
