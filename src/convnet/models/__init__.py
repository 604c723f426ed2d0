"""Model architectures, each registered by name (see `registry`).

Attributes load lazily so that torch-free code (the NumPy `scratch` engine) can import
`convnet.models.spec` without importing torch.
"""
__all__ = ["create_model", "list_models", "register_model"]


def __getattr__(name: str):
    if name in __all__:
        from convnet.models import registry

        return getattr(registry, name)
    raise AttributeError(name)
