"""The ``s3`` sink (alias ``minio``): Amazon S3 and S3-compatible stores, through s3fs.

Objects are written straight to their final key: S3 shows an object only once its single PUT or
its multipart upload completes, which is exactly the atomic commit the sink contract asks for.
Objects smaller than one part go up in one PUT; larger ones as a multipart upload whose parts are
retried one by one and which is aborted when the write is. Server-side encryption and Object Lock
retention are applied to every object, the manifest included. ``storage_class`` applies to the
artifacts (written through ``open_writer``) only: index objects (manifests, ``MD5SUMS``, drill
results, written through ``write_bytes``) stay in the bucket's default class, since every
``list``, ``check`` and ``prune`` must read them at once and an archive class (GLACIER,
DEEP_ARCHIVE) cannot; tiny objects are also cheapest in STANDARD, which bills no minimum size.
Reading an artifact that is archived raises :class:`~pgvault.exceptions.ObjectArchivedError`,
whose one line says to request a restore and how long that takes.
A create-if-absent write sends ``If-None-Match: *`` with the PUT or the CompleteMultipartUpload,
which S3 (since 2024), MinIO and moto refuse with 412 when the key exists: atomic on the store. A
store that ignores the header would replace silently, so check yours with the conformance suite
before trusting it for WAL. Objects created that way (WAL segments and history files, cluster
records, run leases) also stay in the bucket's default class: recovery's ``restore_command`` and
the run lock must read them at once.

Credentials come from the AWS chain (environment, shared profile, instance or task role) unless
given as options, typically as ``${ENV}`` values; they never appear in ``describe()``, ``repr``,
logs or manifests. s3fs's and botocore's own retry loops are turned off so that
``retry_attempts`` and ``retry_max_seconds`` bound every call.
"""

from __future__ import annotations

import builtins
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

# Without the extra these imports fail, and the component loader turns the ImportError into
# "pip install 'pgvault[s3]'".
import botocore.exceptions
import botocore.parsers
import s3fs

from pgvault.exceptions import ObjectArchivedError
from pgvault.sinks.api import CreateGuarantee
from pgvault.sinks.fsspec_base import FsspecSink, PartWriter, Upload, parse_bucket_url
from pgvault.sinks.retry import chain

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

StorageClass = Literal[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
]

ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
"""Classes whose objects cannot be read before a restore request brings a copy back."""
_THAW_TIME = {
    "GLACIER": "a Standard restore takes 3-5 hours, Expedited 1-5 minutes, Bulk 5-12 hours",
    "DEEP_ARCHIVE": "a Standard restore takes up to 12 hours, Bulk up to 48 hours",
}

_THAW_HOURS = {
    ("GLACIER", "Expedited"): "1-5 minutes",
    ("GLACIER", "Standard"): "3-5 hours",
    ("GLACIER", "Bulk"): "5-12 hours",
    ("DEEP_ARCHIVE", "Standard"): "up to 12 hours",
    ("DEEP_ARCHIVE", "Bulk"): "up to 48 hours",
}


@attrs.frozen
class ThawState:
    """Where an object stands: ``hot`` (never archived), ``archived``, ``thawing`` (a restore
    is under way) or ``thawed`` (a readable copy exists until ``expires``)."""

    storage_class: str
    state: Literal["hot", "archived", "thawing", "thawed"]
    expires: str | None = None

    @property
    def readable(self) -> bool:
        """Whether the object can be read now."""
        return self.state in ("hot", "thawed")


def _thaw_state(head: dict[str, Any]) -> ThawState:
    storage_class = str(head.get("StorageClass") or "STANDARD")
    if storage_class not in ARCHIVE_CLASSES:
        return ThawState(storage_class, "hot")
    restore = str(head.get("Restore") or "")
    if 'ongoing-request="true"' in restore:
        return ThawState(storage_class, "thawing")
    if 'ongoing-request="false"' in restore:
        _, _, expiry = restore.partition('expiry-date="')
        return ThawState(storage_class, "thawed", expiry.rstrip('"') or None)
    return ThawState(storage_class, "archived")


MULTIPART_MARK = "#multipart-upload="
"""Separates a key from an upload id in the names :meth:`S3Sink.list_partials` returns."""

_THROTTLING = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "PriorRequestNotComplete",
}
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
}


@attrs.frozen
class ObjectLock:
    """S3 Object Lock retention applied to every object this sink writes.

    ``GOVERNANCE`` can be lifted by principals allowed to bypass it; ``COMPLIANCE`` by nobody,
    not even the account root, until the date passes. The bucket must have Object Lock enabled.
    """

    mode: Literal["GOVERNANCE", "COMPLIANCE"] = attrs.field()
    days: int = attrs.field()

    @mode.validator
    def _check_mode(self, _attr: attrs.Attribute[Any], value: str) -> None:
        if value not in ("GOVERNANCE", "COMPLIANCE"):
            raise ValueError(
                f'object_lock.mode must be "GOVERNANCE" or "COMPLIANCE", got {value!r}'
            )

    @days.validator
    def _check_days(self, _attr: attrs.Attribute[Any], value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"object_lock.days must be a positive integer, got {value!r}")

    def retain_until(self, now: datetime | None = None) -> datetime:
        """The retention date of an object written ``now``."""
        return (now or datetime.now(UTC)) + timedelta(days=self.days)


def _object_lock(value: object) -> ObjectLock | None:
    if value is None or isinstance(value, ObjectLock):
        return value
    if not isinstance(value, dict):
        raise ValueError('object_lock must be a table: {mode = "GOVERNANCE", days = 30}')
    unknown = set(value) - {"mode", "days"}
    if unknown:
        raise ValueError(f"object_lock: unknown key(s) {', '.join(sorted(unknown))}")
    mode: Any = value.get("mode")
    days: Any = value.get("days")
    return ObjectLock(mode=mode, days=days)  # which validates both


def _bucket_url(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    parse_bucket_url(value, "s3")


@attrs.frozen(kw_only=True)
class S3Sink(FsspecSink):
    """Stores objects in an S3 bucket under a prefix: ``url = "s3://bucket/prefix"``."""

    type_name: ClassVar[str] = "s3"
    scheme: ClassVar[str] = "s3"
    create_guarantee: ClassVar[CreateGuarantee] = CreateGuarantee.ATOMIC
    min_part_mib: ClassVar[int] = 5
    parts_in_flight: ClassVar[int] = 2

    url: str = attrs.field(validator=_bucket_url)
    """``s3://bucket/prefix``; the prefix may be empty."""
    endpoint_url: str | None = None
    """For MinIO and other S3-compatible stores (``https://minio.internal:9000``)."""
    region: str | None = None
    profile: str | None = None
    """A profile of the shared AWS config/credentials files."""
    access_key_id: str | None = attrs.field(default=None, repr=False)
    secret_access_key: str | None = attrs.field(default=None, repr=False)
    session_token: str | None = attrs.field(default=None, repr=False)
    storage_class: StorageClass | None = None
    """Class of the artifacts; index objects (manifests, ``MD5SUMS``) keep the bucket's default."""
    server_side_encryption: Literal["AES256", "aws:kms", "aws:kms:dsse"] | None = None
    sse_kms_key_id: str | None = None
    """The KMS key for ``aws:kms`` (the bucket's default key when omitted)."""
    object_lock: ObjectLock | None = attrs.field(default=None, converter=_object_lock)
    verify_tls: bool = True
    """Check the endpoint's TLS certificate; turn off only for a test store you trust."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.sse_kms_key_id and self.server_side_encryption not in ("aws:kms", "aws:kms:dsse"):
            raise ValueError('sse_kms_key_id needs server_side_encryption = "aws:kms"')
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise ValueError("access_key_id and secret_access_key go together")

    @property
    def bucket(self) -> str:
        """The bucket named by ``url``."""
        return parse_bucket_url(self.url, "s3")[0]

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"{self.url.rstrip('/')}{where}"

    def _root(self) -> str:
        bucket, prefix = parse_bucket_url(self.url, "s3")
        return f"{bucket}/{prefix}" if prefix else bucket

    def _make_fs(self) -> AbstractFileSystem:
        client_kwargs: dict[str, Any] = {"verify": self.verify_tls}
        if self.region:
            client_kwargs["region_name"] = self.region
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        options: dict[str, Any] = {}
        if self.access_key_id:
            options.update(key=self.access_key_id, secret=self.secret_access_key)
            if self.session_token:
                options["token"] = self.session_token
        if self.profile:
            options["profile"] = self.profile
        fs: AbstractFileSystem = s3fs.S3FileSystem(
            client_kwargs=client_kwargs,
            config_kwargs={
                "connect_timeout": self.timeout,
                "read_timeout": self.timeout,
                # The RetryPolicy owns retries; botocore's would multiply its attempts.
                "retries": {"total_max_attempts": 1},
            },
            skip_instance_cache=True,
            use_listings_cache=False,
            **options,
        )
        fs.retries = 1  # one try per call: see the module doc
        return fs

    def put_arguments(self, *, index: bool = False) -> dict[str, Any]:
        """Extra arguments of every PUT and multipart upload: class, encryption, lock.

        ``index`` objects (manifests, ``MD5SUMS``) get no storage class: the bucket's default,
        which is readable at once.
        """
        extra: dict[str, Any] = {}
        if self.storage_class and not index:
            extra["StorageClass"] = self.storage_class
        if self.server_side_encryption:
            extra["ServerSideEncryption"] = self.server_side_encryption
        if self.sse_kms_key_id:
            extra["SSEKMSKeyId"] = self.sse_kms_key_id
        if self.object_lock:
            extra["ObjectLockMode"] = self.object_lock.mode
            extra["ObjectLockRetainUntilDate"] = self.object_lock.retain_until()
        return extra

    def _new_upload(self, path: str) -> Upload:
        bucket, _, key = path.partition("/")
        return _S3Upload(self, bucket, key)

    def write_bytes(self, key: str, data: bytes) -> None:
        """Store index object ``key`` (a manifest, ``MD5SUMS``) in the bucket's default class."""
        bucket, _, object_key = self._path(key).partition("/")
        with PartWriter(self, key, _S3Upload(self, bucket, object_key, index=True)) as writer:
            writer.write(data)
            writer.commit()

    def _new_upload_if_absent(self, path: str) -> Upload:
        bucket, _, key = path.partition("/")
        return _S3Upload(self, bucket, key, index=True, if_absent=True)

    def _is_exists(self, exc: BaseException) -> bool:
        for e in chain(exc):
            if isinstance(e, botocore.exceptions.ClientError):
                code, status = _code(e)
                return code == "PreconditionFailed" or status == 412
        return False

    def s3(self, method: str, **kwargs: Any) -> Any:
        """Call botocore ``method`` once, through s3fs's client (for uploads and checks)."""
        fs: Any = self._fs()
        return fs.call_s3(method, **kwargs)

    def check(self) -> None:
        self.call("check bucket", lambda: self.s3("head_bucket", Bucket=self.bucket))

    def list_partials(self, prefix: str) -> builtins.list[str]:
        """Unfinished multipart uploads under ``prefix``, as ``<key>#multipart-upload=<id>``."""
        root = self._root()
        bucket, _, root_prefix = root.partition("/")
        full = f"{root_prefix}/{prefix}" if root_prefix else prefix

        def page() -> list[str]:
            found: list[str] = []
            marker: dict[str, str] = {}
            while True:
                answer = self.s3("list_multipart_uploads", Bucket=bucket, Prefix=full, **marker)
                for upload in answer.get("Uploads", []):
                    key = self._key(f"{bucket}/{upload['Key']}")
                    if key is not None:
                        found.append(f"{key}{MULTIPART_MARK}{upload['UploadId']}")
                if not answer.get("IsTruncated"):
                    return found
                marker = {
                    "KeyMarker": answer["NextKeyMarker"],
                    "UploadIdMarker": answer["NextUploadIdMarker"],
                }

        return self.call(f"list unfinished uploads under {prefix or '/'}", page)

    def delete_partial(self, name: str) -> None:
        """Abort the multipart upload ``name`` (from :meth:`list_partials`)."""
        key, mark, upload_id = name.partition(MULTIPART_MARK)
        if not mark:
            self.delete(name)
            return
        bucket, _, object_key = self._path(key).partition("/")

        def abort() -> None:
            try:
                self.s3("abort_multipart_upload", Bucket=bucket, Key=object_key, UploadId=upload_id)
            except Exception as exc:
                if _code(exc)[0] != "NoSuchUpload":
                    raise

        self.call(f"abort unfinished upload of {key}", abort)

    # --- storage classes and thawing (issue 15; used by pgvault.operations.tiers and .thaw)

    tier_classes: ClassVar[tuple[str, ...]] = (
        "STANDARD",
        "INTELLIGENT_TIERING",
        "STANDARD_IA",
        "ONEZONE_IA",
        "GLACIER_IR",
        "GLACIER",
        "DEEP_ARCHIVE",
    )
    """Classes ``tiers`` may name, warmest first: prune only ever moves an artifact down."""
    archive_classes: ClassVar[tuple[str, ...]] = ARCHIVE_CLASSES
    max_copy_bytes: ClassVar[int] = 5 * 2**30
    """S3's limit of one CopyObject; a larger object is copied in parts (UploadPartCopy)."""
    copy_part_bytes: ClassVar[int] = 512 * 2**20

    def set_storage_class(self, key: str, storage_class: str, size: int) -> None:
        """Copy ``key`` onto itself in ``storage_class`` (same bytes, encryption and lock)."""
        bucket, _, object_key = self._path(key).partition("/")
        extra = {k: v for k, v in self.put_arguments().items() if k != "StorageClass"}
        extra["StorageClass"] = storage_class
        source = {"Bucket": bucket, "Key": object_key}

        def in_one() -> None:
            self.s3("copy_object", Bucket=bucket, Key=object_key, CopySource=source, **extra)

        def in_parts() -> None:
            upload = self.s3("create_multipart_upload", Bucket=bucket, Key=object_key, **extra)
            upload_id = upload["UploadId"]
            parts = []
            try:
                for number, start in enumerate(range(0, size, self.copy_part_bytes), 1):
                    end = min(start + self.copy_part_bytes, size) - 1
                    answer = self.s3(
                        "upload_part_copy",
                        Bucket=bucket,
                        Key=object_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=source,
                        CopySourceRange=f"bytes={start}-{end}",
                    )
                    parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
                self.s3(
                    "complete_multipart_upload",
                    Bucket=bucket,
                    Key=object_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except BaseException:
                self.s3("abort_multipart_upload", Bucket=bucket, Key=object_key, UploadId=upload_id)
                raise

        self.call(
            f"move {key} to {storage_class}",
            in_parts if size > self.max_copy_bytes else in_one,
            key=key,
        )

    def thaw_state(self, key: str) -> ThawState:
        """Whether ``key`` is readable now, being restored, or archived."""
        bucket, _, object_key = self._path(key).partition("/")
        head = self.call(
            f"look up {key}", lambda: self.s3("head_object", Bucket=bucket, Key=object_key), key=key
        )
        return _thaw_state(head)

    def request_thaw(self, key: str, days: int, speed: str) -> ThawState:
        """Ask S3 to restore a readable copy of archived ``key`` for ``days`` (``speed``:
        Standard, Bulk or Expedited); a request already made is not repeated."""
        state = self.thaw_state(key)
        if state.state != "archived":
            return state
        bucket, _, object_key = self._path(key).partition("/")
        request = {"Days": days, "GlacierJobParameters": {"Tier": speed}}

        def ask() -> None:
            try:
                self.s3("restore_object", Bucket=bucket, Key=object_key, RestoreRequest=request)
            except botocore.exceptions.ClientError as exc:
                if _code(exc)[0] != "RestoreAlreadyInProgress":
                    raise

        self.call(f"request a restore of {key}", ask, key=key)
        return self.thaw_state(key)

    def thaw_time(self, storage_class: str, speed: str) -> str:
        """How long a restore of ``speed`` from ``storage_class`` takes, in words."""
        return _THAW_HOURS.get((storage_class, speed), "hours")

    # --- end of storage classes

    # Errors

    def _archived_error(self, exc: BaseException, key: str) -> ObjectArchivedError | None:
        for e in chain(exc):
            if isinstance(e, botocore.exceptions.ClientError):
                if _code(e)[0] != "InvalidObjectState":
                    return None
                found = e.response.get("Error", {}).get("StorageClass")
                storage_class = str(found) if found else None
                bucket, _, object_key = self._path(key).partition("/")
                wait = _THAW_TIME.get(storage_class or "", "a restore takes hours")
                return ObjectArchivedError(
                    f"{self.describe()}: {key} is in archive storage class "
                    f"{storage_class or '(unknown)'} and cannot be read until it is restored: "
                    "run pgvault thaw CONFIG ID (or restore --thaw), or request a restore of "
                    f"the backup's objects yourself (aws s3api restore-object "
                    f"--bucket {bucket} --key {object_key} --restore-request Days=7; {wait}), "
                    "then run this again",
                    storage_class=storage_class,
                )
        return None

    def _transient(self, exc: BaseException) -> bool:
        for e in chain(exc):
            if isinstance(e, botocore.exceptions.ClientError):
                code, status = _code(e)
                # 409 ConditionalRequestConflict: another conditional write to the key was in
                # flight; the retry then gets a definite answer (success or 412).
                return (
                    code in _THROTTLING
                    or code == "ConditionalRequestConflict"
                    or status in (408, 429)
                    or status >= 500
                )
            if isinstance(
                e,
                botocore.exceptions.HTTPClientError
                | botocore.exceptions.ConnectionError
                | botocore.parsers.ResponseParserError,
            ):
                return True
        return super()._transient(exc)

    def _is_not_found(self, exc: BaseException) -> bool:
        for e in chain(exc):
            if isinstance(e, botocore.exceptions.ClientError):
                code, status = _code(e)
                return code in ("NoSuchKey", "404", "NotFound") or (
                    status == 404 and code != "NoSuchBucket"
                )
        return super()._is_not_found(exc)

    def _explain(self, exc: BaseException) -> str:
        for e in chain(exc):
            if isinstance(e, botocore.exceptions.NoCredentialsError):
                return (
                    "no AWS credentials found (environment, profile or instance role; or set "
                    "access_key_id and secret_access_key)"
                )
            if isinstance(e, botocore.exceptions.ProfileNotFound):
                return f"AWS profile {self.profile!r} not found"
            if isinstance(e, botocore.exceptions.ClientError):
                code, status = _code(e)
                if code == "NoSuchBucket" or (code in ("404", "NotFound") and status == 404):
                    return f"no such bucket {self.bucket!r} (HTTP {status} {code})"
                if code in _BAD_CREDENTIALS:
                    return (
                        f"bad credentials (HTTP {status} {code}): check the access key and secret"
                    )
                if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
                    return (
                        f"access denied (HTTP {status} {code}): the credentials may not use "
                        f"bucket {self.bucket!r} this way"
                    )
                if code in _THROTTLING or status in (429, 503):
                    return f"the store is throttling or unavailable (HTTP {status} {code})"
                if status >= 500:
                    return f"server error (HTTP {status} {code})"
                message = e.response.get("Error", {}).get("Message", "")
                return f"HTTP {status} {code}" + (f": {message}" if message else "")
            if isinstance(e, botocore.exceptions.EndpointConnectionError):
                return f"cannot connect to {self.endpoint_url or 'the S3 endpoint'}"
            if isinstance(e, botocore.exceptions.ConnectionClosedError):
                return "the server closed the connection before answering (is it going down?)"
            if isinstance(e, botocore.exceptions.BotoCoreError):
                return f"{type(e).__name__}: {e}"
        return super()._explain(exc)


def _code(exc: Any) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


class _S3Upload(Upload):
    """One PUT for small objects, a multipart upload (created at the first part) otherwise."""

    def __init__(
        self, sink: S3Sink, bucket: str, key: str, *, index: bool = False, if_absent: bool = False
    ) -> None:
        self._sink = sink
        self._bucket = bucket
        self._key = key
        self._condition: dict[str, str] = {"IfNoneMatch": "*"} if if_absent else {}
        self._lock = threading.Lock()
        self._upload_id: str | None = None
        self._etags: dict[int, str] = {}
        # One retention date for every part of the object.
        self._extra = sink.put_arguments(index=index)

    def _upload(self) -> str:
        with self._lock:  # two parts may start at once; only one creates the upload
            if self._upload_id is None:
                answer = self._sink.s3(
                    "create_multipart_upload", Bucket=self._bucket, Key=self._key, **self._extra
                )
                self._upload_id = str(answer["UploadId"])
            return self._upload_id

    def put_part(self, number: int, offset: int, data: bytes) -> None:
        upload_id = self._upload()
        answer = self._sink.s3(
            "upload_part",
            Bucket=self._bucket,
            Key=self._key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
        )
        with self._lock:
            self._etags[number] = str(answer["ETag"])

    def complete(self, number: int, offset: int, tail: bytes) -> None:
        if self._upload_id is None:
            self._sink.s3(
                "put_object",
                Bucket=self._bucket,
                Key=self._key,
                Body=tail,
                **self._extra,
                **self._condition,
            )
            return
        if tail or not self._etags:
            self.put_part(number, offset, tail)
        parts = [{"PartNumber": n, "ETag": e} for n, e in sorted(self._etags.items())]
        self._sink.s3(
            "complete_multipart_upload",
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
            **self._condition,
        )
        self._upload_id = None

    def abort(self) -> None:
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        self._sink.s3(
            "abort_multipart_upload", Bucket=self._bucket, Key=self._key, UploadId=upload_id
        )
