"""What `convnet serve` refuses: run-folder links, requests that would decode too much, foreign
Host headers. Driven in-process through the ASGI app, or over loopback against a real uvicorn
server where timing between requests matters; the files are real GIFs and PNGs."""
from __future__ import annotations

import asyncio
import io
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.refusals.conftest import assert_one_sentence

pytest.importorskip("fastapi")
import httpx  # noqa: E402  (after the skip: httpx comes with the serve and dev extras)
import uvicorn  # noqa: E402
from starlette.formparsers import MultiPartParser  # noqa: E402

from convnet.cli import main  # noqa: E402
from convnet.cli.serve import _listen  # noqa: E402
from convnet.serve.app import create_app  # noqa: E402
from convnet.serve.config import ServeConfig  # noqa: E402
from convnet.serve.models import load_models  # noqa: E402

SECRET = "SECRET-7f3a9c"  # what a linked file holds; it must never reach a client
STARLETTE_SPOOL_BYTES = 1024 * 1024  # a file part larger than this, Starlette writes to a temporary file by default
PROMPT_S = 10  # an unrelated request's answer, while a heavy one is refused; it takes milliseconds when idle


def ask(app, *requests: tuple, host: str = "127.0.0.1") -> list[httpx.Response]:
    """Each (method, url, kwargs) sent in turn to `app` in-process, in one event loop (the batchers bind to it)."""

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}") as c:
            return [await c.request(method, url, **kw) for method, url, kw in requests]

    return asyncio.run(go())


def app_for(model, **settings):
    """The app serving `model` (a file or run folder) under ServeConfig(**settings)."""
    config = ServeConfig(**settings)
    return create_app(load_models([model], config), config)


def sentence(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert_one_sentence(detail)
    return detail


@contextmanager
def running(app) -> Iterator[str]:
    """A real uvicorn server for `app` on a free loopback port, in a thread, until the block ends."""
    sock = _listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def gif_screen(width: int, height: int) -> bytes:
    """A 35-byte GIF89a whose logical screen is width x height but whose one frame is 1x1: Pillow's
    decoded image is the whole screen, so a few bytes cost width x height pixels of work."""
    # 2-colour global table
    screen = struct.pack("<6sHHBBB", b"GIF89a", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)  # image descriptor: at (0, 0), 1x1, no local table
    pixels = b"\x02\x02\x44\x01\x00"  # LZW minimum code size 2, one 2-byte sub-block (clear, 0, end), terminator
    return screen + frame + pixels + b"\x3b"


def png(seed: int = 0) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def files(*datas: bytes) -> list[tuple]:
    """A multipart form of `datas` under the field "files", with a neutral type: the server judges the bytes."""
    return [("files", (f"f{i}", d, "application/octet-stream")) for i, d in enumerate(datas)]


# --- probe 2: the run folder's links ---------------------------------------------------------------


@pytest.fixture
def linked_run(model_file, tmp_path) -> Path:
    """A run folder whose history.csv and curves.png are links to a file outside it holding SECRET."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(model_file, run / "model.safetensors")
    secret = tmp_path / "secret.csv"
    secret.write_text(f"epoch,val_acc\n1,{SECRET}\n")  # a valid CSV: read as a history, it would be shown
    for name in ("history.csv", "curves.png"):
        (run / name).symlink_to(secret)
    return run


@pytest.mark.parametrize("given", ["model file", "run folder"])
def test_the_run_folders_links_are_not_followed(given, linked_run):
    app = app_for(linked_run / "model.safetensors" if given == "model file" else linked_run)
    card, model, curves = ask(app, ("GET", "/api/model", {}), ("GET", "/model", {}),
                              ("GET", "/api/model/curves.png", {}))
    for r in (card, model, curves):
        assert SECRET not in r.text
    assert card.json()["history"] is None and card.json()["curves"] is None
    assert "curves.png" in sentence(curves, 404)


def test_a_link_put_in_the_run_folder_while_serving_is_not_followed(model_file, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(model_file.parent, run)
    app = app_for(run)
    secret = tmp_path / "secret.png"
    secret.write_text(SECRET)
    (run / "curves.png").unlink()
    (run / "curves.png").symlink_to(secret)
    (curves,) = ask(app, ("GET", "/api/model/curves.png", {}))
    assert SECRET not in curves.text
    sentence(curves, 404)


# --- probe 3: decoding work per request ------------------------------------------------------------


def test_more_files_than_the_limit_is_413_before_any_is_decoded(model_file):
    app = app_for(model_file)  # default --max-files: 64
    (r,) = ask(app, ("POST", "/predict", {"files": files(*[png(i) for i in range(65)])}))
    assert "65" in sentence(r, 413) and "--max-files" in r.json()["detail"]
    (ok,) = ask(app, ("POST", "/predict", {"files": files(*[png(i) for i in range(64)])}))
    assert ok.status_code == 200 and len(ok.json()) == 64


def test_a_request_claiming_more_pixels_than_its_budget_is_413(model_file):
    # Each GIF is under the per-image --max-pixels (40,000,000); three are over the per-request budget.
    app = app_for(model_file, max_request_pixels=100_000_000)
    (r,) = ask(app, ("POST", "/predict", {"files": files(*[gif_screen(6000, 6600)] * 3)}))
    assert "--max-request-pixels" in sentence(r, 413)
    (ok,) = ask(app, ("POST", "/predict", {"files": files(gif_screen(6000, 6600), png())}))
    assert ok.status_code == 200 and all("predictions" in a for a in ok.json())


def test_a_heavy_request_is_refused_while_an_unrelated_one_is_answered_promptly(model_file):
    # The probe's request: 150 GIFs of 35 bytes, each claiming 6000x6600 pixels. Decoded, they took
    # 23 s of CPU and kept the next request waiting 19 s. The file cap is raised here so that the
    # pixel budget is what refuses it.
    app = app_for(model_file, max_files=200)
    with running(app) as url, httpx.Client(base_url=url, timeout=120) as client, ThreadPoolExecutor(2) as pool:
        heavy = pool.submit(client.post, "/predict", files=files(*[gif_screen(6000, 6600)] * 150))
        time.sleep(0.2)
        start = time.monotonic()
        light = client.post("/predict", files=files(png()))
        waited = time.monotonic() - start
        assert light.status_code == 200, light.text
        assert waited < PROMPT_S, f"an unrelated request waited {waited:.1f} s behind a heavy one"
        assert "--max-request-pixels" in sentence(heavy.result(), 413)


def _send_and_leave(url: str, parts: list[bytes]) -> None:
    """POST a multipart /predict of `parts` over a raw socket, then hang up without reading the answer."""
    boundary = "convnet-boundary"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="g{i}.gif"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + p + b"\r\n"
                    for i, p in enumerate(parts))
    body += f"--{boundary}--\r\n".encode()
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    head = (f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(head + body)
        time.sleep(0.5)  # the server is decoding now


def test_decoding_stops_when_the_client_hangs_up(model_file):
    # Limits raised so that the 150 GIFs are accepted: about half a minute of decoding if nobody stops it.
    app = app_for(model_file, max_files=200, max_request_pixels=10**12)
    with running(app) as url:
        _send_and_leave(url, [gif_screen(6000, 6600)] * 150)
        time.sleep(1.0)  # the file being decoded when the client left finishes
        before = time.process_time()  # this process's CPU time, every thread (the server's too)
        time.sleep(2.0)
        burnt = time.process_time() - before
    assert burnt < 0.25, f"the server spent {burnt:.2f} s of CPU in 2 s after its client left"


# --- uploads stay in memory, by a setting of each app's own ------------------------------------------


def test_making_an_app_changes_no_process_wide_parser_setting(model_file):
    # Starlette's spool size is a class attribute: raising it for one app raised it for every app in the process.
    before = MultiPartParser.spool_max_size
    app_for(model_file, max_upload_mb=50)
    assert MultiPartParser.spool_max_size == before


def test_an_upload_over_starlettes_spool_size_is_never_written_to_disk(model_file, tmp_path, monkeypatch):
    # A 600x600 noise PNG is over Starlette's 1 MB spool; written to a temporary file, it would
    # fail here, where the temporary folder does not exist.
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)).save(
        data, "PNG", compress_level=0)
    assert len(data.getvalue()) > STARLETTE_SPOOL_BYTES
    app = app_for(model_file)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    (r,) = ask(app, ("POST", "/predict", {"files": files(data.getvalue())}))
    assert r.status_code == 200 and "predictions" in r.json()[0], r.text


# --- probe 8: who can reach the server -------------------------------------------------------------


def test_a_loopback_server_answers_only_requests_naming_this_machine(model_file):
    app = app_for(model_file, host="127.0.0.1")
    for host in ("127.0.0.1:8000", "localhost", "localhost:1234", "[::1]:8000", "127.0.0.1"):
        (r,) = ask(app, ("GET", "/healthz", {"headers": {"host": host}}))
        assert r.status_code == 200, (host, r.text)
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example",
                 "localhost.attacker.example", ""):
        (r,) = ask(app, ("GET", "/healthz", {"headers": {"host": host}}))
        assert "Host" in sentence(r, 400), host


def test_a_server_on_every_network_answers_any_host(model_file):
    app = app_for(model_file, host="0.0.0.0")
    (r,) = ask(app, ("GET", "/healthz", {"headers": {"host": "convnet.lan:8000"}}))
    assert r.status_code == 200


@pytest.fixture
def no_serving(monkeypatch):
    """`convnet serve` up to the point where uvicorn would run forever (as tests/refusals/test_cli_garbage.py)."""
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)


@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("127.0.0.1", False)])
def test_serving_beyond_this_machine_warns(host, warned, model_file, no_serving, capsys):
    assert main(["serve", str(model_file), "--host", host, "--port", "0"]) == 0
    err = capsys.readouterr().err
    assert ("warning:" in err and "network" in err) == warned, err
