"""Azurite, the Azure Storage emulator from npm, as a pytest fixture on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgvault.testing.fixtures import unavailable
from pgvault.testing.postgres import free_port

# Azurite's documented development account: public, not a secret.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CACHE = Path(os.environ.get("PGVAULT_AZURITE_DIR", Path.home() / ".cache" / "pgvault" / "azurite"))


def azurite_command() -> str:
    """The azurite-blob command: $AZURITE_BLOB, on PATH, or installed once into CACHE by npm."""
    if os.environ.get("AZURITE_BLOB"):
        return os.environ["AZURITE_BLOB"]
    found = shutil.which("azurite-blob")
    if found:
        return found
    local = CACHE / "node_modules" / ".bin" / "azurite-blob"
    if not local.exists():
        npm = shutil.which("npm")
        if npm is None:
            unavailable("azurite-blob not found and npm is missing (apt-get install npm)")
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "azurite"],
            cwd=CACHE,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0 or not local.exists():
            unavailable(f"npm install azurite failed: {done.stderr.strip()[-500:]}")
    return str(local)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running Azurite blob service; yields its connection string."""
    command = azurite_command()
    port = free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    process = subprocess.Popen(
        [
            command,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--silent",
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                _, err = process.communicate()
                unavailable(f"azurite did not start: {err.decode()[-500:]}")
            time.sleep(0.1)
    yield (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stderr:
        process.stderr.close()


@pytest.fixture
def container(azurite: str) -> str:
    """A fresh, empty container."""
    from adlfs import AzureBlobFileSystem

    name = f"pgvault-{uuid.uuid4().hex[:12]}"
    AzureBlobFileSystem(connection_string=azurite, skip_instance_cache=True).mkdir(name)
    return name
