"""Authenticating what Beryl serves: an HMAC key kept outside the workspace.

Every data-only model file, the production pointer and each line of the promotion log carry an
HMAC-SHA256 over their canonical JSON, made with a key that is not stored in the workspace, so
write access to the models folder alone cannot change what is served. The key comes from::

    BERYL_SIGNING_KEY        the key itself (at least 32 characters), e.g. from a secret store
    BERYL_SIGNING_KEY_FILE   a file holding it
    otherwise                $XDG_CONFIG_HOME/beryl/signing.key (~/.config/beryl/signing.key),
                             generated with 32 random bytes on first use, mode 0600

    keyring = Keyring.from_environment(os.environ)
    signed = keyring.sign({"version": "v0001"})   # the mapping plus a "signature" field
    keyring.verify(signed, "production.json")     # the mapping without it, or IntegrityError
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beryl.errors import ConfigError, IntegrityError

KEY_ENV = "BERYL_SIGNING_KEY"
KEY_FILE_ENV = "BERYL_SIGNING_KEY_FILE"
SIGNATURE = "signature"
_MIN_KEY_CHARS = 32
_CREATE_LOCK = threading.RLock()


def canonical(data: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, exact floats, UTF-8."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


@dataclass(frozen=True)
class Keyring:
    """The signing key and where it came from (named in errors, never the key itself)."""

    key: bytes = field(repr=False)
    source: str
    created: bool = False  # this process generated the key file

    @property
    def key_id(self) -> str:
        """A fingerprint that tells keys apart without revealing them."""
        return hashlib.sha256(b"beryl-key-id:" + self.key).hexdigest()[:16]

    def signature(self, data: Mapping[str, Any]) -> str:
        return hmac.new(self.key, canonical(data), hashlib.sha256).hexdigest()

    def sign(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with a ``signature`` field covering everything else in it."""
        body = {k: v for k, v in data.items() if k != SIGNATURE}
        return {**body, SIGNATURE: {"key_id": self.key_id, "hmac_sha256": self.signature(body)}}

    def verify(self, data: Any, where: str) -> dict[str, Any]:
        """``data`` without its signature, if the signature is this key's; else IntegrityError."""
        if not isinstance(data, dict):
            raise IntegrityError(f"{where} is not a JSON object", hint=_RESTORE)
        body = {k: v for k, v in data.items() if k != SIGNATURE}
        seal = data.get(SIGNATURE)
        if not isinstance(seal, dict) or not isinstance(seal.get("hmac_sha256"), str):
            raise IntegrityError(
                f"{where} carries no signature; refusing to use it",
                hint="it was written by an older Beryl or by hand: "
                "`beryl models sign --all` re-signs a models folder you trust",
            )
        try:
            expected = self.signature(body)
        except (TypeError, ValueError) as exc:
            raise IntegrityError(f"{where} holds values that cannot be signed: {exc}") from exc
        if not hmac.compare_digest(expected, seal["hmac_sha256"]):
            other = seal.get("key_id") != self.key_id
            raise IntegrityError(
                f"{where} does not match its signature; refusing to use it",
                hint=(
                    f"it was signed with another key (key id {seal.get('key_id')!s:.16}; this "
                    f"one is {self.key_id}, from {self.source}): give Beryl the key it was "
                    "made with"
                    if other
                    else f"it was changed after Beryl wrote it: {_RESTORE}"
                ),
            )
        return body

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Keyring:
        """The key named by the environment, or the user's key file (made on first use)."""
        if environ.get(KEY_ENV):
            return cls(_checked(environ[KEY_ENV], f"${KEY_ENV}"), f"${KEY_ENV}")
        if environ.get(KEY_FILE_ENV):
            path = Path(environ[KEY_FILE_ENV]).expanduser()
            return cls(_read_key_file(path, create=False), str(path))
        path = default_key_path(environ)
        created = not path.exists()
        key = _read_key_file(path, create=True)
        return cls(key, str(path), created=created and path.exists())

    def check_outside(self, workspace: Path) -> None:
        """Refuse a key file kept inside the workspace: it would guard nothing there."""
        if self.source.startswith("$"):
            return
        with contextlib.suppress(OSError):
            if Path(self.source).resolve().is_relative_to(workspace.resolve()):
                raise ConfigError(
                    f"the signing key {self.source} lies inside the workspace {workspace}",
                    hint=f"keep it outside (the default is ~/.config/beryl/signing.key) or set "
                    f"{KEY_ENV}",
                )


_DEFAULT: Keyring | None = None


def default_keyring() -> Keyring:
    """The process's key, read from ``os.environ`` once (entry points may pass their own)."""
    global _DEFAULT
    with _CREATE_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Keyring.from_environment(os.environ)
        return _DEFAULT


def reset_default_keyring() -> None:
    """Forget the process's key (tests that change the environment)."""
    global _DEFAULT
    with _CREATE_LOCK:
        _DEFAULT = None


_RESTORE = "restore the file from a backup, or retrain (`beryl train`)"


def default_key_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or "~") / ".config")
    return Path(base).expanduser() / "beryl" / "signing.key"


def _checked(text: str, source: str) -> bytes:
    key = text.strip()
    if len(key) < _MIN_KEY_CHARS:
        raise ConfigError(
            f"the signing key in {source} is shorter than {_MIN_KEY_CHARS} characters",
            hint='make one with `python -c "import secrets; print(secrets.token_hex(32))"`',
        )
    return key.encode("utf-8")


def _read_key_file(path: Path, *, create: bool) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        if not create:
            raise ConfigError(
                f"no signing key file at {path}", hint=f"check {KEY_FILE_ENV}"
            ) from None
        with _CREATE_LOCK:
            _create_key_file(path)
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read the signing key {path}: {exc.strerror}") from exc
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"the signing key {path} can be written by other users",
            hint=f"`chmod 600 {path}`",
        )
    try:
        return _checked(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the signing key {path}: {exc}") from exc


def _create_key_file(path: Path) -> None:
    """Write a new random key; a key another process wrote first wins (``link`` never replaces)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot create the signing key {path}: {exc.strerror}",
            hint=f"set {KEY_ENV} or {KEY_FILE_ENV}, or make {path.parent} writable",
        ) from exc
