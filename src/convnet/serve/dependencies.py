"""What a route asks for by its type (FastAPI dependencies): the app's models and limits, and the
model a request names.

    Served        the app's models, limits and decoder slots (`AppState`, made by `create_app`)
    QueryModel    the model a GET names in the query parameter `model` (default: the first served)
    FormModel     the model an upload names in the form field `model` (default: the first served)
    TorchModel    the Classifier of the model an upload names, refused (400) for an ONNX file: Grad-CAM
                  and feature maps need its PyTorch layers

Each parameter has one place: uploads take theirs as multipart form fields, GETs as query
parameters. `no_query` refuses a query parameter sent to an upload endpoint, which would
otherwise be ignored without a word.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import Depends, Form, HTTPException, Query, Request

from convnet.inference.model_file import Classifier
from convnet.serve.config import ServeConfig
from convnet.serve.models import ServedModel

MODEL_DOC = "a served model's name (GET /api/models lists them); default: the first one given to `convnet serve`"


class ServedModels:
    """The models by name, and the sentences for asking for one that is not there."""

    def __init__(self, models: list[ServedModel]):
        if not models:
            raise ValueError("a server needs at least one model")
        self.by_name = {m.name: m for m in models}
        self.default = models[0]

    def __iter__(self):
        return iter(self.by_name.values())

    def get(self, name: str | None) -> ServedModel:
        if name is None or name == "":
            return self.default
        if name not in self.by_name:
            choices = ", ".join(self.by_name)
            raise HTTPException(404, f"No model named {name!r} is served here; choose one of: {choices}.")
        return self.by_name[name]


@dataclass(frozen=True)
class AppState:
    """What every route of one app shares; `create_app` keeps it as `app.state.convnet`."""

    models: ServedModels
    config: ServeConfig
    decoders: anyio.CapacityLimiter  # decoding a large image takes memory: at most one per core at a time


def app_state(request: Request) -> AppState:
    return request.app.state.convnet


Served = Annotated[AppState, Depends(app_state)]


def model_in_query(served: Served, model: Annotated[str | None, Query(description=MODEL_DOC)] = None) -> ServedModel:
    return served.models.get(model)


def model_in_form(served: Served, model: Annotated[str | None, Form(description=MODEL_DOC)] = None) -> ServedModel:
    return served.models.get(model)


QueryModel = Annotated[ServedModel, Depends(model_in_query)]
FormModel = Annotated[ServedModel, Depends(model_in_form)]


def torch_model_in_form(m: FormModel) -> Classifier:
    if m.torch_classifier is None:
        raise HTTPException(400, f"The model {m.name!r} is an ONNX file, which has no PyTorch layers to look into; "
                                 "serve its model.safetensors for Grad-CAM and feature maps.")
    return m.torch_classifier


TorchModel = Annotated[Classifier, Depends(torch_model_in_form)]


def no_query(request: Request) -> None:
    """Refuses (422) a query parameter on an upload endpoint, whose settings are form fields."""
    if request.query_params:
        name = next(iter(request.query_params))[:40]
        raise HTTPException(422, f"{request.url.path} takes its settings as multipart form fields, not query "
                                 f"parameters; send {name!r} as a form field.")
