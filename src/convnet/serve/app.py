"""The HTTP app of `convnet serve`: the web pages, and a JSON API over the same engine as the CLI.

Pages and files
    GET  /                      static/index.html: drop an image, see what the network sees and why
    GET  /explain               static/explain.html: the tutorial's worked example, live
    GET  /static/...            the pages' scripts, styles and images (src/convnet/serve/static/)
    GET  /docs, /openapi.json   the API's OpenAPI description; /docs is Swagger UI from /docs-assets/ (the
                                fastapi-offline package's copy), so it works offline like the pages

Models
    GET  /healthz               {"status": "ok", "models": [name, ...]}
    GET  /api/models            [{"name", "format": "safetensors"|"onnx", "classes", "input_size": [H, W], "in_chans"}]
    GET  /api/model?model=NAME  (also GET /model) the model card: {"name", "format", "model", "model_args",
                                "classes", "input_size", "in_chans", "mean", "std", "metrics", "data_source",
                                "summary": [{"layer", "output_shape", "params"}] or null, "total_params",
                                "curves": URL or null, "history": [history.csv rows] or null,
                                "explainable": whether /cam and /features work for it}
    GET  /api/model/curves.png?model=NAME   the run's accuracy and loss curves (404 when there are none)

Images (multipart/form-data; `model` names a served model, default the first given)
    POST /predict   `file` (one image) or `files` (several); `top_k` (at least 1, default 5; more
                    than the classes gives them all, as `convnet predict`), `tta` (0, 1, 2), `model`,
                    each a form field or a query parameter. Answers a JSON array, one object per
                    file in upload order, each a `convnet predict --json` line: {"path": filename,
                    "predictions": [{"class", "probability"}, ...]} or {"path", "error"}. A bad file
                    among several gets its own error object (200); a lone bad file is a 4xx.
    POST /cam       `file`, `class_name` (default: the top class), `format` ("png": the Grad-CAM
                    overlay as image/png; "json"), `model`. JSON: {"class", "probability",
                    "classes_probabilities": [{"class", "probability"}, every class, most probable
                    first], "input_png": base64 PNG of the image as the network sees it, at its
                    input size upscaled with nearest neighbour (pixelated), "overlay_png": base64 PNG}
    POST /features  `file`, `format` ("json" default; "png": the first layer's grid), `model`. JSON:
                    {"layers": [{"name", "channels", "height", "width", "png": base64 grid of the
                    layer's maps}], "filters_png": base64 grid of the first layer's filters}
    /cam and /features need the PyTorch module: for an ONNX model they answer 400.

The worked example
    GET  /api/explain?kernel=2&stride=1&padding=0&pool=2&pool_stride=1&seed=0
                    exactly `convnet explain --json`'s object for those settings (the same function;
                    the defaults are the command's); settings are bounded so a request stays small.

Errors: every 4xx and 5xx body is {"detail": "<one sentence>"} (serve.errors). Uploads: the body is
capped by --max-upload-mb (413), each image by --max-pixels read from its header (413), a request's
files by --max-files and their pixels together by --max-request-pixels, both checked before any
pixel is decoded (413); the type is judged by the content (serve.uploads); nothing is written to disk.
Decoding stops when the client hangs up.

Who may ask: bound to a loopback address (the default), the server answers only requests whose Host
header is localhost, 127.0.0.1 or [::1] (any port) or the address it is bound to; any other is a 400
(`ThisMachineOnly`). `convnet serve --host 0.0.0.0` answers any Host, and warns that it is open to the network.

Concurrency: the event loop never runs a forward pass or decodes an image; those run in worker
threads. /predict goes through a micro-batcher per model and TTA level (serve.batching): requests
that arrive together share one forward pass; a lone request runs at once.
"""
from __future__ import annotations

import asyncio
import base64
import os
import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

import anyio
import fastapi_offline
import torch
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.formparsers import MultiPartParser

from convnet.errors import ConvnetError, DataError, SpecError
from convnet.inference.predict import FileResult, rank
from convnet.scratch.explain import worked_example
from convnet.serve.config import ServeConfig
from convnet.serve.errors import install_error_handlers
from convnet.serve.models import ServedModel
from convnet.serve.uploads import BodyLimit, check_file_count, check_request_pixels, decode_upload, open_upload
from convnet.viz.cam import CAM_PIXELS, cam_overlay, grad_cam
from convnet.viz.features import feature_maps, first_layer_filters, render_feature_maps, render_filters
from convnet.viz.grid import fit_scale, png_bytes, to_pil

STATIC = Path(__file__).parent / "static"
# Swagger UI's script, style and icon, as the fastapi-offline package ships them (MIT; Swagger UI is
# Apache-2.0): /docs loads nothing from a CDN.
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
# The names of this machine a request to a loopback server may carry in its Host header (any port).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_HOST = re.compile(r"(\[[0-9a-f:.]*\]|[^:\[\]]*)(?::[0-9]{1,5})?")  # "name[:port]" or "[v6 address][:port]"
DEFAULT_TOP_K = 5
# The worked example's settings are bounded: it is a 4x4 image, and padding or a stride of millions
# would only make a request allocate and compute for nothing.
EXPLAIN_MAX = 8


class ServedModels:
    """The models by name, and the sentences for asking for one that is not there."""

    def __init__(self, models: list[ServedModel]):
        if not models:
            raise ValueError("a server needs at least one model")
        self.by_name = {m.name: m for m in models}
        self.default = models[0]

    def get(self, name: str | None) -> ServedModel:
        if name is None or name == "":
            return self.default
        if name not in self.by_name:
            raise HTTPException(404, f"No model named {name!r} is served here; choose one of: {', '.join(self.by_name)}.")
        return self.by_name[name]

    def explainable(self, name: str | None) -> ServedModel:
        m = self.get(name)
        if not m.explainable:
            raise HTTPException(400, f"The model {m.name!r} is an ONNX file, which has no PyTorch layers to look into; serve its model.safetensors for Grad-CAM and feature maps.")
        return m


class ThisMachineOnly:
    """ASGI middleware for a server bound to loopback: answers only requests whose Host header names this machine.

    A page from anywhere, open in a browser on this machine, can have its own name re-pointed at
    127.0.0.1 (DNS rebinding) and then call this API as if it were the same site. Its requests
    still carry that name in their Host header, so they are refused (400).
    """

    def __init__(self, app, host: str):
        self.app = app
        bound = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self.names = {*LOOPBACK_NAMES, bound.lower()}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1").strip().lower()
        name = _HOST.fullmatch(header)
        if name is not None and name.group(1) in self.names:
            return await self.app(scope, receive, send)
        detail = (f"This server answers requests for this machine only, and the Host header {header[:60]!r} names another; "
                  "open it as http://127.0.0.1 or http://localhost with its port, or start it with --host 0.0.0.0 to serve the network.")
        await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)


def _b64(image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def _png(image) -> Response:
    return Response(png_bytes(image), media_type="image/png")


def _either(form_value, query_value, default):
    """A parameter that may come as a form field or a query parameter (the form wins)."""
    return form_value if form_value is not None else query_value if query_value is not None else default


def to_input(m: ServedModel, image: Image.Image, name: str) -> torch.Tensor:
    """An image from `open_upload`, decoded and converted to the model's uint8 (C, H, W) input (blocking)."""
    image = decode_upload(image, name)
    try:
        return m.clf.to_input(image)
    except (OSError, ValueError) as e:  # a decoded image Pillow cannot convert (odd mode)
        if isinstance(e, ConvnetError):
            raise
        raise DataError(f"{name} cannot be converted to the model's input ({e}); upload an RGB or grayscale picture.") from None


def create_app(models: list[ServedModel], config: ServeConfig | None = None) -> FastAPI:
    """The app serving `models` (loaded by `serve.models.load_models`) under `config`'s limits (default `ServeConfig()`)."""
    config = config or ServeConfig()
    served = ServedModels(models)
    # Decoding a large image takes memory; at most one per core decodes at a time.
    decoders = anyio.CapacityLimiter(max(2, os.cpu_count() or 1))
    # The body limit keeps every request under max_upload_bytes, so with the spool as large the
    # form parser keeps every uploaded part in memory: an upload is never written to disk.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, config.max_upload_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.gather(*(b.close() for m in models for b in m.batchers.values()))

    app = FastAPI(
        title="convnet",
        summary="See what a trained convnet model sees: predictions, Grad-CAM, feature maps, the worked example.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served below from local files, not FastAPI's default CDN
        redoc_url=None,
    )
    install_error_handlers(app)

    async def inputs_of(request: Request, m: ServedModel, uploads: list[UploadFile]) -> list[torch.Tensor | DataError]:
        """Each upload as the model's uint8 (C, H, W) input, or the DataError that says why it is not one.

        The whole request is refused (TooLargeError, 413) when it has too many files or they claim
        too many pixels together, before any pixel is decoded. Decoding runs in worker threads one
        file at a time, so other requests' files take turns with these, and stops when the client
        has hung up.
        """
        check_file_count(len(uploads), config.max_files)
        names = [u.filename or f"upload {i + 1}" for i, u in enumerate(uploads)]
        datas = [await u.read() for u in uploads]

        def open_all() -> list[Image.Image | DataError]:
            opened: list[Image.Image | DataError] = []
            for data, name in zip(datas, names, strict=True):
                try:
                    opened.append(open_upload(data, name, config.max_pixels))
                except DataError as e:
                    opened.append(e)
            return opened

        opened = await anyio.to_thread.run_sync(open_all, limiter=decoders)
        check_request_pixels([img for img in opened if isinstance(img, Image.Image)], config.max_request_pixels)
        inputs: list[torch.Tensor | DataError] = []
        for img, name in zip(opened, names, strict=True):
            if isinstance(img, DataError):
                inputs.append(img)
                continue
            if await request.is_disconnected():
                raise HTTPException(400, "The client hung up before its images were decoded.")  # nobody reads it
            try:
                inputs.append(await anyio.to_thread.run_sync(to_input, m, img, name, limiter=decoders))
            except DataError as e:
                inputs.append(e)
        return inputs

    async def input_of(request: Request, m: ServedModel, upload: UploadFile) -> torch.Tensor:
        """One upload as the model's input; a bad file is the request's error."""
        (pixels,) = await inputs_of(request, m, [upload])
        if isinstance(pixels, DataError):
            raise pixels
        return pixels

    # --- pages ---------------------------------------------------------------------------------

    def page(name: str) -> FileResponse:
        path = STATIC / name
        if not path.is_file():
            raise HTTPException(404, f"This installation has no {name}; reinstall convnet with its package data.")
        return FileResponse(path, media_type="text/html")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return page("index.html")

    @app.get("/explain", include_in_schema=False)
    async def explain_page() -> FileResponse:
        return page("explain.html")

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="convnet API", swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css", swagger_favicon_url="/docs-assets/favicon.png")

    # --- models --------------------------------------------------------------------------------

    @app.get("/healthz", tags=["models"])
    async def healthz() -> dict:
        return {"status": "ok", "models": list(served.by_name)}

    @app.get("/api/models", tags=["models"])
    async def list_models() -> list[dict]:
        return [{k: m.card[k] for k in ("name", "format", "classes", "input_size", "in_chans")} for m in models]

    @app.get("/api/model", tags=["models"], summary="The model card")
    @app.get("/model", tags=["models"], summary="The model card (same as /api/model)")
    async def model_card(model: Annotated[str | None, Query(description="a served model's name; default the first")] = None) -> dict:
        return served.get(model).card

    @app.get("/api/model/curves.png", tags=["models"], response_class=Response, responses={200: {"content": {"image/png": {}}}})
    async def curves(model: str | None = None) -> Response:
        m = served.get(model)
        png = await anyio.to_thread.run_sync(m.curves)
        if png is None:
            raise HTTPException(404, f"The model {m.name!r} has no curves.png beside it (a link is not followed); serve the model.safetensors inside its run folder to show them.")
        return Response(png, media_type="image/png")

    # --- images --------------------------------------------------------------------------------

    @app.post("/predict", tags=["images"], summary="Top-k classes per image, as `convnet predict --json`")
    async def predict(
        request: Request,
        file: Annotated[UploadFile | None, File(description="one image")] = None,
        files: Annotated[list[UploadFile] | None, File(description="several images")] = None,
        top_k: Annotated[int | None, Form(ge=1, description="classes per image (default 5)")] = None,
        tta: Annotated[int | None, Form(ge=0, le=2, description="test-time augmentation level")] = None,
        model: Annotated[str | None, Form(description="a served model's name")] = None,
        top_k_query: Annotated[int | None, Query(alias="top_k", ge=1)] = None,
        tta_query: Annotated[int | None, Query(alias="tta", ge=0, le=2)] = None,
        model_query: Annotated[str | None, Query(alias="model")] = None,
    ) -> list[dict]:
        uploads = ([file] if file is not None else []) + list(files or [])
        if not uploads:
            raise HTTPException(422, "Send the image in the multipart form field 'file' (or several in 'files'); this request has neither.")
        m = served.get(_either(model, model_query, None))
        k = _either(top_k, top_k_query, DEFAULT_TOP_K)
        level = _either(tta, tta_query, 0)
        decoded = await inputs_of(request, m, uploads)
        if len(uploads) == 1 and isinstance(decoded[0], DataError):
            raise decoded[0]  # a lone bad file is the request's error
        good = [d for d in decoded if isinstance(d, torch.Tensor)]
        rankings = iter(await m.batchers[level].submit(good) if good else [])
        results = [FileResult(u.filename or f"upload {i + 1}", error=str(d)) if isinstance(d, Exception) else FileResult(u.filename or f"upload {i + 1}", next(rankings)[:k])
                   for i, (u, d) in enumerate(zip(uploads, decoded, strict=True))]
        return [r.to_dict() for r in results]

    @app.post("/cam", tags=["images"], summary="Grad-CAM: where the image made the model choose a class",
              responses={200: {"content": {"image/png": {}, "application/json": {}}}})
    async def cam(
        request: Request,
        file: Annotated[UploadFile, File(description="one image")],
        class_name: Annotated[str | None, Form(description="the class to explain; default the top class")] = None,
        format: Annotated[Literal["png", "json"], Form(description="png: the overlay; json: every image as base64")] = "png",
        model: Annotated[str | None, Form(description="a served model's name")] = None,
    ):
        m = served.explainable(model)
        pixels = await input_of(request, m, file)

        def explain() -> dict:
            clf = m.clf
            c = grad_cam(clf.model, clf.model_input(pixels), clf.classes, class_name or None)
            overlay = cam_overlay(pixels, c.heatmap)
            if format == "png":
                return {"overlay": overlay}
            (ranking,) = rank(clf, pixels[None], k=len(clf.classes))  # every class, most probable first
            return {
                "class": c.class_name,
                "probability": round(c.probability, 6),
                "classes_probabilities": [{"class": name, "probability": p} for name, p in ranking],
                "input_png": _b64(to_pil(pixels, fit_scale(tuple(pixels.shape[1:]), CAM_PIXELS))),
                "overlay_png": _b64(overlay),
            }

        answer = await anyio.to_thread.run_sync(explain)
        return _png(answer["overlay"]) if format == "png" else answer

    @app.post("/features", tags=["images"], summary="Feature maps of every convolution, and the first layer's filters",
              responses={200: {"content": {"image/png": {}, "application/json": {}}}})
    async def features(
        request: Request,
        file: Annotated[UploadFile, File(description="one image")],
        format: Annotated[Literal["json", "png"], Form(description="json: every layer as base64; png: the first layer's grid")] = "json",
        model: Annotated[str | None, Form(description="a served model's name")] = None,
    ):
        m = served.explainable(model)
        pixels = await input_of(request, m, file)

        def look() -> dict | Response:
            maps = feature_maps(m.clf.model, m.clf.model_input(pixels))
            if format == "png":
                return _png(render_feature_maps(maps[0][1]))
            layers = [{"name": name, "channels": a.shape[0], "height": a.shape[1], "width": a.shape[2], "png": _b64(render_feature_maps(a))} for name, a in maps]
            return {"layers": layers, "filters_png": _b64(render_filters(first_layer_filters(m.clf.model)))}

        return await anyio.to_thread.run_sync(look)

    # --- the worked example --------------------------------------------------------------------

    @app.get("/api/explain", tags=["explain"], summary="The worked example, as `convnet explain --json`")
    async def explain(
        kernel: Annotated[int, Query(ge=1, le=EXPLAIN_MAX)] = 2,
        stride: Annotated[int, Query(ge=1, le=EXPLAIN_MAX)] = 1,
        padding: Annotated[int, Query(ge=0, le=EXPLAIN_MAX)] = 0,
        pool: Annotated[int, Query(ge=1, le=EXPLAIN_MAX)] = 2,
        pool_stride: Annotated[int, Query(ge=1, le=EXPLAIN_MAX)] = 1,
        seed: Annotated[int, Query(ge=0, lt=2**32)] = 0,
    ) -> JSONResponse:
        try:
            return JSONResponse(worked_example(None, seed, kernel, stride, padding, pool, pool_stride))
        except SpecError as e:
            # The engine names the command's flags (--pool-stride); here they are query parameters.
            detail = str(e)
            for flag in ("pool_stride", "kernel", "stride", "padding", "pool"):
                detail = detail.replace(f"--{flag.replace('_', '-')}", flag)
            raise SpecError(detail) from None

    app.add_middleware(BodyLimit, limit=config.max_upload_bytes)
    if config.loopback:
        app.add_middleware(ThisMachineOnly, host=config.host)  # added last, so it runs first: before a body is read
    return app
