"""What is served: /healthz, the model list, each model's card and its training curves (app.py
documents the bodies). GETs only: `model` is a query parameter."""
from __future__ import annotations

import anyio
from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from convnet.serve.dependencies import QueryModel, Served

router = APIRouter(tags=["models"])

LISTED = ("name", "format", "classes", "input_size", "in_chans")  # the card's fields that GET /api/models shows


@router.get("/healthz")
async def healthz(served: Served) -> dict:
    return {"status": "ok", "models": list(served.models.by_name)}


@router.get("/api/models")
async def list_models(served: Served) -> list[dict]:
    return [{k: m.card[k] for k in LISTED} for m in served.models]


@router.get("/api/model", summary="The model card")
@router.get("/model", summary="The model card (same as /api/model)")
async def model_card(m: QueryModel) -> dict:
    return m.card


@router.get("/api/model/curves.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
async def curves(m: QueryModel) -> Response:
    png = await anyio.to_thread.run_sync(m.curves)
    if png is None:
        raise HTTPException(404, f"The model {m.name!r} has no curves.png beside it (a link is not followed); "
                                 "serve the model.safetensors inside its run folder to show them.")
    return Response(png, media_type="image/png")
