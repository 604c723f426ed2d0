"""The upload endpoints: /predict, /cam and /features (app.py documents the bodies).

Every setting is a multipart form field, beside the files; a query parameter is refused (422,
`no_query`) rather than ignored. The forms are parsed in memory (`UploadRoute`). Forward passes
and decoding run in worker threads, never on the event loop.
"""
from __future__ import annotations

import base64
from typing import Annotated, Literal

import anyio
import torch
from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response
from PIL import Image

from convnet.errors import DataError
from convnet.inference.model_file import Classifier
from convnet.inference.predict import FileResult, rank
from convnet.serve.dependencies import FormModel, Served, TorchModel, no_query
from convnet.serve.inputs import input_of, inputs_of, upload_name
from convnet.serve.uploads import UploadRoute
from convnet.viz.cam import CAM_PIXELS, cam_overlay, grad_cam
from convnet.viz.features import feature_maps, first_layer_filters, render_feature_maps, render_filters
from convnet.viz.grid import fit_scale, png_bytes, to_pil

DEFAULT_TOP_K = 5  # as `convnet predict`
CAM_FORMAT = "png: the overlay; json: every image as base64"
FEATURES_FORMAT = "json: every layer as base64; png: the first layer's grid"
IMAGE_RESPONSES: dict[int | str, dict] = {200: {"content": {"image/png": {}, "application/json": {}}}}

router = APIRouter(tags=["images"], route_class=UploadRoute, dependencies=[Depends(no_query)])


def _b64(image: Image.Image) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


def _png(image: Image.Image) -> Response:
    return Response(png_bytes(image), media_type="image/png")


@router.post("/predict", summary="Top-k classes per image, as `convnet predict --json`")
async def predict(
    request: Request,
    served: Served,
    m: FormModel,
    file: Annotated[UploadFile | None, File(description="one image")] = None,
    files: Annotated[list[UploadFile] | None, File(description="several images")] = None,
    top_k: Annotated[int, Form(ge=1, description="classes per image; more than the model has: all")] = DEFAULT_TOP_K,
    tta: Annotated[int, Form(ge=0, le=2, description="test-time augmentation level, as `convnet predict --tta`")] = 0,
) -> list[dict]:
    uploads = ([file] if file is not None else []) + list(files or [])
    if not uploads:
        raise HTTPException(422, "Send the image in the multipart form field 'file' (or several in 'files'); "
                                 "this request has neither.")
    decoded = await inputs_of(served, request, m.clf, uploads)
    if len(uploads) == 1 and isinstance(decoded[0], DataError):
        raise decoded[0]  # a lone bad file is the request's error
    good = [d for d in decoded if isinstance(d, torch.Tensor)]
    rankings = iter(await m.batchers[tta].submit(good) if good else [])
    results = []
    for i, (u, d) in enumerate(zip(uploads, decoded, strict=True)):
        if isinstance(d, DataError):
            results.append(FileResult(upload_name(u, i), error=str(d)))
        else:
            results.append(FileResult(upload_name(u, i), next(rankings)[:top_k]))
    return [r.to_dict() for r in results]


def _cam_answer(clf: Classifier, pixels: torch.Tensor, class_name: str | None, format: str) -> dict:
    """Grad-CAM of one uint8 (C, H, W) input: {"overlay": image} for png, else /cam's JSON body (blocking)."""
    c = grad_cam(clf.model, clf.model_input(pixels), clf.classes, class_name or None)
    overlay = cam_overlay(pixels, c.heatmap)
    if format == "png":
        return {"overlay": overlay}
    (ranking,) = rank(clf, pixels[None], k=len(clf.classes))  # every class, most probable first
    height, width = pixels.shape[1:]
    return {
        "class": c.class_name,
        "probability": round(c.probability, 6),
        "classes_probabilities": [{"class": name, "probability": p} for name, p in ranking],
        "input_png": _b64(to_pil(pixels, fit_scale((height, width), CAM_PIXELS))),
        "overlay_png": _b64(overlay),
    }


@router.post("/cam", summary="Grad-CAM: where the image made the model choose a class", responses=IMAGE_RESPONSES)
async def cam(
    request: Request,
    served: Served,
    clf: TorchModel,
    file: Annotated[UploadFile, File(description="one image")],
    class_name: Annotated[str | None, Form(description="the class to explain; default the top class")] = None,
    format: Annotated[Literal["png", "json"], Form(description=CAM_FORMAT)] = "png",
):
    pixels = await input_of(served, request, clf, file)
    answer = await anyio.to_thread.run_sync(_cam_answer, clf, pixels, class_name, format)
    return _png(answer["overlay"]) if format == "png" else answer


def _features_answer(clf: Classifier, pixels: torch.Tensor, format: str) -> dict | Response:
    """Feature maps of one uint8 (C, H, W) input: the first layer's grid as PNG, or /features' JSON body (blocking)."""
    maps = feature_maps(clf.model, clf.model_input(pixels))
    if format == "png":
        return _png(render_feature_maps(maps[0][1]))
    layers = [
        {"name": name, "channels": a.shape[0], "height": a.shape[1], "width": a.shape[2],
         "png": _b64(render_feature_maps(a))}
        for name, a in maps
    ]
    return {"layers": layers, "filters_png": _b64(render_filters(first_layer_filters(clf.model)))}


@router.post("/features", summary="Feature maps of every convolution, and the first layer's filters",
             responses=IMAGE_RESPONSES)
async def features(
    request: Request,
    served: Served,
    clf: TorchModel,
    file: Annotated[UploadFile, File(description="one image")],
    format: Annotated[Literal["json", "png"], Form(description=FEATURES_FORMAT)] = "json",
):
    pixels = await input_of(served, request, clf, file)
    return await anyio.to_thread.run_sync(_features_answer, clf, pixels, format)
