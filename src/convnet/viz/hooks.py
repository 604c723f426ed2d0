"""Forward hooks on a model that may be shared (several threads answering requests at once).

A hook sees every forward pass of its module while it is registered, whoever runs it. So hooks
are only ever registered inside `hooked`, which
- holds the model's own lock from registration to removal: one hooked pass per model at a time,
  and no hook outlives its caller's pass;
- calls each hook only for passes run by the thread that registered it: a plain inference that
  another thread runs meanwhile (a server's /predict beside a /features) takes no lock, and the
  hooks neither see nor record its layers. torch runs forward hooks in the thread that calls the
  model, so the thread identifies the pass.
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
    owner = threading.get_ident()
    with _lock_of(model):
        handles = [m.register_forward_hook(_only_from(owner, h)) for m, h in hooks]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _only_from(owner: int, hook: Callable) -> Callable:
    def guarded(module, inputs, output):
        if threading.get_ident() == owner:
            return hook(module, inputs, output)
        return None

    return guarded
