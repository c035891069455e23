"""Object storage (AWS S3 and the servers that speak its API: MinIO, SeaweedFS, ...) behind the
storage seam, for ``s3://bucket/prefix`` URLs (``registry_url`` in config.json).

``S3Storage`` keeps the promises of ``beryl.storage.Storage`` with single-part requests:

- ``read``, ``keys``, ``exists``, ``stamp``: GET, LIST, HEAD (``stamp`` is the ETag);
- ``write``: one PUT; an object is replaced whole, so a reader sees the old bytes or the new;
- ``create``: a PUT with ``If-None-Match: *``: the server refuses every writer but the first;
- ``swap``: a GET, a comparison with the bytes the caller read, then a PUT with
  ``If-Match: <the ETag of that GET>``: a writer that changed the object in between makes the
  server refuse this one;
- ``append``: an object store has no append, so a log is one object rewritten whole by the same
  conditional PUT: read it, add the line, PUT ``If-Match``; refused, read it again and retry
  (for at most ``APPEND_WAIT_S``). No line is lost (a PUT that did not see another writer's
  line is refused) or torn (an object is replaced whole), and reads and ``keys`` see the log as
  one key like any other. An append costs a read and a write of the whole log: right for the
  promotion log (one line per move of production), not for a log written many times a second.
  Threads of one process append to a key one at a time, so they never race each other at the
  server.

Every conditional PUT is single-part (``use_multipart=False``): servers check a condition on
a single PUT under the object's lock, while SeaweedFS, for one, checks a multipart upload's
condition outside it. ``put_file`` of a file larger than ``SINGLE_PUT_MAX`` without a stamp to
match (a dataset batch, an input file) is a multipart upload; create-only, it is a HEAD and then
the upload, which is create-only among writers that hold the workspace lock (a batch's id is
also new: the time it was made). A PUT whose answer was lost and retried may be refused by its
own write: ``swap`` and ``append`` read the object back and count bytes equal to theirs as their
own.

Where and who: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (none: AWS itself), AWS_REGION (or
AWS_DEFAULT_REGION), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, and
AWS_ALLOW_HTTP=true to allow a plain-http endpoint (a server on this machine). A failure is one
``StateError`` naming the URL and what to do, never a secret. obstore (the ``s3`` extra) is
imported on first use, never by ``import beryl``::

    storage = S3Storage("s3://beryl-models/team-a", os.environ)
    storage.create("versions/v0001/model.json", data)  # False: another writer has it
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from beryl._io import atomic_path
from beryl.errors import ConfigError, StateError
from beryl.storage import Entry

SCHEME = "s3"
APPEND_WAIT_S = 60.0  # how long an append keeps retrying against other writers
CONNECT_TIMEOUT_S = 5
REQUEST_TIMEOUT_S = 120  # a whole request: a model file up or down
SINGLE_PUT_MAX = 64 * 1024 * 1024  # larger files go up in parts
PART_SIZE = 16 * 1024 * 1024
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_EXAMPLE = "e.g. s3://beryl-models/team-a"
_CREDENTIALS = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_TRUE = ("1", "true", "yes")


def url_problem(url: str) -> str | None:
    """What is wrong with an object-storage URL, or None (the message never echoes a secret)."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME or not url.startswith(f"{SCHEME}://"):
        return f"must be an object-storage URL s3://BUCKET/PREFIX ({_EXAMPLE})"
    if "@" in parts.netloc:
        return f"must not hold credentials: give them in {_CREDENTIALS} ({_EXAMPLE})"
    if parts.query or parts.fragment:
        return f"must be s3://BUCKET/PREFIX without '?' or '#' ({_EXAMPLE})"
    if not _BUCKET.fullmatch(parts.netloc):
        return (
            f"{parts.netloc!r} is not a bucket name: 3 to 63 lowercase letters, digits, dots "
            f"and hyphens ({_EXAMPLE})"
        )
    segments = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if any(s in ("", ".", "..") for s in segments):
        return f"its prefix {parts.path!r} has an empty, '.' or '..' part ({_EXAMPLE})"
    return None


def _checked_key(key: str) -> str:
    """A key as ``LocalStorage`` takes it (relative, ``/``-separated, never leaving the store)."""
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(p in ("..", ".") for p in parts):
        raise ValueError(f"not a storage key: {key!r}")
    return "/".join(parts)


class S3Storage:
    """``Storage`` under a prefix of a bucket (see the module docstring)."""

    def __init__(self, url: str, environ: Mapping[str, str] | None = None) -> None:
        problem = url_problem(url)
        if problem:
            raise ConfigError(f"invalid object-storage URL: {problem}")
        parts = urlsplit(url)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.url = f"{SCHEME}://{self.bucket}/{self.prefix}".rstrip("/")
        env = os.environ if environ is None else environ
        self.endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        self._allow_http = env.get("AWS_ALLOW_HTTP", "").strip().lower() in _TRUE
        self._config = {
            name: value
            for name, value in (
                ("access_key_id", env.get("AWS_ACCESS_KEY_ID")),
                ("secret_access_key", env.get("AWS_SECRET_ACCESS_KEY")),
                ("session_token", env.get("AWS_SESSION_TOKEN")),
                ("region", env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"),
                ("endpoint", self.endpoint),
            )
            if value
        }
        self._secrets = [s for s in (env.get(v, "") for v in _SECRET_VARIABLES) if len(s) >= 4]
        self._lock = threading.Lock()
        self._store: Any = None
        self._pid = 0
        self._appending: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._appending_pid = os.getpid()

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, endpoint={self.endpoint!r})"

    def where(self, key: str) -> str:
        """How a key is named in messages: its URL."""
        return f"{self.url}/{_checked_key(key)}"

    # -- the protocol -----------------------------------------------------------------------
    def read(self, key: str) -> bytes | None:
        found = self._get(_checked_key(key), "read")
        return found[0] if found is not None else None

    def write(self, key: str, data: bytes) -> None:
        self._put(_checked_key(key), data, "write", "overwrite")

    def create(self, key: str, data: bytes) -> bool:
        return self._put(_checked_key(key), data, "write", "create")

    def swap(self, key: str, data: bytes, *, expected: bytes | None) -> bool:
        key = _checked_key(key)
        found = self._get(key, "read")
        if (found[0] if found is not None else None) != expected:
            return False
        mode: Any = "create" if found is None else {"e_tag": found[1]}
        return self._put(key, data, "write", mode) or self._holds(key, data)

    def append(self, key: str, line: str) -> None:
        key = _checked_key(key)
        entry = line.rstrip("\n").encode("utf-8") + b"\n"
        deadline = time.monotonic() + APPEND_WAIT_S
        with self._append_lock(key):
            while True:
                found = self._get(key, "read")
                old = found[0] if found is not None else b""
                data = old + (b"\n" if old and not old.endswith(b"\n") else b"") + entry
                mode: Any = "create" if found is None else {"e_tag": found[1]}
                if self._put(key, data, "append to", mode) or self._holds(key, data):
                    return
                if time.monotonic() > deadline:
                    raise StateError(
                        f"cannot append to {self.where(key)}: other writers kept changing it "
                        f"for {APPEND_WAIT_S:.0f} s",
                        hint="run the command again",
                    )
                time.sleep(random.uniform(0.005, 0.05))

    def keys(self, prefix: str = "") -> list[str]:
        base, found = self._list(prefix)
        return sorted(str(m["path"]) for m in found if str(m["path"]).startswith(base))

    def exists(self, key: str) -> bool:
        return self.stamp(key) is not None

    def stamp(self, key: str) -> str | None:
        """The key's ETag (one HEAD), which changes whenever its content does; None: absent."""
        import obstore

        key = _checked_key(key)
        store = self._client()
        try:
            meta = obstore.head(store, key)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._failure(exc, "read", key) from exc
        return str(meta["e_tag"] or meta["last_modified"])

    def put_file(
        self, key: str, path: Path, *, create: bool = False, expected: str | None = None
    ) -> str | None:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        key = _checked_key(key)
        store = self._client()
        try:
            size = path.stat().st_size
            if expected is not None or (create and size <= SINGLE_PUT_MAX):
                mode: Any = {"e_tag": expected} if expected is not None else "create"
                result = obstore.put(store, key, path, mode=mode, use_multipart=False)
            else:
                if create and self.stamp(key) is not None:
                    return None
                result = obstore.put(
                    store, key, path, use_multipart=size > SINGLE_PUT_MAX, chunk_size=PART_SIZE
                )
        except (AlreadyExistsError, PreconditionError):
            return None
        except OSError as exc:
            if isinstance(exc, FileNotFoundError | PermissionError):
                raise StateError(f"cannot read {path}: {exc.strerror or exc}") from exc
            raise self._failure(exc, "write", key) from exc
        except Exception as exc:
            raise self._failure(exc, "write", key) from exc
        return str(result["e_tag"])

    def get_file(self, key: str, path: Path) -> str | None:
        import obstore

        key = _checked_key(key)
        store = self._client()
        try:
            result = obstore.get(store, key)
            stamp, size = str(result.meta["e_tag"]), int(result.meta["size"])
            with atomic_path(path) as tmp, tmp.open("wb") as handle:
                for chunk in result.stream(min_chunk_size=PART_SIZE):
                    handle.write(chunk)
                if handle.tell() != size:
                    raise StateError(
                        f"cannot read {self.where(key)}: {handle.tell()} of {size} bytes came",
                        hint="run the command again",
                    )
        except FileNotFoundError:
            return None
        except StateError:
            raise
        except Exception as exc:
            raise self._failure(exc, "read", key) from exc
        return stamp

    def delete(self, key: str) -> None:
        import obstore

        key = _checked_key(key)
        try:
            obstore.delete(self._client(), key)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._failure(exc, "remove", key) from exc

    def listing(self, prefix: str) -> list[Entry]:
        base, found = self._list(prefix)
        entries = [
            Entry(
                str(m["path"]),
                int(m["size"]),
                str(m["e_tag"] or m["last_modified"]),
                int(m["last_modified"].timestamp() * 1e9),
            )
            for m in found
            if str(m["path"]).startswith(base) and "/" not in str(m["path"])[len(base) :]
        ]
        return sorted(entries, key=lambda e: e.key)

    # -- requests ---------------------------------------------------------------------------
    def _list(self, prefix: str) -> tuple[str, list[Any]]:
        """The folder-like prefix as a key prefix, and every object below it (paged)."""
        import obstore

        base = _checked_key(prefix.rstrip("/")) + "/" if prefix.strip("/") else ""
        store = self._client()
        try:
            return base, list(obstore.list(store, base or None).collect())
        except Exception as exc:
            raise self._failure(exc, "list", base) from exc

    def _get(self, key: str, action: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None when it does not exist."""
        import obstore

        store = self._client()
        try:
            result = obstore.get(store, key)
            return bytes(result.bytes()), str(result.meta["e_tag"])
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._failure(exc, action, key) from exc

    def _put(self, key: str, data: bytes, action: str, mode: Any) -> bool:
        """One single-part PUT; False when the server refused its condition."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        store = self._client()
        try:
            obstore.put(store, key, data, mode=mode, use_multipart=False)
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as exc:
            raise self._failure(exc, action, key) from exc
        return True

    def _holds(self, key: str, data: bytes) -> bool:
        """Whether the key holds ``data``: a refused PUT that was this writer's own, retried."""
        found = self._get(key, "read")
        return found is not None and found[0] == data

    def _client(self) -> Any:
        """The obstore client of this process (made again after a fork), checked once by a
        listing so that a missing bucket or a wrong key is named at once."""
        if self._store is not None and self._pid == os.getpid():
            return self._store
        with self._lock:
            if self._store is None or self._pid != os.getpid():
                store = self._new_store()
                import obstore

                try:
                    obstore.list_with_delimiter(store)
                except Exception as exc:
                    raise self._failure(exc, "open", "") from exc
                self._store, self._pid = store, os.getpid()
        return self._store

    def _append_lock(self, key: str) -> threading.Lock:
        """The lock this process's appends to ``key`` queue on (new ones after a fork)."""
        with self._lock:
            if self._appending_pid != os.getpid():
                self._appending, self._appending_pid = defaultdict(threading.Lock), os.getpid()
            return self._appending[key]

    def _new_store(self) -> Any:
        if self.endpoint and self.endpoint.startswith("http://") and not self._allow_http:
            raise StateError(
                f"cannot reach {self.url}: the endpoint {self.endpoint} is plain http",
                hint="use https, or set AWS_ALLOW_HTTP=true for a server on a trusted network "
                "(a local MinIO or SeaweedFS)",
            )
        try:
            from obstore.store import S3Store
        except ImportError as exc:
            raise StateError(
                f"{self.url} needs the object-storage client, which is not installed",
                hint="pip install 'beryl[s3]'",
            ) from exc
        return S3Store(
            self.bucket,
            prefix=self.prefix or None,
            config=self._config,  # type: ignore[arg-type]
            client_options={
                "allow_http": self._allow_http,
                "connect_timeout": timedelta(seconds=CONNECT_TIMEOUT_S),
                "timeout": timedelta(seconds=REQUEST_TIMEOUT_S),
            },
            retry_config={
                "max_retries": 3,
                "retry_timeout": timedelta(seconds=15),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2),
                    "base": 2,
                },
            },
        )

    def _failure(self, exc: Exception, action: str, key: str) -> StateError:
        """A client error as one line naming the URL and what to do, without a secret."""
        from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

        where = self.where(key.rstrip("/")) if key.strip("/") else self.url
        text = " ".join(str(exc).split())
        for secret in self._secrets:
            text = text.replace(secret, "***")
        server = self.endpoint or "AWS S3"
        if isinstance(exc, PermissionDeniedError | UnauthenticatedError) or " 403 " in text:
            return StateError(
                f"cannot {action} {where}: {server} refused the credentials (access denied)",
                hint=f"check {_CREDENTIALS}: they must be valid there and allowed to list, read "
                f"and write the bucket {self.bucket}",
            )
        if "NoSuchBucket" in text:
            return StateError(
                f"cannot {action} {where}: there is no bucket {self.bucket} at {server}",
                hint="create the bucket, or correct the s3:// URL in config.json",
            )
        if "error sending request" in text or "onnect" in text or "timed out" in text:
            return StateError(
                f"cannot {action} {where}: {server} cannot be reached",
                hint="start the object-storage server, or correct AWS_ENDPOINT_URL; then run "
                "the command again",
            )
        reason = re.sub(r"<\?xml.*", "", text.split(" Debug source:")[0])[:300].strip(" :-")
        return StateError(
            f"cannot {action} {where}: {reason}",
            hint="check the object-storage server and the s3:// URL in config.json, then run "
            "the command again",
        )


def checked_url(url: str | None) -> str | None:
    """``url_problem`` as a validator of ``registry_url`` (None: the local models folder)."""
    problem = None if url is None else url_problem(url)
    if problem:
        raise ValueError(problem)
    return url
