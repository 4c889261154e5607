"""Model registry: name -> function returning the model's :class:`~maskzoo.config.ModelConfig`."""

from __future__ import annotations

from collections.abc import Callable

from maskzoo.config import ModelConfig

_CONFIGS: dict[str, Callable[[], ModelConfig]] = {}


def register(name: str):
    """Decorator registering a config function under ``name``; a second registration raises ValueError."""

    def decorator(fn: Callable[[], ModelConfig]):
        if name in _CONFIGS:
            raise ValueError(f"model name {name!r} is already registered")
        _CONFIGS[name] = fn
        return fn

    return decorator


def names() -> list[str]:
    return sorted(_CONFIGS)


def config_of(name: str) -> ModelConfig:
    """The default config of a registered model; KeyError listing the registered names otherwise."""
    if name not in _CONFIGS:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(names())}")
    return _CONFIGS[name]()
