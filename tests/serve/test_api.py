"""The HTTP API of `convnet serve`, driven over loopback against a real server process.

Answers are checked against independent references: `convnet predict --json` and `convnet explain
--json` run as commands on the same files, `rank` on the same model in this process, the run
folder's own files, and images decoded back from the PNGs the server sends.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import socket
import struct
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402  (after the skip: httpx comes with the serve and dev extras)
from PIL import Image  # noqa: E402

import convnet.serve  # noqa: E402
from convnet.cli import build_parser, main  # noqa: E402
from convnet.cli.serve import _listen  # noqa: E402
from convnet.inference.model_file import load_checkpoint  # noqa: E402
from convnet.inference.predict import rank  # noqa: E402
from convnet.models.summary import summarize  # noqa: E402

PROBABILITY_TOL = 2e-6  # probabilities are rounded to 6 decimals; a different batch may move the last one


@pytest.fixture(scope="module")
def client(served) -> httpx.Client:
    with httpx.Client(base_url=served, timeout=30) as c:
        yield c


def _noise(size: tuple[int, int], strong: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 noise whose channel `strong` is bright: the colour model's classes."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 120, (*size, 3), dtype=np.uint8)
    img[:, :, strong] = rng.integers(120, 256, size, dtype=np.uint8)
    return img


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """One file per format and mode the server must read, at sizes other than the model's."""
    folder = tmp_path_factory.mktemp("uploads")
    rgb = Image.fromarray(_noise((30, 40), 0, 1))
    cases = {
        "rgb.png": rgb,
        "rgba.png": Image.fromarray(np.dstack([_noise((24, 24), 1, 2), np.full((24, 24), 200, np.uint8)]), mode="RGBA"),
        "grey.png": rgb.convert("L"),
        "palette.png": Image.fromarray(_noise((20, 50), 2, 3)).convert("P"),
        "photo.jpg": Image.fromarray(_noise((48, 32), 0, 4)),
        "picture.bmp": Image.fromarray(_noise((24, 24), 1, 5)),
        "anim.gif": Image.fromarray(_noise((26, 26), 2, 6)),
        "picture.webp": Image.fromarray(_noise((33, 33), 0, 7)),
        "scan.tiff": Image.fromarray(_noise((24, 36), 1, 8)),
    }
    paths = []
    for name, img in cases.items():
        img.save(folder / name)
        paths.append(folder / name)
    return paths


def _upload(path: Path, field: str = "file") -> tuple[str, tuple[str, bytes, str]]:
    # A neutral content type: the server must judge the file by its bytes.
    return (field, (path.name, path.read_bytes(), "application/octet-stream"))


def _cli_predict(capsys, model_file: Path, paths: list[Path], *flags: str) -> dict[str, dict]:
    capsys.readouterr()
    main(["predict", str(model_file), *map(str, paths), "--json", *flags])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return {Path(r["path"]).name: r for r in lines}


def _assert_same_answer(got: dict, expected: dict) -> None:
    assert Path(got["path"]).name == Path(expected["path"]).name
    if "error" in expected:
        assert "error" in got
        return
    assert [p["class"] for p in got["predictions"]] == [p["class"] for p in expected["predictions"]]
    for g, e in zip(got["predictions"], expected["predictions"], strict=True):
        assert g["probability"] == pytest.approx(e["probability"], abs=PROBABILITY_TOL)


def _png(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert img.format == "PNG"
    return img


def _assert_one_sentence(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in response.text
    assert detail.endswith(".") and len(detail) < 300, detail
    return detail


# --- predictions -------------------------------------------------------------------------------


def test_predict_answers_as_convnet_predict_json_for_every_format(client, images, model_file, capsys):
    expected = _cli_predict(capsys, model_file, images, "--top-k", "5")
    r = client.post("/predict", files=[_upload(p, "files") for p in images])
    assert r.status_code == 200, r.text
    answers = r.json()
    assert [a["path"] for a in answers] == [p.name for p in images]  # upload order, the client's names
    for a in answers:
        assert set(a) == {"path", "predictions"} and set(a["predictions"][0]) == {"class", "probability"}
        _assert_same_answer(a, expected[a["path"]])

    single = client.post("/predict", files=[_upload(images[0])])
    assert single.status_code == 200 and len(single.json()) == 1
    _assert_same_answer(single.json()[0], expected[images[0].name])


def test_predict_top_k_tta_and_model_are_form_fields(client, images, model_file, capsys):
    expected = _cli_predict(capsys, model_file, images[:3], "--top-k", "2", "--tta", "1")
    r = client.post("/predict", files=[_upload(p, "files") for p in images[:3]],
                    data={"top_k": "2", "tta": "1", "model": "colours"})
    assert r.status_code == 200, r.text
    for a in r.json():
        assert len(a["predictions"]) == 2
        _assert_same_answer(a, expected[a["path"]])
    # Each parameter has one place: sent in the query instead, it is refused, not silently ignored.
    by_query = client.post("/predict?top_k=2", files=[_upload(p, "files") for p in images[:3]])
    assert "form field" in _assert_one_sentence(by_query, 422)


def test_a_bad_file_among_several_gets_its_own_error(client, images, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("these are notes, not a picture\n")
    r = client.post("/predict", files=[_upload(images[0], "files"), _upload(text, "files"),
                                       _upload(images[1], "files")])
    assert r.status_code == 200, r.text
    first, bad, third = r.json()
    assert "predictions" in first and "predictions" in third
    assert set(bad) == {"path", "error"} and bad["path"] == "notes.png" and "not an image" in bad["error"]


def test_concurrent_requests_each_get_their_own_answer(client, model_file, tmp_path):
    clf = load_checkpoint(model_file)
    paths = []
    for i in range(24):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(_noise((24 + i, 24), i % 3, 100 + i)).save(paths[-1])
    expected = {p.name: rank(clf, [p], k=3)[0] for p in paths}

    def ask(path: Path) -> dict:
        r = client.post("/predict", files=[_upload(path)])
        assert r.status_code == 200, r.text
        return r.json()[0]

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, paths * 2))
    for a in answers:
        want = expected[a["path"]]
        assert [p["class"] for p in a["predictions"]] == [c for c, _ in want]
        for p, (_, prob) in zip(a["predictions"], want, strict=True):
            assert p["probability"] == pytest.approx(prob, abs=PROBABILITY_TOL)


# --- what the network sees ---------------------------------------------------------------------


def test_cam_json_and_png(client, images, model_file):
    clf = load_checkpoint(model_file)
    r = client.post("/cam", files=[_upload(images[0])], data={"format": "json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"class", "probability", "classes_probabilities", "input_png", "overlay_png"}
    ranking = rank(clf, [images[0]], k=3)[0]
    assert [c["class"] for c in body["classes_probabilities"]] == [c for c, _ in ranking]
    assert body["class"] == ranking[0][0] and body["probability"] == pytest.approx(ranking[0][1], abs=PROBABILITY_TOL)

    # The input as the network sees it, every pixel a square: sampling one pixel per square gives it back.
    shown = np.asarray(_png(body["input_png"]).convert("RGB"))
    scale = shown.shape[0] // clf.info.input_size[0]
    assert scale > 1 and shown.shape[:2] == (24 * scale, 24 * scale)
    assert np.array_equal(shown[::scale, ::scale].transpose(2, 0, 1), clf.to_input(images[0]).numpy())
    overlay = _png(body["overlay_png"])
    assert overlay.size == (24 * scale, 24 * scale)

    other = [c for c in clf.classes if c != body["class"]][0]
    r2 = client.post("/cam", files=[_upload(images[0])], data={"format": "json", "class_name": other})
    assert r2.json()["class"] == other and r2.json()["overlay_png"] != body["overlay_png"]

    png = client.post("/cam", files=[_upload(images[0])])
    assert png.headers["content-type"] == "image/png" and png.content == base64.b64decode(body["overlay_png"])


def test_features_json_and_png(client, images, model_file):
    r = client.post("/features", files=[_upload(images[1])])
    assert r.status_code == 200, r.text
    body = r.json()
    # The tutorial CNN on 24x24 input: three 3x3 convolutions, pooling after the first two.
    assert [(x["name"], x["channels"], x["height"], x["width"]) for x in body["layers"]] == [
        ("layers.0", 32, 22, 22), ("layers.3", 64, 9, 9), ("layers.6", 64, 2, 2)]
    for layer in body["layers"]:
        assert _png(layer["png"]).size[0] > layer["width"]
    assert _png(body["filters_png"]).size[0] > 3
    png = client.post("/features", files=[_upload(images[1])], data={"format": "png"})
    assert png.headers["content-type"] == "image/png" and png.content == base64.b64decode(body["layers"][0]["png"])


# --- models ------------------------------------------------------------------------------------


def test_healthz_models_and_the_model_card(client, model_file):
    assert client.get("/healthz").json() == {"status": "ok", "models": ["colours"]}
    clf = load_checkpoint(model_file)
    assert client.get("/api/models").json() == [{"name": "colours", "format": "safetensors",
                                                 "classes": ["blue", "green", "red"], "input_size": [24, 24],
                                                 "in_chans": 3}]

    card = client.get("/api/model").json()
    assert client.get("/model").json() == card == client.get("/api/model?model=colours").json()
    assert card["model"] == "tutorial" and card["classes"] == list(clf.classes) and card["explainable"] is True
    assert card["mean"] == list(clf.info.mean) and card["metrics"] == clf.info.metrics
    rows = summarize(clf.model, (3, 24, 24))
    assert card["summary"] == [{"layer": r.name, "output_shape": list(r.output_shape), "params": r.params}
                               for r in rows]
    assert card["total_params"] == sum(p.numel() for p in clf.model.parameters())

    history = (model_file.parent / "history.csv").read_text().splitlines()
    assert len(card["history"]) == len(history) - 1 and set(card["history"][0]) == set(history[0].split(","))
    assert card["history"][-1]["val_acc"] == pytest.approx(clf.info.metrics["val_acc"])
    curves = client.get(card["curves"])
    assert (curves.headers["content-type"] == "image/png"
            and curves.content == (model_file.parent / "curves.png").read_bytes())


def test_explain_is_convnet_explain_json(client, capsys):
    for settings in ({}, {"kernel": 3, "stride": 1, "padding": 1, "pool": 2, "pool_stride": 2, "seed": 7},
                     {"stride": 2, "pool": 1}):
        capsys.readouterr()
        assert main(["explain", "--json", *[f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]]) == 0
        expected = json.loads(capsys.readouterr().out)
        r = client.get("/api/explain", params=settings)
        assert r.status_code == 200 and r.json() == expected


def test_pages_are_the_packaged_files(client):
    # The reference: the HTML files shipped in the package, read from disk here.
    static = Path(convnet.serve.__file__).parent / "static"
    for page, name in (("/", "index.html"), ("/explain", "explain.html")):
        r = client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), (page, r.text)
        assert r.content == (static / name).read_bytes() and b"<html" in r.content.lower(), page


def _openapi_parameters(operation: dict, spec: dict) -> dict[str, set[str]]:
    """Where an OpenAPI operation takes each parameter: {"query": {...}, "form": {...}}."""
    places = {"query": {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}, "form": set()}
    body = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
    if body is not None:
        ref = body["schema"]["$ref"].rsplit("/", 1)[-1]
        places["form"] = set(spec["components"]["schemas"][ref]["properties"])
    return places


def test_openapi_gives_each_parameter_one_place(client):
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/cam", "/features", "/api/model", "/healthz", "/api/explain"} <= set(spec["paths"])
    assert "form field" in spec["info"]["description"] and "query parameter" in spec["info"]["description"]
    uploads = {"/predict": {"file", "files", "top_k", "tta", "model"},
               "/cam": {"file", "class_name", "format", "model"}, "/features": {"file", "format", "model"}}
    for path, fields in uploads.items():
        assert _openapi_parameters(spec["paths"][path]["post"], spec) == {"query": set(), "form": fields}, path
    gets = {"/api/model": {"model"}, "/model": {"model"}, "/api/model/curves.png": {"model"},
            "/api/explain": {"kernel", "stride", "padding", "pool", "pool_stride", "seed"}}
    for path, names in gets.items():
        assert _openapi_parameters(spec["paths"][path]["get"], spec) == {"query": names, "form": set()}, path


def test_docs_load_nothing_from_outside_the_server(client):
    # Swagger UI's default page loads its script and style from a CDN: blank offline.
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "http://" not in r.text and "https://" not in r.text, r.text
    assets = re.findall(r"""(?:src|href|url)\s*[=:]\s*["']([^"']+)["']""", r.text)  # every URL the page loads
    assert all(a.startswith("/") and not a.startswith("//") for a in assets), assets  # this server's paths only
    assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}, assets
    for asset in assets:
        got = client.get(asset)
        assert got.status_code == 200 and len(got.content) > 1000, asset  # the real files, not an error sentence
    assert "SwaggerUIBundle" in client.get(next(a for a in assets if a.endswith(".js"))).text
    assert client.get("/redoc").status_code == 404  # FastAPI's other docs page, from a CDN too, is not served


# --- bad input ---------------------------------------------------------------------------------


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, followed by almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def _cut(path: Path, keep: float) -> bytes:
    data = path.read_bytes()
    return data[: int(len(data) * keep)]


BAD = {
    # name: (method, path, multipart files, form data, status, a fragment of the sentence)
    "text named .png": ("post", "/predict", [("file", ("notes.png", b"hello, not a picture\n" * 20, "image/png"))], {},
                        400, "not an image"),
    "empty file": ("post", "/predict", [("file", ("empty.jpg", b"", "image/jpeg"))], {}, 400, "not an image"),
    "truncated PNG": ("post", "/predict", "rgb.png:0.6", {}, 400, "cut short"),
    "truncated JPEG": ("post", "/predict", "photo.jpg:0.5", {}, 400, "cut short"),
    "oversize upload": ("post", "/predict", [("file", ("big.png", b"\x89PNG" + b"\x00" * 10_000_000, "image/png"))], {},
                        413, "limit"),
    "header claims 10^10 pixels": (
        "post", "/predict", [("file", ("bomb.png", _png_header_claiming(100_000, 100_000), "image/png"))], {}, 413,
        "pixels"),
    "header claims 48 million pixels": (
        "post", "/cam", [("file", ("wide.png", _png_header_claiming(8000, 6000), "image/png"))], {}, 413, "40,000,000"),
    "wrong field": ("post", "/predict", "rgb.png:1:image", {}, 422, "'file'"),
    "no multipart at all": ("post", "/predict", None, {}, 422, "'file'"),
    "file sent as text": ("post", "/cam", None, {"file": "rgb.png"}, 422, "'file'"),
    "top_k 0": ("post", "/predict", "rgb.png", {"top_k": "0"}, 422, "top_k"),
    "top_k not a number": ("post", "/predict", "rgb.png", {"top_k": "many"}, 422, "top_k"),
    "a setting sent in the query": ("post", "/cam?format=json", "rgb.png", {}, 422, "form field"),
    "tta 3": ("post", "/predict", "rgb.png", {"tta": "3"}, 422, "tta"),
    "unknown model": ("post", "/predict", "rgb.png", {"model": "nope"}, 404, "colours"),
    "unknown model card": ("get", "/api/model?model=nope", None, {}, 404, "nope"),
    "unknown class": ("post", "/cam", "rgb.png", {"class_name": "purple"}, 422, "purple"),
    "unknown format": ("post", "/features", "rgb.png", {"format": "gif"}, 422, "format"),
    "explain kernel too large for the image": ("get", "/api/explain?kernel=6", None, {}, 422, "kernel"),
    "explain stride 0": ("get", "/api/explain?stride=0", None, {}, 422, "stride"),
    "explain seed not a number": ("get", "/api/explain?seed=x", None, {}, 422, "seed"),
    "GET on an upload endpoint": ("get", "/predict", None, {}, 405, "GET"),
    "nothing there": ("get", "/no/such/page", None, {}, 404, "/no/such/page"),
}


def _send_bad(case: str, client: httpx.Client, images: list[Path]) -> httpx.Response:
    method, path, files, data, _, _ = BAD[case]
    # "NAME[:FRACTION[:FIELD]]": one of the good images, maybe cut, maybe under another field
    if isinstance(files, str):
        parts = files.split(":")
        name, keep, field = parts[0], float(parts[1]) if len(parts) > 1 else 1.0, parts[2] if len(parts) > 2 else "file"
        source = next(p for p in images if p.name == name)
        files = [(field, (name, _cut(source, keep), "application/octet-stream"))]
    return (client.request(method.upper(), path, files=files, data=data or None) if files or data
            else client.request(method.upper(), path))


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_with_one_sentence(case, client, images):
    status, fragment = BAD[case][4:]
    detail = _assert_one_sentence(_send_bad(case, client, images), status)
    assert fragment in detail, detail


def test_bad_input_leaves_the_server_up_with_no_traceback_in_its_log(client, server, images):
    # Every bad request sent here, whatever ran before: none of them hurts the server or is a bug (500).
    for case in BAD:
        assert _send_bad(case, client, images).status_code < 500, case
    assert client.get("/healthz").json()["status"] == "ok"
    assert server.process.poll() is None
    assert "Traceback" not in server.log.read_text()


# --- the command ---------------------------------------------------------------------------------


def test_serve_binds_loopback_by_default(served):
    assert build_parser().parse_args(["serve", "m.safetensors"]).host == "127.0.0.1"
    assert served.startswith("http://127.0.0.1:")


def test_serve_refuses_a_bad_model_file_before_binding(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a model at all")
    assert main(["serve", str(bad), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err


def test_serve_without_the_extra_names_it(model_file, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` now fails as if not installed
    assert main(["serve", str(model_file)]) == 2
    assert capsys.readouterr().err.strip() == ("error: convnet serve needs the serve extra: "
                                               "pip install 'convnet[serve]'.")


# --- an ONNX model -------------------------------------------------------------------------------


def test_an_onnx_model_predicts_as_its_source_and_explains_that_it_cannot_show_layers(model_file, images, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("convnet.export.onnx")
    from convnet.serve.app import create_app
    from convnet.serve.config import ServeConfig
    from convnet.serve.models import load_models

    onnx_file = tmp_path / "colours.onnx"
    assert main(["export", str(model_file), "--out", str(onnx_file)]) == 0
    app = create_app(load_models([onnx_file, model_file], ServeConfig()))

    async def ask() -> dict:
        # a loopback server answers its own names only
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
            upload = [_upload(p, "files") for p in images[:4]]
            return {
                "models": (await c.get("/api/models")).json(),
                "card": (await c.get("/api/model", params={"model": "colours"})).json(),
                "onnx": (await c.post("/predict", files=upload, data={"model": "colours"})).json(),
                "torch": (await c.post("/predict", files=upload, data={"model": "colours-2"})).json(),
                "cam": await c.post("/cam", files=[_upload(images[0])], data={"model": "colours"}),
                "features": await c.post("/features", files=[_upload(images[0])]),
            }

    got = asyncio.run(ask())
    assert [(m["name"], m["format"]) for m in got["models"]] == [("colours", "onnx"), ("colours-2", "safetensors")]
    assert got["card"]["explainable"] is False and got["card"]["summary"] and got["card"]["total_params"] > 0
    for o, t in zip(got["onnx"], got["torch"], strict=True):
        _assert_same_answer(o, t)  # within rounding: onnxruntime and torch agree to about 1e-6 in fp32
    for r in (got["cam"], got["features"]):
        assert "ONNX" in _assert_one_sentence(r, 400)


def test_the_listening_socket_sends_small_answers_at_once():
    # Without TCP_NODELAY every kept-alive answer waited ~40 ms for the client's delayed ACK
    # (benchmarks/serve_load.py measured it); accepted connections inherit the option on Linux.
    with _listen("127.0.0.1", 0) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
