"""The model card: everything known about one model version, as its ``card.json`` holds it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ModelCard:
    """Everything known about one model version."""

    id: str
    created: str
    schema: dict[str, Any]
    parameters: dict[str, Any]
    classes: list[Any]
    training: dict[str, Any]
    libraries: dict[str, str]
    model_sha256: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)
    # how the settings were chosen on the training data (``beryl.model.tuning.Tuning``)
    tuning: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelCard:
        """The card ``data`` describes; TypeError or ValueError when it is not one."""
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        card = cls(**data)
        for name, kind in _CARD_FIELDS:
            if not isinstance(getattr(card, name), kind):
                raise TypeError(f"{name} is not a {kind.__name__}")
        f1 = card.metrics.get("f1")
        if f1 is not None and (isinstance(f1, bool) or not isinstance(f1, int | float)):
            raise ValueError(f"metrics.f1 {f1!r} is not a number")
        return card

    @property
    def f1(self) -> float | None:
        value = self.metrics.get("f1")
        return float(value) if value is not None else None


_CARD_FIELDS: tuple[tuple[str, type], ...] = (
    ("id", str),
    ("created", str),
    ("schema", dict),
    ("parameters", dict),
    ("classes", list),
    ("training", dict),
    ("libraries", dict),
    ("model_sha256", str),
    ("metrics", dict),
    ("decision", dict),
    ("tuning", dict),
)
