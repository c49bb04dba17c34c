"""The parts of ``executor: serverless`` that need no worker: file names, outputs, errors, the SDK's import."""

from __future__ import annotations

import base64
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ralph.handlers.comfyui import serverless

from ralph.handler import TaskBlocked
from tests.test_comfyui_serverless import _project


def test_each_variant_gets_its_own_file_whatever_the_worker_called_it() -> None:
    name = serverless.variant_file_name("quality_tests/elena_refiner", "cfg=7.0 seed=2", "elena_refiner_00001_.png", 0)
    assert name == "quality_tests/elena_refiner_cfg=7.0_seed=2.png"
    assert serverless.variant_file_name("x", "base", "x_00001_.png", 1) == "x_base_2.png"


def test_outputs_come_inline_or_from_the_s3_url_the_worker_uploaded_to() -> None:
    png = b"\x89PNG\r\n\x1a\n-bytes"

    class Bucket(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Bucket)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/bucket/x.png"
        assert serverless.fetch_output({"type": "s3_url", "data": url}) == png
    finally:
        server.shutdown()
        server.server_close()
    inline = base64.b64encode(png).decode()
    assert serverless.fetch_output({"type": "base64", "data": inline}) == png
    assert serverless.fetch_output({"type": "base64", "data": "data:image/png;base64," + inline}) == png


def test_a_worker_error_reads_on_one_line() -> None:
    assert serverless.readable_error("Workflow execution error: Node Type: X,\n  Message: boom\n") == \
        "Workflow execution error: Node Type: X, Message: boom"
    assert serverless.readable_error(["a", "b"]) == "a; b"
    assert serverless.readable_error(None) == "no message"


def test_the_sdk_leaves_the_logging_configuration_as_it_was() -> None:
    pytest.importorskip("runpod")
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    serverless.load_sdk()
    assert root.level == level and root.handlers == handlers


def test_without_the_extra_the_task_is_blocked_with_one_line_naming_it(tmp_path: Path) -> None:
    fake = tmp_path / "no-sdk"
    fake.mkdir()
    (fake / "runpod.py").write_text("raise ImportError('No module named runpod')\n")
    project = _project(tmp_path / "project", "ep-1")
    result = project.cli("run", "--only", "3", project.file.name,
                         env={"PYTHONPATH": str(fake), "RUNPOD_API_KEY": "key-for-test-0000"})
    assert result.returncode == 1
    said = " ".join(result.stdout.split())  # the summary table wraps long notes
    assert "executor: serverless needs the runpod SDK: pip install" in said and "[serverless]" in said
    assert "executor: serverless needs the runpod SDK: pip install 'ralph[serverless]'" in \
        project.file.read_text(encoding="utf-8")
    previous = sys.modules.get("runpod")
    sys.modules["runpod"] = None  # an import of it raises ImportError
    try:
        with pytest.raises(TaskBlocked, match=r"pip install 'ralph\[serverless\]'"):
            serverless.load_sdk()
    finally:
        if previous is None:
            del sys.modules["runpod"]
        else:
            sys.modules["runpod"] = previous
