"""Throughput of one backup to each sink on loopback, next to the local sink.

    python -m benchmarks.sinks [--mib 500] [--part-mib 16] [--only local,s3,gcs,sftp]

The backup is a ``files`` source over one incompressible file of ``--mib`` MiB with no transforms,
so stored bytes equal source bytes and the figure is the sink's (plus SHA-256 digests, which
every backup computes). Each server runs in its own process (moto's S3 server, the GCS emulator,
an asyncssh SFTP server), as a real remote store would, so it does not share the pipeline's GIL.
Prints one line per sink: backup MB/s, and read-back (verify) MB/s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pgvault
from pgvault.pipeline_config import PipelineConfig
from pgvault.sources.files import FilesSource
from pgvault.testing.storage_fixtures import make_sink

_SERVER = r"""
import json, sys, time
from pgvault.testing.servers import GcsServer, S3Server, SftpServer
kind = sys.argv[1]
if kind == "s3":
    server = S3Server().start(); server.create_bucket("bench")
    options = server.sink_options("bench", "p")
elif kind == "gcs":
    server = GcsServer().start(); server.create_bucket("bench")
    options = server.sink_options("bench", "p")
else:
    server = SftpServer().start()
    options = server.sink_options("/bench")
print(json.dumps(options), flush=True)
sys.stdin.read()  # serve until the parent closes our stdin
server.stop()
"""


def start_server(kind: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start a ``kind`` server in a child process; its ``[sink]`` options."""
    import json

    child = subprocess.Popen(
        [sys.executable, "-c", _SERVER, kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"},
    )
    assert child.stdout is not None
    return child, json.loads(child.stdout.readline())


def measure(name: str, options: dict[str, Any], folder: Path, size: int, part_mib: int) -> str:
    """Back ``folder`` up to the sink, then verify (read back); one result line."""
    if options["type"] != "local":
        options = {**options, "part_size_mib": part_mib}
    sink = make_sink(options)
    config = PipelineConfig(name="bench", source=FilesSource(paths=(folder,)), sink=sink)
    started = time.perf_counter()
    manifest = pgvault.run(config)
    backup = time.perf_counter() - started
    started = time.perf_counter()
    report = pgvault.Vault(sink, "bench").verify(manifest)
    read = time.perf_counter() - started
    assert report.ok, report.problems
    mb = manifest.size / 1e6
    return (
        f"{name:6s} backup {mb:6.0f} MB in {backup:6.2f} s = {mb / backup:7.1f} MB/s   "
        f"read back (verify) {read:6.2f} s = {mb / read:7.1f} MB/s"
    )


def main() -> None:
    """Measure every sink asked for and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--part-mib", type=int, default=16)
    parser.add_argument("--only", default="local,s3,gcs,sftp")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgvault-bench-") as tmp:
        folder = Path(tmp, "data")
        folder.mkdir()
        with (folder / "blob.bin").open("wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        size = args.mib << 20
        for kind in args.only.split(","):
            if kind == "local":
                line = measure(
                    "local",
                    {"type": "local", "path": str(Path(tmp, "vault"))},
                    folder,
                    size,
                    args.part_mib,
                )
            else:
                child, options = start_server(kind)
                try:
                    line = measure(kind, options, folder, size, args.part_mib)
                finally:
                    assert child.stdin is not None
                    child.stdin.close()
                    child.wait(30)
            print(line, flush=True)


if __name__ == "__main__":
    main()
