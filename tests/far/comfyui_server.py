"""A real ComfyUI server (v0.3.75, CPU) on 127.0.0.1 for tests.

ComfyUI itself is installed outside the repository by ``install_comfyui.sh``; the models
are the tiny random ones of ``tiny_models.py``; the InstantID nodes are the stand-ins of
``comfy_nodes/``. Each server gets its own ``--base-directory`` (models linked, custom
nodes copied, fresh input/output), so tests can read the server's output folder directly.

Use the session fixture ``comfyui_server`` (one shared server), or :func:`start_server` for
a private one a test may kill. Without an install the fixture skips, except under
``CI=true``, where a missing install is a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from . import tiny_models

NODES_DIR = Path(__file__).resolve().parent / "comfy_nodes"
INSTALL_SCRIPT = Path(__file__).resolve().parent / "install_comfyui.sh"
START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def installed(home: Path) -> bool:
    return (home / ".ralph-installed").is_file() and (home / "ComfyUI" / "main.py").is_file()


@dataclass
class ComfyServer:
    """A running ComfyUI process and the folders it reads and writes."""

    url: str
    port: int
    base: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: object = field(repr=False, default=None)

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Die at once, as a pod that vanishes would."""
        if self.alive():
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


def prepare_base(base: Path, models: Path) -> None:
    base.mkdir(parents=True, exist_ok=True)
    (base / "models").symlink_to(models / "models", target_is_directory=True)
    # Copied, not linked: ComfyUI writes __pycache__ beside them, and uploads into input/.
    shutil.copytree(NODES_DIR, base / "custom_nodes", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(models / "input", base / "input")
    for name in ("output", "temp", "user"):
        (base / name).mkdir()


def start_server(base: Path, home: Path | None = None, port: int | None = None,
                 timeout: float = START_TIMEOUT_S) -> ComfyServer:
    """Start ComfyUI with its own base directory ``base`` (created; must not exist) and
    return once ``/system_stats`` answers. Raises RuntimeError with the log's tail if the
    process dies or does not answer within ``timeout`` seconds."""
    home = home or tiny_models.comfyui_home()
    models = tiny_models.ensure_models(home)
    prepare_base(base, models)
    port = port or free_port()
    log_path = base / "server.log"
    log = open(log_path, "wb")
    cmd = [
        str(home / "venv" / "bin" / "python"), "main.py", "--cpu", "--listen", "127.0.0.1",
        "--port", str(port), "--base-directory", str(base), "--disable-auto-launch",
        "--disable-api-nodes", "--dont-print-server",
        # The default database path is inside the shared install; each server keeps its own.
        "--database-url", f"sqlite:///{base / 'user' / 'comfyui.db'}",
    ]
    # Offline: nothing may try a hub; tqdm bars would only bloat the log.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
           "TQDM_DISABLE": "1"}
    proc = subprocess.Popen(cmd, cwd=home / "ComfyUI", stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    server = ComfyServer(f"http://127.0.0.1:{port}", port, base, proc, log_path, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            server.stop()
            raise RuntimeError(f"ComfyUI exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/system_stats", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{server.log_tail()}")


class TcpRelay:
    """A loopback TCP relay in front of a server, standing in for the network between
    ralph and a pod: :meth:`sever` cuts the live WebSocket connections mid-stream (the
    server sees its peer vanish, as on a flaky link), and ``refuse_websockets`` makes
    later WebSocket handshakes fail, so only plain HTTP gets through."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refuse_websockets = False
        self.refused = 0
        self._lock = threading.Lock()
        self._ws_pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        first = client.recv(65536)
        is_ws = first.startswith(b"GET /ws")
        if not first or (is_ws and self.refuse_websockets):
            self.refused += bool(first)
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        upstream.sendall(first)
        if is_ws:
            with self._lock:
                self._ws_pairs.append((client, upstream))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def sever(self) -> int:
        """Cut every WebSocket connection now open through the relay; returns how many."""
        with self._lock:
            pairs, self._ws_pairs = self._ws_pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        return len(pairs)

    def close(self) -> None:
        self.sever()
        self._listener.close()


def require_install(home: Path | None = None) -> Path:
    """The ComfyUI home, or skip the test (fail under CI=true) when it is not installed."""
    home = home or tiny_models.comfyui_home()
    if not installed(home):
        msg = f"no test ComfyUI in {home}: run {INSTALL_SCRIPT} (or set RALPH_COMFYUI_HOME)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return home


_shared: ComfyServer | None = None


@pytest.fixture(scope="session")
def comfyui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """One ComfyUI server for the whole session. Modules importing this fixture each get a
    fixture copy from pytest; the module-level cache keeps it to one process."""
    global _shared
    home = require_install()
    if _shared is None or not _shared.alive():
        _shared = start_server(tmp_path_factory.mktemp("comfyui") / "base", home)
    yield _shared
    if _shared is not None:
        _shared.stop()
        _shared = None


# The 14-node graph of RALPH-001 task 3, from the project's own template (API format plus
# named parameters, each a list of "node.input" paths), at a test size.
REFINER_TEMPLATE = Path(__file__).resolve().parents[2] / "workflows" / "refiner.json"


def refiner_graph(width: int = 64, height: int = 64, steps: tuple[int, int] = (3, 2), seed: int = 42,
                  prefix: str = "quality_tests/elena_refiner") -> dict[str, dict]:
    """RALPH-001's refiner workflow with the example's files and settings, except the size,
    the step counts, the seed and the face-analysis provider (CPU here). The template's
    file names are the example's, which tiny_models.py builds under the same names."""
    template = json.loads(REFINER_TEMPLATE.read_text())
    graph: dict[str, dict] = template["prompt"]
    values = {"width": width, "height": height, "steps": steps[0], "steps2": steps[1], "seed": seed,
              "face_provider": "CPU", "filename_prefix": prefix}
    for name, value in values.items():
        for path in template["parameters"][name]:
            node, field_name = path.split(".", 1)
            graph[node]["inputs"][field_name] = value
    return graph
