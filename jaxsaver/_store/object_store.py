"""Object stores (S3, GCS) for :mod:`jaxsaver._store`: URLs, kvstore specs, retries, errors.

Everything here is about *reaching* a bucket; the byte-level interface lives in
:class:`jaxsaver._store.kvstore.KvStore`.

* ``s3://bucket/dir/model`` -> a tensorstore ``s3`` kvstore for ``bucket``, key ``dir/model``.
  The spec always carries an explicit ``endpoint``, ``aws_region`` and ``aws_credentials``, so
  tensorstore never probes AWS or the EC2 metadata address on its own:

  - endpoint: ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, else
    ``https://s3.<region>.amazonaws.com``;
  - region: ``AWS_REGION`` or ``AWS_DEFAULT_REGION``, else ``us-east-1``;
  - credentials: ``{"type": "environment"}`` when ``AWS_ACCESS_KEY_ID`` is set, a profile when
    ``AWS_PROFILE`` is set, else anonymous. ``JAXSAVER_AWS_CREDENTIALS`` (``default``, ``imds``,
    ``ecs``, ``environment``, ``anonymous``, ``profile``) picks one explicitly, e.g. ``imds`` on EC2.
* ``gs://bucket/dir/model`` -> a tensorstore ``gcs`` kvstore. Tensorstore itself honours the
  usual Google credentials, ``TENSORSTORE_GCS_HTTP_URL`` (emulators) and
  ``GOOGLE_AUTH_TOKEN_FOR_TESTING``.
* Retries: tensorstore retries transient HTTP failures itself (``s3_request_retries`` /
  ``gcs_request_retries`` context resources, bounded below); on top of that an operation that
  still fails with a transient status (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, or
  tensorstore's "all retry attempts failed") is retried by :func:`call` a bounded number of
  times with exponential backoff. Each attempt waits at most a deadline that grows with the
  payload, so no call can hang.
* Stalled transfers: ``TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS`` / ``..._LIMIT_BYTES`` default to
  60 s below 1 byte/s when this module is imported (tensorstore reads them once, at its first
  HTTP request), so curl aborts a stalled connection and the retry policy takes over.

Environment knobs: ``JAXSAVER_STORAGE_ATTEMPTS`` (3), ``JAXSAVER_STORAGE_TIMEOUT`` (seconds per
attempt before the payload allowance, 300), ``JAXSAVER_MAX_OBJECT_BYTES`` (4 GiB),
``JAXSAVER_MAX_INFLIGHT_BYTES`` (8 GiB).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from jaxsaver._errors import (
    CheckpointNotFoundError,
    InvalidArgumentError,
    PermissionDeniedError,
    StorageError,
)

__all__ = [
    "ObjectURL",
    "RetryPolicy",
    "parse_url",
    "s3_spec",
    "gcs_spec",
    "status_of",
    "map_error",
    "call",
    "InflightBudget",
    "max_object_bytes",
    "GiB",
]

GiB = 1 << 30
T = TypeVar("T")

# Stalled-transfer detection for tensorstore's curl transport (read once by tensorstore).
os.environ.setdefault("TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS", "60")
os.environ.setdefault("TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES", "1")

#: tensorstore's own HTTP retries per request (transient statuses only).
_TS_RETRIES = {"max_retries": 2, "initial_delay": "50ms", "max_delay": "1s"}
_AWS_CREDENTIAL_TYPES = ("default", "anonymous", "environment", "imds", "profile", "ecs")


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return int(float(raw))
    except ValueError:
        raise InvalidArgumentError(f"{name}={raw!r} is not a number") from None


def max_object_bytes(env: Mapping[str, str] | None = None) -> int:
    """The largest object a store writes (tensorstore's S3 driver has no multipart upload)."""
    return _env_int(os.environ if env is None else env, "JAXSAVER_MAX_OBJECT_BYTES", 4 * GiB)


# --------------------------------------------------------------------------- URLs and specs


@dataclasses.dataclass(frozen=True)
class ObjectURL:
    """``scheme://bucket/key`` split into its parts; ``scheme`` is ``s3`` or ``gs``."""

    scheme: str
    bucket: str
    key: str

    @property
    def root(self) -> str:
        """The URL of the bucket, ending in ``/``: ``root + key`` is the full URL."""
        return f"{self.scheme}://{self.bucket}/"


_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,221}[A-Za-z0-9]$")


def parse_url(url: str) -> ObjectURL:
    """Splits ``s3://bucket/dir/model`` (``gs://``, ``gcs://`` too).

    Example:
        >>> parse_url("s3://bucket/dir/model")
        ObjectURL(scheme='s3', bucket='bucket', key='dir/model')
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("s3", "gs", "gcs"):
        raise InvalidArgumentError(f"not an object store URL (s3:// or gs://): {url!r}")
    bucket, _, key = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise InvalidArgumentError(f"invalid bucket name {bucket!r} in {url!r}")
    return ObjectURL("gs" if scheme == "gcs" else "s3" if scheme == "s3" else scheme, bucket, key)


def _aws_credentials(env: Mapping[str, str]) -> dict[str, Any]:
    chosen = env.get("JAXSAVER_AWS_CREDENTIALS")
    if chosen:
        if chosen not in _AWS_CREDENTIAL_TYPES:
            raise InvalidArgumentError(
                f"JAXSAVER_AWS_CREDENTIALS={chosen!r}: expected one of {', '.join(_AWS_CREDENTIAL_TYPES)}"
            )
        creds: dict[str, Any] = {"type": chosen}
        if chosen == "profile" and env.get("AWS_PROFILE"):
            creds["profile"] = env["AWS_PROFILE"]
        return creds
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return {"type": "environment"}
    if env.get("AWS_PROFILE"):
        return {"type": "profile", "profile": env["AWS_PROFILE"]}
    return {"type": "anonymous"}


def s3_spec(bucket: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The tensorstore kvstore spec for an S3 bucket, from the AWS environment variables.

    Example:
        >>> s3_spec("b", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1"})["endpoint"]
        'http://127.0.0.1:9000'
    """
    env = os.environ if env is None else env
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or f"https://s3.{region}.amazonaws.com"
    return {
        "driver": "s3",
        "bucket": bucket,
        "endpoint": endpoint.rstrip("/"),
        "aws_region": region,
        "aws_credentials": _aws_credentials(env),
        "context": {"s3_request_retries": dict(_TS_RETRIES)},
    }


def gcs_spec(bucket: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The tensorstore kvstore spec for a GCS bucket (credentials and endpoint: tensorstore's env)."""
    return {
        "driver": "gcs",
        "bucket": bucket,
        "context": {"gcs_request_retries": dict(_TS_RETRIES)},
    }


def spec_for(url: ObjectURL, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    return s3_spec(url.bucket, env) if url.scheme == "s3" else gcs_spec(url.bucket, env)


def cache_key(spec: Mapping[str, Any]) -> str:
    """A stable key for one store per (spec, relevant environment) per process."""
    env = {}
    if spec.get("driver") == "gcs":
        env = {k: os.environ.get(k, "") for k in ("TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING")}
    elif spec.get("driver") == "s3" and spec.get("aws_credentials", {}).get("type") == "environment":
        env = {"id": os.environ.get("AWS_ACCESS_KEY_ID", "")}
    return json.dumps([spec, env], sort_keys=True, default=str)


def url_root_of(spec: Mapping[str, Any]) -> str:
    """The user-facing prefix of keys in a store opened from ``spec`` (for messages)."""
    driver = spec.get("driver", "kvstore")
    path = spec.get("path", "")
    if driver == "s3" and spec.get("bucket"):
        return f"s3://{spec['bucket']}/{path}"
    if driver == "gcs" and spec.get("bucket"):
        return f"gs://{spec['bucket']}/{path}"
    return f"{driver}://{path}"


# --------------------------------------------------------------------------- errors and retries

_STATUS = re.compile(r"^\s*([A-Z_]{4,}):")
_TRANSIENT = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "TIMEOUT"})


def status_of(err: BaseException) -> str:
    """The absl status code at the start of a tensorstore error message (``UNKNOWN`` if none).

    Tensorstore's "All N retry attempts failed" (status ABORTED) is reported as ``UNAVAILABLE``:
    its own retries of a transient failure ran out.
    """
    if isinstance(err, TimeoutError):
        return "TIMEOUT"
    text = str(err)
    match = _STATUS.match(text)
    code = match.group(1) if match else "UNKNOWN"
    if code == "ABORTED" and "retry attempts failed" in text:
        return "UNAVAILABLE"
    if code in ("UNKNOWN", "INTERNAL") and ("CURL error" in text or "curl_code" in text):
        return "UNAVAILABLE"
    return code


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


def map_error(err: BaseException, url: str, *, operation: str = "") -> Exception:
    """A typed jaxsaver error naming ``url`` for a tensorstore failure."""
    code = status_of(err)
    text = _short(str(err))
    what = f"{operation} " if operation else ""
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or "AccessDenied" in text or "http_response_code='403'" in text:
        return PermissionDeniedError(f"{url}: {what}permission denied: {text}")
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return CheckpointNotFoundError(f"{url}: {what}failed: the bucket does not exist: {text}")
    if code == "NOT_FOUND":
        return CheckpointNotFoundError(f"{url}: {what}not found: {text}")
    if code == "TIMEOUT":
        return StorageError(f"{url}: {what}timed out: {text}")
    if code in _TRANSIENT:
        return StorageError(f"{url}: {what}failed: server unreachable or unavailable: {text}")
    return StorageError(f"{url}: {what}failed: {text}")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of transient failures with exponential backoff and a per-attempt deadline.

    Attributes:
        attempts: total tries of one operation (>= 1).
        initial_delay, max_delay: backoff between tries, in seconds.
        timeout: seconds one try may take before ``min_rate`` allowance for its payload.
        min_rate: bytes/s assumed at worst when sizing a try's deadline.
    """

    attempts: int = 3
    initial_delay: float = 0.1
    max_delay: float = 2.0
    timeout: float = 300.0
    min_rate: float = float(1 << 20)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RetryPolicy:
        env = os.environ if env is None else env
        timeout = env.get("JAXSAVER_STORAGE_TIMEOUT")
        return cls(
            attempts=max(1, _env_int(env, "JAXSAVER_STORAGE_ATTEMPTS", 3)),
            timeout=float(timeout) if timeout else 300.0,
        )

    def deadline(self, nbytes: int = 0) -> float:
        return self.timeout + nbytes / self.min_rate


def call(
    start: Callable[[], Any],
    *,
    url: str,
    policy: RetryPolicy,
    nbytes: int = 0,
    operation: str = "",
    handle: Callable[[BaseException], T] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Runs ``start()`` (returning a tensorstore Future) and waits for it, with bounded retries.

    ``handle`` may turn a failure into a result (e.g. OUT_OF_RANGE into a short read); if it
    raises or returns nothing, the failure is mapped by :func:`map_error`.
    """
    delay = policy.initial_delay
    for attempt in range(1, policy.attempts + 1):
        future = None
        try:
            future = start()
            return future.result(timeout=policy.deadline(nbytes))
        except BaseException as err:  # tensorstore raises ValueError/TimeoutError for every status
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                if future is not None:
                    future.cancel()
                raise
            if isinstance(err, TimeoutError) and future is not None:
                future.cancel()
            if handle is not None and not isinstance(err, TimeoutError):
                result = handle(err)
                if result is not None:
                    return result
            if status_of(err) in _TRANSIENT and attempt < policy.attempts:
                sleep(delay)
                delay = min(delay * 2, policy.max_delay)
                continue
            raise map_error(err, url, operation=operation) from None
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- bounded memory


class InflightBudget:
    """Bounds the bytes handed to tensorstore at once (each put copies its value inside).

    A value larger than the whole budget waits until nothing else is in flight, then goes alone.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, int(limit))
        self._used = 0
        self._cond = threading.Condition()

    def acquire(self, nbytes: int) -> int:
        need = min(max(nbytes, 0), self.limit)
        with self._cond:
            self._cond.wait_for(lambda: self._used + need <= self.limit)
            self._used += need
        return need

    def release(self, amount: int) -> None:
        with self._cond:
            self._used -= amount
            self._cond.notify_all()

    @property
    def used(self) -> int:
        return self._used


INFLIGHT = InflightBudget(_env_int(os.environ, "JAXSAVER_MAX_INFLIGHT_BYTES", 8 * GiB))


# --------------------------------------------------------------------------- metadata helpers

_SIZE_PATTERNS = (
    re.compile(r"not valid for value of size (\d+)"),  # memory driver
    re.compile(r"<ActualObjectSize>(\d+)</ActualObjectSize>"),  # S3 416 body
    re.compile(r"and total size (\d+)"),  # short HTTP response
)


def size_from_error(err: BaseException) -> int | None:
    """The object size some out-of-range errors carry (memory driver, S3's 416 body)."""
    text = str(err)
    for pattern in _SIZE_PATTERNS:
        match = pattern.search(text)
        if match:
            return int(match.group(1))
    return None


def gcs_generation_time(generation: bytes) -> float | None:
    """A GCS object's creation time from its generation (microseconds since the epoch).

    Tensorstore encodes the generation as one tag byte and a little-endian uint64.
    """
    if len(generation) != 9:
        return None
    micros = int.from_bytes(generation[1:], "little")
    seconds = micros / 1e6
    return seconds if 1e9 < seconds < 1e11 else None


def s3_last_modified(spec: Mapping[str, Any], key: str) -> float | None:
    """An S3 object's Last-Modified through botocore when it is installed (else None)."""
    try:
        import botocore.session  # optional: tensorstore does not report object times
        from botocore import UNSIGNED
        from botocore.config import Config
    except ImportError:
        return None
    creds = spec.get("aws_credentials", {}).get("type")
    session = botocore.session.get_session()
    config = Config(
        retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=10, read_timeout=30,
        signature_version=UNSIGNED if creds == "anonymous" else None,
    )
    client = session.create_client(
        "s3", endpoint_url=spec.get("endpoint"), region_name=spec.get("aws_region"), config=config
    )
    try:
        head = client.head_object(Bucket=spec["bucket"], Key=key)
    except Exception:
        return None
    return head["LastModified"].timestamp()
