"""The HTTP app of `convnet serve`: the web pages, and a JSON API over the same engine as the CLI.

`create_app` puts together one router per area: routes_pages (pages and files), routes_models
(models), routes_predict (images) and routes_explain (the worked example). Each parameter has
one place: uploads take theirs as multipart form fields, GETs as query parameters (a query
parameter sent to an upload endpoint is refused, 422).

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
                    all form fields. Answers a JSON array, one object per
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

The worked example's settings are named as the query parameters in its errors ('pool_stride'), where
`convnet explain` names its flags (--pool-stride): the library carries the names as data (SettingError).

Errors: every 4xx and 5xx body is {"detail": "<one sentence>"} (serve.errors). Uploads: the body is
capped by --max-upload-mb (413), each image by --max-pixels read from its header (413), a request's
files by --max-files and their pixels together by --max-request-pixels, both checked before any
pixel is decoded (413); the type is judged by the content (serve.uploads); nothing is written to disk.
Decoding stops when the client hangs up.

Who may ask: bound to a loopback address (the default), the server answers only requests whose Host
header is localhost, 127.0.0.1 or [::1] (any port) or the address it is bound to; any other is a 400
(`ThisMachineOnly`). `convnet serve --host 0.0.0.0` answers any Host, and warns that it is open to the network.

Concurrency: the event loop never runs a forward pass or decodes an image; those run in worker
threads (serve.inputs). /predict goes through a micro-batcher per model and TTA level (serve.batching): requests
that arrive together share one forward pass; a lone request runs at once.
"""
from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from convnet.serve import routes_explain, routes_models, routes_pages, routes_predict
from convnet.serve.config import ServeConfig
from convnet.serve.dependencies import AppState, ServedModels
from convnet.serve.errors import install_error_handlers
from convnet.serve.hosts import ThisMachineOnly
from convnet.serve.models import ServedModel
from convnet.serve.uploads import BodyLimit

DESCRIPTION = """See what a trained convnet model sees: predictions, Grad-CAM, feature maps, the worked example.

Each parameter has one place. The upload endpoints (POST /predict, /cam, /features) take every
setting, `model` included, as a multipart form field beside the files, and refuse a query
parameter (422). The GET endpoints take theirs as query parameters. Every error is
`{"detail": "<one sentence>"}`."""


def create_app(models: list[ServedModel], config: ServeConfig | None = None) -> FastAPI:
    """The app serving `models` (loaded by `serve.models.load_models`) under `config`'s limits
    (default `ServeConfig()`)."""
    config = config or ServeConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.gather(*(b.close() for m in models for b in m.batchers.values()))

    app = FastAPI(
        title="convnet",
        description=DESCRIPTION,
        version="1",
        lifespan=lifespan,
        docs_url=None,  # routes_pages serves /docs from local files, not FastAPI's default CDN
        redoc_url=None,
    )
    # Decoding a large image takes memory; at most one per core decodes at a time.
    app.state.convnet = AppState(ServedModels(models), config, anyio.CapacityLimiter(max(2, os.cpu_count() or 1)))
    install_error_handlers(app)
    for area in (routes_pages, routes_models, routes_predict, routes_explain):
        app.include_router(area.router)
    app.add_middleware(BodyLimit, limit=config.max_upload_bytes)
    if config.loopback:
        app.add_middleware(ThisMachineOnly, host=config.host)  # added last, so it runs first: before a body is read
    return app
