"""The pages and their files: /, /explain, /static/... and /docs (Swagger UI from local files, so it
works offline like the pages). None of them is part of the API's OpenAPI description."""
from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
# Swagger UI's script, style and icon, as the fastapi-offline package ships them (MIT; Swagger UI is
# Apache-2.0): /docs loads nothing from a CDN.
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    path = STATIC / name
    if not path.is_file():
        raise HTTPException(404, f"This installation has no {name}; reinstall convnet with its package data.")
    return FileResponse(path, media_type="text/html")


@router.get("/")
async def index() -> FileResponse:
    return _page("index.html")


@router.get("/explain")
async def explain_page() -> FileResponse:
    return _page("explain.html")


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title="convnet API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon.png",
    )


router.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
router.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
