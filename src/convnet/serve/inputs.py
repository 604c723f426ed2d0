"""Uploaded files to model inputs, off the event loop: limits checked first, then decoding one
file at a time in worker threads (serve.uploads says what is checked and why)."""
from __future__ import annotations

import anyio
import torch
from fastapi import HTTPException, Request, UploadFile
from PIL import Image

from convnet.errors import ConvnetError, DataError
from convnet.inference.loading import RunnableModel
from convnet.serve.dependencies import AppState
from convnet.serve.uploads import check_file_count, check_request_pixels, decode_upload, open_upload


def upload_name(upload: UploadFile, i: int) -> str:
    """The file name the client gave, or "upload N" (1-based) when it gave none."""
    return upload.filename or f"upload {i + 1}"


def to_input(clf: RunnableModel, image: Image.Image, name: str) -> torch.Tensor:
    """An image from `open_upload`, decoded and converted to the model's uint8 (C, H, W) input (blocking)."""
    image = decode_upload(image, name)
    try:
        return clf.to_input(image)
    except (OSError, ValueError) as e:  # a decoded image Pillow cannot convert (odd mode)
        if isinstance(e, ConvnetError):
            raise
        raise DataError(f"{name} cannot be converted to the model's input ({e}); "
                        "upload an RGB or grayscale picture.") from None


def _open_all(datas: list[bytes], names: list[str], max_pixels: int) -> list[Image.Image | DataError]:
    """Each upload's header read and checked (`open_upload`), or the DataError that says why not (blocking)."""
    opened: list[Image.Image | DataError] = []
    for data, name in zip(datas, names, strict=True):
        try:
            opened.append(open_upload(data, name, max_pixels))
        except DataError as e:
            opened.append(e)
    return opened


async def inputs_of(
    served: AppState, request: Request, clf: RunnableModel, uploads: list[UploadFile]
) -> list[torch.Tensor | DataError]:
    """Each upload as the model's uint8 (C, H, W) input, or the DataError that says why it is not one.

    The whole request is refused (TooLargeError, 413) when it has too many files or they claim
    too many pixels together, before any pixel is decoded. Decoding runs in worker threads one
    file at a time, so other requests' files take turns with these, and stops when the client
    has hung up.
    """
    config = served.config
    check_file_count(len(uploads), config.max_files)
    names = [upload_name(u, i) for i, u in enumerate(uploads)]
    datas = [await u.read() for u in uploads]
    opened = await anyio.to_thread.run_sync(_open_all, datas, names, config.max_pixels, limiter=served.decoders)
    check_request_pixels([img for img in opened if isinstance(img, Image.Image)], config.max_request_pixels)
    inputs: list[torch.Tensor | DataError] = []
    for img, name in zip(opened, names, strict=True):
        if isinstance(img, DataError):
            inputs.append(img)
            continue
        if await request.is_disconnected():
            raise HTTPException(400, "The client hung up before its images were decoded.")  # nobody reads it
        try:
            inputs.append(await anyio.to_thread.run_sync(to_input, clf, img, name, limiter=served.decoders))
        except DataError as e:
            inputs.append(e)
    return inputs


async def input_of(served: AppState, request: Request, clf: RunnableModel, upload: UploadFile) -> torch.Tensor:
    """One upload as the model's input; a bad file is the request's error."""
    (pixels,) = await inputs_of(served, request, clf, [upload])
    if isinstance(pixels, DataError):
        raise pixels
    return pixels
