"""Beryl: train, serve and monitor a customer-attrition model from a folder of CSV files.

The public API is small: load a workspace's ``Settings``, work with the model ``Registry``, and
catch the errors below. Importing beryl does nothing else (no files, no logging).
"""

from __future__ import annotations

from beryl.config import Settings, load
from beryl.errors import (
    BerylError,
    ConfigError,
    DataError,
    EmptyDatasetError,
    IntegrityError,
    ModelError,
    ModelNotFoundError,
    PipelineBusyError,
    SchemaError,
    ServiceError,
    TrainingError,
)
from beryl.registry import Registry

__all__ = [
    "BerylError",
    "ConfigError",
    "DataError",
    "EmptyDatasetError",
    "IntegrityError",
    "ModelError",
    "ModelNotFoundError",
    "PipelineBusyError",
    "Registry",
    "SchemaError",
    "ServiceError",
    "Settings",
    "TrainingError",
    "load",
]
