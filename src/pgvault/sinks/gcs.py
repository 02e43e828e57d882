"""The ``gcs`` sink: Google Cloud Storage, through gcsfs.

Every object goes up as a resumable upload straight to its final name: GCS shows the object only
when the last chunk is accepted, which is the atomic commit the sink contract asks for. Chunks are
retried one by one; before re-sending, the sink asks the upload how much it already holds, so a
connection lost mid-chunk neither duplicates nor drops bytes. A create-if-absent write opens its
session with ``ifGenerationMatch=0``: GCS refuses to finalise it (412) if the name exists by then,
atomically on the service. An aborted write cancels its upload
session (GCS also expires abandoned sessions after a week; they never show as objects).

Credentials come from the Google chain (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's application
default credentials, the metadata server) or a service-account ``key_file``. gcsfs's own retry
loop is bypassed so that ``retry_attempts`` and ``retry_max_seconds`` bound every call.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote

# Without the extra these imports fail, and the component loader turns the ImportError into
# "pip install 'pgvault[gcs]'". gcsfs.core is the plain JSON-API filesystem that the resumable
# protocol below speaks; the package's default class may be an experimental gRPC variant.
import aiohttp
import attrs
import gcsfs.core
import gcsfs.retry

from pgvault.sinks.api import CreateGuarantee
from pgvault.sinks.fsspec_base import FsspecSink, Upload, parse_bucket_url
from pgvault.sinks.retry import chain

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


def _bucket_url(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    parse_bucket_url(value, "gs")


@attrs.frozen(kw_only=True)
class GcsSink(FsspecSink):
    """Stores objects in a GCS bucket under a prefix: ``url = "gs://bucket/prefix"``."""

    type_name: ClassVar[str] = "gcs"
    scheme: ClassVar[str] = "gs"
    create_guarantee: ClassVar[CreateGuarantee] = CreateGuarantee.ATOMIC

    url: str = attrs.field(validator=_bucket_url)
    """``gs://bucket/prefix``; the prefix may be empty."""
    project: str | None = None
    storage_class: Literal["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"] | None = None
    key_file: Path | None = None
    """A service-account JSON key; without it, the Google credential chain is used."""
    anonymous: bool = False
    """Send no credentials (emulators, public test buckets)."""
    endpoint_url: str | None = None
    """Another endpoint than Google's (an emulator: ``http://127.0.0.1:9023``)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.key_file is not None and self.anonymous:
            raise ValueError("key_file and anonymous = true exclude each other")

    @property
    def bucket(self) -> str:
        """The bucket named by ``url``."""
        return parse_bucket_url(self.url, "gs")[0]

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"{self.url.rstrip('/')}{where}"

    def _root(self) -> str:
        bucket, prefix = parse_bucket_url(self.url, "gs")
        return f"{bucket}/{prefix}" if prefix else bucket

    def _make_fs(self) -> AbstractFileSystem:
        token: str | None = None
        if self.anonymous:
            token = "anon"  # noqa: S105 - gcsfs's name for "no credentials", not a secret
        elif self.key_file is not None:
            token = str(self.key_file)
        options: dict[str, Any] = {}
        if self.project:
            options["project"] = self.project
        fs = gcsfs.core.GCSFileSystem(
            token=token,
            endpoint_url=self.endpoint_url,
            requests_timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.timeout, sock_read=self.timeout
            ),
            skip_instance_cache=True,
            use_listings_cache=False,
            **options,
        )
        # gcsfs retries every request up to 6 times with its own backoff; the RetryPolicy owns
        # retries here, so this instance talks through the undecorated request method.
        unwrapped = getattr(type(fs)._request, "__wrapped__", None)
        if unwrapped is not None:
            fs._request = unwrapped.__get__(fs)
        result: AbstractFileSystem = fs
        return result

    def _new_upload(self, path: str) -> Upload:
        bucket, _, key = path.partition("/")
        return _GcsUpload(self, bucket, key)

    def _new_upload_if_absent(self, path: str) -> Upload:
        bucket, _, key = path.partition("/")
        return _GcsUpload(self, bucket, key, if_absent=True)

    def request(self, method: str, url: str, **kwargs: Any) -> tuple[Any, bytes]:
        """One HTTP request through gcsfs's authenticated session: (headers, body)."""
        fs: Any = self._fs()
        headers, body = fs.call(method, url, **kwargs)
        return headers, bytes(body)

    def check(self) -> None:
        self.call("check bucket", lambda: self._fs().info(self.bucket))

    # Errors

    def _transient(self, exc: BaseException) -> bool:
        for e in chain(exc):
            if isinstance(e, gcsfs.retry.HttpError):
                return e.code in _TRANSIENT_STATUS
            if type(e).__name__ == "ProxyError":  # gcsfs's translation of HTTP 502
                return True
            if isinstance(e, aiohttp.ClientResponseError):
                return e.status in _TRANSIENT_STATUS
        return super()._transient(exc)

    def _is_not_found(self, exc: BaseException) -> bool:
        for e in chain(exc):
            # gcsfs says "b/<bucket>/o" when the bucket itself is missing.
            if isinstance(e, FileNotFoundError) and str(e).rstrip("/").endswith(
                f"b/{self.bucket}/o"
            ):
                return False
        return super()._is_not_found(exc)

    def _explain(self, exc: BaseException) -> str:
        for e in chain(exc):
            name = type(e).__name__
            if type(e).__module__.startswith("google.auth"):
                return f"bad or missing Google credentials ({name}: {_line(e)})"
            if isinstance(e, FileNotFoundError) and str(e).rstrip("/").endswith(
                f"b/{self.bucket}/o"
            ):
                return f"no such bucket {self.bucket!r}"
            if isinstance(e, gcsfs.retry.HttpError):
                if e.code == 401:
                    return f"bad credentials (HTTP 401: {_line(e)})"
                if e.code in _TRANSIENT_STATUS:
                    return f"server error or throttling (HTTP {e.code})"
                return f"HTTP {e.code}: {_line(e)}"
            if isinstance(e, OSError) and str(e).startswith("Forbidden"):
                return (
                    f"access denied (HTTP 403): the credentials may not use bucket "
                    f"{self.bucket!r} this way"
                )
            if name == "ProxyError":
                return "bad gateway (HTTP 502)"
        return super()._explain(exc)


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _GcsUpload(Upload):
    """A resumable upload session, opened at the first chunk."""

    def __init__(self, sink: GcsSink, bucket: str, key: str, *, if_absent: bool = False) -> None:
        self._sink = sink
        self._bucket = bucket
        self._key = key
        # Generation 0 means "no live object": the service then refuses to finalise the upload
        # if one appeared meanwhile.
        self._condition: dict[str, Any] = {"ifGenerationMatch": 0} if if_absent else {}
        self._location: str | None = None
        self._tried = False

    def _open(self) -> str:
        if self._location is None:
            fs: Any = self._sink._fs()
            resource: dict[str, Any] = {"name": self._key}
            if self._sink.storage_class:
                resource["storageClass"] = self._sink.storage_class
            headers, _ = self._sink.request(
                "POST",
                f"{fs._location}/upload/storage/v1/b/{quote(self._bucket, safe='')}/o",
                uploadType="resumable",
                json=resource,
                **self._condition,
                headers={"X-Upload-Content-Type": "application/octet-stream"},
            )
            location = headers["Location"]
            self._location = str(location[0] if isinstance(location, list) else location)
        return self._location

    def _persisted(self, location: str) -> int | None:
        """Bytes the session holds (after a failed try), or None once it is complete."""
        headers, body = self._sink.request("PUT", location, headers={"Content-Range": "bytes */*"})
        if body and json.loads(body).get("name"):
            return None
        held = headers.get("Range")
        return int(held.rsplit("-", 1)[1]) + 1 if held else 0

    def _send(self, offset: int, data: bytes, total: int | None) -> None:
        location = self._open()
        start = offset
        if self._tried:
            persisted = self._persisted(location)
            if persisted is None:
                return  # the previous try completed the object before its answer was lost
            start = max(offset, persisted)
        self._tried = True
        end = offset + len(data)
        view = memoryview(data)
        size = "*" if total is None else str(total)
        while True:
            chunk = view[start - offset :]
            # An empty last chunk only states the total size.
            content_range = f"bytes {start}-{end - 1}/{size}" if len(chunk) else f"bytes */{size}"
            # A file-like body: aiohttp warns that large raw bytes would block its event loop.
            headers, _ = self._sink.request(
                "POST",
                location,
                data=io.BytesIO(chunk),
                headers={
                    "Content-Range": content_range,
                    "Content-Type": "application/octet-stream",
                },
            )
            held = headers.get("Range")
            if total is None and held and int(held.rsplit("-", 1)[1]) + 1 < end:
                start = int(held.rsplit("-", 1)[1]) + 1  # a short write: send the rest
                continue
            break
        self._tried = False

    def put_part(self, number: int, offset: int, data: bytes) -> None:
        self._send(offset, data, None)

    def complete(self, number: int, offset: int, tail: bytes) -> None:
        self._send(offset, tail, offset + len(tail))
        self._location = None

    def abort(self) -> None:
        if self._location is None:
            return
        location, self._location = self._location, None
        self._sink.request("DELETE", location)
