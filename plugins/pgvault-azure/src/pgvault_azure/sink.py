"""The ``azure`` sink: Azure Blob Storage through adlfs, built on pgvault's fsspec sink base.

Writes go up as staged blocks, one per part, committed by a single ``Put Block List`` in
:meth:`Upload.complete`: until then Azure shows nothing under the name, which is the atomic
commit pgvault's sink contract asks for. Objects under 1 MiB are one ``Put Blob``.
"""

from __future__ import annotations

import io
from typing import Any, ClassVar

import attrs
from adlfs import AzureBlobFileSystem
from azure.core import exceptions as azure_errors
from azure.storage.blob import BlobBlock
from fsspec.asyn import sync

from pgvault.sinks.fsspec_base import FsspecSink, Upload, parse_bucket_url
from pgvault.sinks.retry import chain

_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_SINGLE_PUT_MAX = 1 << 20
"""Larger objects go as blocks: the SDK would hand aiohttp one big bytes body, which blocks."""


def _container_url(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    parse_bucket_url(value, "az")


@attrs.frozen(kw_only=True)
class AzureBlobSink(FsspecSink):
    """Stores objects in an Azure Blob container under a prefix: ``url = "az://container/p"``."""

    type_name: ClassVar[str] = "azure"
    scheme: ClassVar[str] = "az"

    url: str = attrs.field(validator=_container_url)
    """``az://container/prefix``; the prefix may be empty."""
    account_name: str | None = None
    """The storage account; alone, credentials come from the Azure chain."""
    account_key: str | None = attrs.field(default=None, repr=False)
    sas_token: str | None = attrs.field(default=None, repr=False)
    connection_string: str | None = attrs.field(default=None, repr=False)
    """A full connection string (it holds the key: pass it as ``${ENV}``)."""

    @property
    def container(self) -> str:
        """The container named by ``url``."""
        return parse_bucket_url(self.url, "az")[0]

    def describe(self) -> str:
        account = f" (account {self.account_name})" if self.account_name else ""
        return f"{self.url.rstrip('/')}{account}"

    def _root(self) -> str:
        container, prefix = parse_bucket_url(self.url, "az")
        return f"{container}/{prefix}" if prefix else container

    def _make_fs(self) -> Any:
        options: dict[str, Any] = {"skip_instance_cache": True}
        if self.connection_string:
            options["connection_string"] = self.connection_string
        else:
            options["account_name"] = self.account_name
            if self.account_key:
                options["account_key"] = self.account_key
            elif self.sas_token:
                options["sas_token"] = self.sas_token
            else:
                options["anon"] = False  # use the Azure credential chain
        return AzureBlobFileSystem(**options)

    def _new_upload(self, path: str) -> Upload:
        container, _, blob = path.partition("/")
        return _BlockUpload(self, container, blob)

    def run(self, make: Any) -> Any:
        """Run coroutine factory ``make(blob_service_client)`` on adlfs's event loop."""
        fs = self._fs()
        return sync(fs.loop, make, fs.service_client)

    def _transient(self, exc: BaseException) -> bool:
        for e in chain(exc):
            if isinstance(e, azure_errors.ServiceRequestError | azure_errors.ServiceResponseError):
                return True
            if isinstance(e, azure_errors.HttpResponseError):
                return e.status_code in _TRANSIENT_STATUS
        return super()._transient(exc)

    def _explain(self, exc: BaseException) -> str:
        for e in chain(exc):
            if isinstance(e, azure_errors.ClientAuthenticationError):
                return f"bad credentials or access denied (HTTP {e.status_code})"
            if isinstance(e, azure_errors.ResourceNotFoundError) and "Container" in str(e):
                return f"no such container {self.container!r}"
            if isinstance(e, azure_errors.HttpResponseError):
                return f"HTTP {e.status_code}: {e.reason}"
        return super()._explain(exc)


class _BlockUpload(Upload):
    """Staged blocks, committed in order by one block-list call."""

    def __init__(self, sink: AzureBlobSink, container: str, blob: str) -> None:
        self._sink = sink
        self._container = container
        self._blob = blob
        self._blocks: dict[int, str] = {}

    def _stage(self, number: int, data: bytes) -> None:
        block_id = f"pgvault-{number:08d}"  # every id of a blob must have the same length

        async def stage(service: Any) -> None:
            async with service.get_blob_client(self._container, self._blob) as blob:
                # A file-like body: aiohttp warns that large raw bytes block its event loop.
                await blob.stage_block(block_id, io.BytesIO(data), length=len(data))

        self._sink.run(stage)
        self._blocks[number] = block_id

    def put_part(self, number: int, offset: int, data: bytes) -> None:
        self._stage(number, data)

    def complete(self, number: int, offset: int, tail: bytes) -> None:
        if not self._blocks and len(tail) < _SINGLE_PUT_MAX:

            async def put(service: Any) -> None:
                async with service.get_blob_client(self._container, self._blob) as blob:
                    await blob.upload_blob(tail, overwrite=True)

            self._sink.run(put)
            return
        if tail:
            self._stage(number, tail)
        blocks = [BlobBlock(block_id=self._blocks[n]) for n in sorted(self._blocks)]

        async def commit(service: Any) -> None:
            async with service.get_blob_client(self._container, self._blob) as blob:
                await blob.commit_block_list(blocks)

        self._sink.run(commit)

    def abort(self) -> None:
        # Uncommitted blocks are invisible and Azure discards them within a week; a blob that
        # was committed before keeps its content, as the contract asks.
        self._blocks.clear()
