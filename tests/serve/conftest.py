"""What the serve tests share: a real `convnet serve` process on a free loopback port, serving the
session's `model_file` (tests/conftest.py); the API tests and the browser test both drive it."""
from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

START_S = 60  # seconds a server may take to load torch and the model and answer /healthz


@dataclass
class Server:
    url: str  # base URL, ending in "/"
    process: subprocess.Popen
    log: Path  # the server's stderr


def _read_line(stream, deadline: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    line = b""
    while not line.endswith(b"\n"):
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"convnet serve printed no URL within {START_S} s")
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            break
        line += chunk
    return line.decode()


@contextmanager
def serve(*argv, log_dir: Path) -> Iterator[Server]:
    """Run `convnet serve --port 0 ARGV...` in its own process until the block ends.

    Yields the server once it answers /healthz; fails the test when it exits or hangs first.
    """
    import httpx

    log = log_dir / "serve.log"
    cmd = [sys.executable, "-m", "convnet", "serve", "--port", "0", *map(str, argv)]
    with open(log, "wb") as err:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
    try:
        deadline = time.monotonic() + START_S
        line = _read_line(process.stdout, deadline)
        assert "http://" in line, f"convnet serve printed {line!r}; its log: {log.read_text()}"
        url = line.split()[2]
        while True:
            try:
                if httpx.get(url + "healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (
                f"convnet serve did not come up; its log: {log.read_text()}")
            time.sleep(0.1)
        yield Server(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


@pytest.fixture(scope="session")
def server(model_file, tmp_path_factory) -> Iterator[Server]:
    """`convnet serve MODEL_FILE` with the default limits, for the whole session."""
    with serve(model_file, log_dir=tmp_path_factory.mktemp("serve_log")) as s:
        yield s


@pytest.fixture(scope="session")
def served(server) -> str:
    """The base URL of the session's server, e.g. "http://127.0.0.1:41234/"."""
    return server.url
