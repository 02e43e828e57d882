"""pgvault-azure: an Azure Blob Storage sink for pgvault, registered as ``type = "azure"``."""

from pgvault_azure.sink import AzureBlobSink

__all__ = ["AzureBlobSink"]
