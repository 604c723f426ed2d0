"""What a client may upload, and how an upload becomes a Pillow image: limits first, then decoding.

Every upload is someone else's file. The rules:
- The request body is capped (`BodyLimit`, ASGI middleware): a declared Content-Length over the
  cap is refused before a byte is read, and a body that grows past it while arriving (chunked)
  is refused when it does. Either way the answer is 413 and nothing more is read.
- The form is parsed in memory (`UploadRoute`) and the bytes are decoded from memory
  (`io.BytesIO`): an upload is never written to disk.
- The type is judged by the content, never the name, and only the formats convnet reads are
  tried (`FORMATS`), so Pillow never hands a file to an external program (EPS to Ghostscript).
- The pixel count is read from the header and checked before any pixel is decoded
  (decompression bombs: a few kB of PNG can claim 100,000 x 100,000 pixels), per image and for
  the whole request, and so is the number of files (`check_request_pixels`, `check_file_count`): a request of many tiny
  files that each claim a large screen would otherwise keep the decoders busy for everyone.
- Truncated or damaged data is a one-sentence 400, whatever the decoder raised.
"""
from __future__ import annotations

import io
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from PIL import Image
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser, parse_options_header

from convnet.errors import DataError

# The formats `convnet train` reads (README: JPEG, PNG, BMP, GIF, WebP, TIFF), as Pillow names
# their openers (JPEG's also opens MPO, the JPEG variant many cameras write).
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
FORMAT_NAMES = "JPEG, PNG, BMP, GIF, WebP or TIFF"
# How each of those formats begins: a file that starts like one but does not open is damaged, not foreign.
SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a", b"RIFF", b"II*\x00", b"MM\x00*")
MB = 1_000_000


class TooLargeError(DataError):
    """An upload over one of the server's limits (HTTP 413)."""


def open_upload(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """The uploaded bytes as a Pillow image whose header is read and checked, no pixel decoded yet.

    Args:
        name: the file name the client gave, used only in messages.
    Raises:
        TooLargeError: more than `max_pixels` pixels.
        DataError: not an image in one of `FORMATS`.
    """
    # registers every opener once: `formats` may only name registered ones, and WEBP and TIFF are not preloaded
    Image.init()
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise TooLargeError(f"{name} claims more pixels than this server decodes; upload a smaller image.") from None
    except Exception:  # whatever a decoder raises on hostile bytes, the file is not an image we can read
        if data.startswith(SIGNATURES):
            raise DataError(f"{name} starts like an image but is damaged or cut short; "
                            "upload the whole file again.") from None
        raise DataError(f"{name} is not an image (its content is none of {FORMAT_NAMES}); "
                        "upload a picture in one of those formats.") from None
    width, height = img.size
    if width * height > max_pixels:
        raise TooLargeError(f"{name} is {width}x{height} pixels, over this server's limit of {max_pixels:,} "
                            "(--max-pixels); upload a smaller image.")
    return img


def check_file_count(count: int, max_files: int) -> None:
    """Raises TooLargeError when a request has more than `max_files` files."""
    if count > max_files:
        raise TooLargeError(f"This request has {count} files, over this server's limit of {max_files} (--max-files); "
                            "send them in several requests.")


def check_request_pixels(images: list[Image.Image], max_request_pixels: int) -> None:
    """Raises TooLargeError when `images` (from `open_upload`) claim more pixels together than `max_request_pixels`."""
    claimed = sum(img.width * img.height for img in images)
    if claimed > max_request_pixels:
        raise TooLargeError(f"The images of this request claim {claimed:,} pixels together, "
                            f"over this server's limit of {max_request_pixels:,} (--max-request-pixels); "
                            "send fewer or smaller images per request.")


def decode_upload(img: Image.Image, name: str) -> Image.Image:
    """Decode the pixels of an image from `open_upload`.

    Raises:
        DataError: truncated or damaged data.
    """
    try:
        img.load()
    except Exception as e:  # truncated data, a broken chunk, a corrupt stream: all the same to the client
        reason = " ".join(str(e).split()).rstrip(".") or type(e).__name__
        raise DataError(f"{name} is damaged or cut short ({reason}); upload the whole file again.") from None
    return img


def _too_large_body(limit: int) -> bytes:
    detail = (f"The upload is larger than this server's limit of {limit / MB:g} MB (--max-upload-mb); "
              "send a smaller file or fewer files.")
    return json.dumps({"detail": detail}).encode()


class BodyLimit:
    """ASGI middleware: refuses (413) any request whose body is over `limit` bytes.

    The body is read here, up to the limit, and replayed to the app: a request never reaches a
    form parser with more than `limit` bytes, so the parser can keep every part in memory.
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would tell it

        await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        body = _too_large_body(self.limit)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class InMemoryFormRequest(Request):
    """A request whose multipart form is parsed with every part in memory, never in a temporary file.

    Starlette spools a file part over `MultiPartParser.spool_max_size` (1 MB) to disk; that is a
    class attribute, so raising it would change every app in the process. Here each request's
    parser gets its own: the body, which `BodyLimit` has already capped and read into memory.
    """

    # Starlette's `Request.form()` (1.10) parses through this method and keeps what it returns.
    async def _get_form(self, *, max_files: int | float = 1000, max_fields: int | float = 1000,
                        max_part_size: int = 1024 * 1024) -> FormData:
        content_type, _ = parse_options_header(self.headers.get("Content-Type", ""))
        if self._form is None and content_type == b"multipart/form-data":
            body = await self.body()
            parser = MultiPartParser(self.headers, self.stream(), max_files=max_files, max_fields=max_fields,
                                     max_part_size=max_part_size)
            parser.spool_max_size = len(body)  # no part is larger than the whole body: every part stays in memory
            try:
                self._form = await parser.parse()
            except MultiPartException as e:
                raise HTTPException(400, f"The multipart form cannot be read ({e.message.rstrip('.')}); "
                                         "send a well-formed form.") from None
        return await super()._get_form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)


class UploadRoute(APIRoute):
    """The route class of the upload endpoints: their requests are `InMemoryFormRequest`s."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def in_memory(request: Request) -> Response:
            return await handler(InMemoryFormRequest(request.scope, request.receive))

        return in_memory
