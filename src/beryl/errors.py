"""Every error Beryl raises on purpose, each with the exit code the CLI uses for it.

The tree::

    BerylError (exit 1)
    ├── ConfigError(ValueError)            exit 2   bad or missing config.json
    ├── DataError(ValueError)              exit 3   input data Beryl cannot use
    │   ├── SchemaError                             columns or values do not fit the schema
    │   └── EmptyDatasetError(LookupError)          nothing ingested yet
    ├── ModelError                         exit 4   models and the registry
    │   ├── ModelNotFoundError(LookupError)         no such version / no production model
    │   ├── IntegrityError                          a model file does not match its card
    │   └── TrainingError                           the estimator refused the data or parameters
    ├── PipelineBusyError(RuntimeError)    exit 5   another pass holds the lock
    ├── ServiceError(RuntimeError)         exit 6   the API server is unreachable or answered badly
    └── StateError(RuntimeError)           exit 7   workspace state damaged or unavailable
        └── StateBusyError                          held by another process past the wait

The API answers ``StateError`` and ``IntegrityError`` with 503 (a server fault, never the
caller's), ``StateBusyError`` with 503 and ``Retry-After``.

A partially successful ingestion (some files quarantined) is not an error: commands report it with
exit code ``EXIT_PARTIAL`` (10); a pass that promoted but then failed a later step reports
``EXIT_PROMOTED_WITH_ERRORS`` (11).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 10
# Production moved, but a later step (deployment folder, records, report, API calls) failed;
# the next pass repairs what it can.
EXIT_PROMOTED_WITH_ERRORS = 11


class BerylError(Exception):
    """Root of every error Beryl raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(BerylError, ValueError):
    """The configuration file is missing, unreadable or invalid."""

    exit_code = 2

    def __init__(self, message: str, *, problems: list[str] | None = None, hint: str | None = None):
        self.problems = problems or []
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message, hint=hint)


class DataError(BerylError, ValueError):
    """Input data that Beryl cannot use as it is."""

    exit_code = 3


class SchemaError(DataError):
    """Columns or values that do not fit the workspace's schema."""


class EmptyDatasetError(DataError, LookupError):
    """The consolidated dataset has no rows yet."""


class ModelError(BerylError):
    """Problems with models and the model registry."""

    exit_code = 4


class ModelNotFoundError(ModelError, LookupError):
    """A model version (or the production model) does not exist."""


class IntegrityError(ModelError):
    """A model file does not match its signature (or its pickle the signed sha256): never loaded."""


class TrainingError(ModelError, ValueError):
    """The estimator refused the data or its parameters."""


class PipelineBusyError(BerylError, RuntimeError):
    """Another pass of the loop holds the workspace lock."""

    exit_code = 5


class ServiceError(BerylError, RuntimeError):
    """The API server could not be reached or gave an unusable answer."""

    exit_code = 6


class ListenError(BerylError, RuntimeError):
    """``beryl serve`` could not start listening (the address is in use, or not this host's)."""

    exit_code = 8


class StateError(BerylError, RuntimeError):
    """A state file of the workspace (history database, dataset record, a batch) is damaged,
    missing or unavailable: not the caller's input, and not something a retry with other
    input fixes."""

    exit_code = 7


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of a third party's error (its class name when it says nothing), for a
    one-line message."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


def describe_os_error(exc: OSError, path: object = None) -> tuple[str, str]:
    """One line for an OS error (what failed, on which path) and what to do about it."""
    import errno as codes

    where = path if path is not None else exc.filename
    shown = f" {where}" if where else ""
    reason = exc.strerror or str(exc)
    number = exc.errno
    text = str(exc)
    if number in (codes.ENOSPC, codes.EDQUOT) or "No space left" in text:
        return (
            f"no space left on the disk holding{shown or ' the workspace'}",
            "free some space there, then run the command again; what Beryl had published is as "
            "it was",
        )
    if number in (codes.EACCES, codes.EPERM):
        return (
            f"permission denied:{shown or ' a workspace file'}",
            "give the user running Beryl access to it, or run Beryl as its owner; then run the "
            "command again",
        )
    if number == codes.EROFS:
        return (
            f"{where or 'the workspace'} is on a read-only file system",
            "read-only commands work there: history, models list, diagnose, predict, serve; "
            "run the others where the workspace can be written",
        )
    message = f"{where}: {reason}" if where else reason
    return message, "check the file and the disk, then run the command again"


class StateBusyError(StateError):
    """Another process holds a state file (the history database) longer than Beryl waits."""

    retry_after_s = 1
