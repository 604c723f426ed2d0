"""Every error the server answers is JSON {"detail": "<one sentence>"}: never a traceback.

    convnet's own errors     DataError 400 (TooLargeError 413), every other ConvnetError 422
    a wrong request          422 (missing field, wrong type, out-of-range parameter), the first problem named
    HTTP errors              their status, with Starlette's bare phrases ("Not Found") made into sentences
    anything else            500 "the server failed"; the traceback goes to the server's log only
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from convnet.errors import ConvnetError, DataError
from convnet.serve.uploads import TooLargeError

log = logging.getLogger("convnet.serve")

_WHERE = {"query": "query parameter", "body": "form field", "path": "path parameter", "header": "header",
          "cookie": "cookie"}


def one_line(text: str) -> str:
    """`text` on one line, ending in a full stop."""
    text = " ".join(str(text).split())
    return text if text.endswith((".", "?", "!")) else text + "."


def _json(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": one_line(detail)}, status_code=status, headers=headers)


def validation_sentence(error: dict) -> str:
    """One of pydantic's errors (as FastAPI reports them) as a sentence naming the parameter."""
    loc = [str(part) for part in error.get("loc", ())]
    where = _WHERE.get(loc[0], loc[0]) if loc else "request"
    name = loc[1] if len(loc) > 1 else "body"
    if error.get("type") == "missing":
        return f"The {where} {name!r} is missing; see /docs for what this endpoint takes."
    msg = str(error.get("msg", "is not valid"))
    msg = msg[0].lower() + msg[1:] if msg else "is not valid"
    given = error.get("input")
    shown = f" (got {given!r:.60})" if isinstance(given, (str, int, float)) else ""
    return f"The {where} {name!r} is wrong: {msg}{shown}."


def _http_sentence(request: Request, exc: HTTPException) -> str:
    if exc.status_code == 404 and exc.detail == "Not Found":
        return f"There is nothing at {request.url.path}; see /docs for the API."
    if exc.status_code == 405:
        return f"{request.url.path} does not answer {request.method}; see /docs for the methods it takes."
    return str(exc.detail)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _json(exc.status_code, _http_sentence(request, exc), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        return _json(422, validation_sentence(errors[0]) if errors
                     else "The request is not valid; see /docs for what this endpoint takes.")

    @app.exception_handler(ConvnetError)
    async def convnet_error(request: Request, exc: ConvnetError) -> JSONResponse:
        status = 413 if isinstance(exc, TooLargeError) else 400 if isinstance(exc, DataError) else 422
        return _json(status, str(exc))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _json(500, "The server failed on this request (a bug, not your input); its log has the details.")
