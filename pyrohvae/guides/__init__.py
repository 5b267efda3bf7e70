"""Guides, one per file, chosen by name.

A guide is a `PyroModule` that holds the networks of a model's guide (`models.py` runs them:
`vae_guide`, `hypervae_guide`, `metavae_guide`), registered with `@register("name")`. HyperVAE
guides subclass `models.TaskGuide` and say how q(u | D) reads a task; see `random_draw.py` for the paper's
guide and docs/research-variants.md for adding one.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..config import ConfigError

_GUIDES: dict[str, type] = {}


def register(name: str):
    def decorate(cls):
        cls.name = name
        _GUIDES[name] = cls
        return cls

    return decorate


def names(model: str | None = None) -> list[str]:
    return sorted(n for n, cls in _GUIDES.items() if model is None or cls.model == model)


def get(name: str, model: str) -> type:
    cls = _GUIDES.get(name)
    if cls is None or cls.model != model:
        raise ConfigError(f"unknown guide {name!r} for {model}; choose one of {', '.join(names(model))}")
    return cls


# Every module of this package registers its guides on import.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
