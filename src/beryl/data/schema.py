"""Column roles (target, identifiers, numeric and categorical features) and their inference.

A workspace's schema is fixed by the first ingestion (or by the feature lists in config) and kept
in the dataset manifest, so later files are checked against the same columns and types.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from beryl.config import Settings
from beryl.errors import SchemaError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

MAX_EXACT_LABEL = 2**53  # integer labels beyond this are not exact in the float they parse through


@dataclass(frozen=True)
class Schema:
    """Which column plays which role, and the label's type."""

    target: str
    positive_label: int | str
    id_columns: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    # Where each feature's type came from, for messages: "inferred as numeric from the first
    # ingested file a.csv", "listed in numeric_features in config.json", ... Not part of what
    # the schema means (equality and ``key`` ignore it).
    origin: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def columns(self) -> list[str]:
        """Every column the dataset keeps, in dataset order."""
        return [*self.id_columns, *self.features, self.target]

    @property
    def text_columns(self) -> list[str]:
        """Columns read as written, never as numbers: identifiers, categories, the label."""
        return [*self.id_columns, *self.categorical, self.target]

    @property
    def label_is_numeric(self) -> bool:
        return isinstance(self.positive_label, int)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.origin:
            del data["origin"]  # as written before origins were recorded
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        return cls(
            target=data["target"],
            positive_label=data["positive_label"],
            id_columns=list(data.get("id_columns", [])),
            numeric=list(data.get("numeric", [])),
            categorical=list(data.get("categorical", [])),
            origin={str(k): str(v) for k, v in dict(data.get("origin") or {}).items()},
        )

    def key(self) -> str:
        """A short fingerprint of what the schema means (roles and types, not origins): a file
        refused against one schema is judged again when the dataset's schema has another key."""
        data = {k: v for k, v in asdict(self).items() if k != "origin"}
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def with_origin(self, origin: dict[str, str]) -> Schema:
        """The same schema, with ``origin`` filling in features whose origin is not known."""
        merged = {c: origin[c] for c in self.features if c in origin}
        merged.update({c: v for c, v in self.origin.items() if c in self.features})
        return Schema(
            self.target,
            self.positive_label,
            list(self.id_columns),
            list(self.numeric),
            list(self.categorical),
            merged,
        )

    def check_settings(self, settings: Settings) -> None:
        """Refuse a config whose roles contradict the schema the dataset was built with."""
        problems = []
        if settings.target != self.target:
            problems.append(f"target is {settings.target!r} but the dataset uses {self.target!r}")
        if settings.positive_label != self.positive_label:
            problems.append(
                f"positive_label is {settings.positive_label!r} but the dataset uses "
                f"{self.positive_label!r}"
            )
        if list(settings.id_columns) != list(self.id_columns):
            problems.append(f"id_columns differ from the dataset's {self.id_columns}")
        if settings.numeric_features is not None and settings.numeric_features != self.numeric:
            problems.append(f"numeric_features differ from the dataset's {self.numeric}")
        if (
            settings.categorical_features is not None
            and settings.categorical_features != self.categorical
        ):
            problems.append(f"categorical_features differ from the dataset's {self.categorical}")
        if problems:
            raise SchemaError(
                "config does not match the ingested dataset: " + "; ".join(problems),
                hint=self._retype_hint(settings)
                or "restore the old setting, or start a new output_folder_path",
            )

    def _retype_hint(self, settings: Settings) -> str | None:
        """How to get there when the config only moves features between numeric and
        categorical: re-type the stored data (``beryl dataset retype``)."""
        wanted_numeric = settings.numeric_features
        wanted_categorical = settings.categorical_features
        if (
            settings.target != self.target
            or settings.positive_label != self.positive_label
            or list(settings.id_columns) != list(self.id_columns)
        ):
            return None
        to_categorical = [c for c in self.numeric if c in (wanted_categorical or [])]
        to_numeric = [c for c in self.categorical if c in (wanted_numeric or [])]
        if not to_categorical and not to_numeric:
            return None
        commands = [f"`beryl dataset retype {c} --as categorical`" for c in to_categorical]
        commands += [f"`beryl dataset retype {c} --as numeric`" for c in to_numeric]
        return (
            "the stored data keeps the types it was ingested with; re-type it with "
            + " and ".join(commands)
            + ", or restore the old setting"
        )


def looks_numeric(series: pd.Series) -> bool:
    """Whether the careful reader takes a column as numeric: every value is a number (text is
    trimmed, blanks are missing), and it is not true/false."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return False
    if pd.api.types.is_numeric_dtype(series):
        return True
    values = series.dropna().astype(str).str.strip()
    values = values[values != ""]
    if values.empty:
        return True
    return bool(pd.to_numeric(values, errors="coerce").notna().all())


def infer_schema(settings: Settings, frame: pd.DataFrame, source: str) -> Schema:
    """Schema from config, with feature lists inferred from ``frame``'s columns when absent."""
    return infer_roles(settings, list(frame.columns), lambda c: looks_numeric(frame[c]), source)


def infer_roles(
    settings: Settings, columns: list[str], is_numeric: Callable[[str], bool], source: str
) -> Schema:
    """Schema from config; a feature not listed there is numeric when ``is_numeric`` says so."""
    missing = [c for c in [settings.target, *settings.id_columns] if c not in columns]
    if missing:
        raise SchemaError(
            f"{source}: missing column(s) {', '.join(missing)}; found {', '.join(columns)}",
            hint="check target and id_columns in config.json",
        )
    reserved = {settings.target, *settings.id_columns}
    numeric = settings.numeric_features
    categorical = settings.categorical_features
    origin = {c: "listed in numeric_features in config.json" for c in numeric or []}
    origin |= {c: "listed in categorical_features in config.json" for c in categorical or []}
    if numeric is None or categorical is None:
        listed = set(numeric or []) | set(categorical or [])
        rest = [c for c in columns if c not in reserved and c not in listed]
        inferred_numeric = [c for c in rest if is_numeric(c)]
        if numeric is None:
            numeric = inferred_numeric
        if categorical is None:
            categorical = [c for c in rest if c not in inferred_numeric]
        for column in rest:
            kind = "numeric" if column in inferred_numeric else "categorical"
            origin.setdefault(column, f"inferred as {kind} from the first ingested file {source}")
    overlap = (set(numeric) & set(categorical)) | (reserved & (set(numeric) | set(categorical)))
    if overlap:
        raise SchemaError(
            f"column(s) {', '.join(sorted(overlap))} have more than one role",
            hint="a column is the target, an identifier, numeric or categorical: pick one",
        )
    if not numeric and not categorical:
        raise SchemaError(
            f"{source}: no feature columns besides the target and identifiers",
            hint="add feature columns or list them in numeric_features / categorical_features",
        )
    return Schema(
        target=settings.target,
        positive_label=settings.positive_label,
        id_columns=list(settings.id_columns),
        numeric=list(numeric),
        categorical=list(categorical),
        origin={c: origin[c] for c in [*numeric, *categorical] if c in origin},
    )


def arrow_schema(schema: Schema) -> pa.Schema:
    """The dataset's column types: text as large strings, numbers as float64, integer labels."""
    import pyarrow as pa

    fields = []
    for column in schema.columns:
        if column in schema.numeric:
            kind = pa.float64()
        elif column == schema.target and schema.label_is_numeric:
            kind = pa.int64()
        else:
            kind = pa.large_string()
        fields.append(pa.field(column, kind))
    return pa.schema(fields)
