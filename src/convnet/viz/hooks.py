"""Forward hooks on a model that may be shared (several threads answering requests at once).

A hook sees every forward pass of its module while it is registered, whoever runs it. So hooks
are only ever registered inside `hooked`, which holds the model's own lock from registration
to removal: one hooked pass per model at a time, and no hook outlives its caller's pass.
Passes that use no hooks (plain inference) do not take the lock and are never affected,
because no hook stays registered outside `hooked`.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator

from torch import nn

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _lock_of(model: nn.Module) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(model, threading.Lock())


@contextlib.contextmanager
def hooked(model: nn.Module, hooks: Iterable[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Register forward hooks (module, hook) on `model`'s modules for the body's duration.

    Raises:
        ValueError: a module that is not part of `model`.
    """
    hooks = list(hooks)
    members = {id(m) for m in model.modules()}
    if any(id(m) not in members for m, _ in hooks):
        raise ValueError("hooked() only registers hooks on the model's own modules")
    with _lock_of(model):
        handles = [m.register_forward_hook(h) for m, h in hooks]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
