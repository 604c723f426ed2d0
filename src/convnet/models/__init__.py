"""Model architectures, each registered by name (see `registry`).

Importing this package imports every family, whose `@register_model` decorators fill the
registry (as timm does); the registry itself imports none of them.
"""
from convnet.models import airnet, resnet, sequential  # noqa: F401  (imported to register their models)
from convnet.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
