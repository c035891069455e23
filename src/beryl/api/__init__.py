"""The REST API: ``create_app(settings)`` builds the ASGI app that serves the production model."""

from __future__ import annotations

from beryl.api.app import create_app

__all__ = ["create_app"]
