"""Beryl: train, serve and monitor a customer-attrition model from a folder of CSV files.

The public API is small: load a workspace's ``Settings``, work with the model ``Registry``, and
catch the errors below. Importing beryl does nothing else (no files, no logging).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beryl.config import Settings, load
from beryl.errors import (
    BerylError,
    ConfigError,
    DataError,
    EmptyDatasetError,
    IntegrityError,
    ListenError,
    ModelError,
    ModelNotFoundError,
    PipelineBusyError,
    SchemaError,
    ServiceError,
    StateBusyError,
    StateError,
    TrainingError,
)

if TYPE_CHECKING:
    from beryl.model.registry import Registry

__all__ = [
    "BerylError",
    "ConfigError",
    "DataError",
    "EmptyDatasetError",
    "IntegrityError",
    "ListenError",
    "ModelError",
    "ModelNotFoundError",
    "PipelineBusyError",
    "Registry",
    "SchemaError",
    "ServiceError",
    "Settings",
    "StateBusyError",
    "StateError",
    "TrainingError",
    "load",
]


def __getattr__(name: str) -> Any:
    # the registry (and the data libraries behind it) loads on first use, not on `import beryl`
    if name == "Registry":
        from beryl.model.registry import Registry

        return Registry
    raise AttributeError(f"module 'beryl' has no attribute {name!r}")
