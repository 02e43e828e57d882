"""The SFTP test server's own process: ``python -m pgvault.testing.sftp_process``.

:class:`pgvault.testing.servers.SftpServer` runs asyncssh here, in a child process, rather than
on a thread of the test process. Stopping the server is then a kill: the operating system cuts
every connection at once, mid-handshake or not, the way a crashed or rebooted host does, and no
half-accepted socket can be left behind in the test process. The server also stops competing
with the client under test for the test process's GIL, which on a loaded two-core machine made
handshakes time out.

It prints ``ready`` on standard output once it listens, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any


async def _serve(port: int, root: str, host_key: str, authorized_keys: str) -> None:
    import asyncssh

    def sftp_factory(chan: Any) -> Any:
        return asyncssh.SFTPServer(chan, chroot=os.fsencode(root))

    await asyncssh.listen(
        "127.0.0.1",
        port,
        server_host_keys=[host_key],
        authorized_client_keys=authorized_keys,
        sftp_factory=sftp_factory,
        allow_scp=False,
        password_auth=False,
        kbdint_auth=False,
        reuse_address=True,
    )
    print("ready", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """Listen on 127.0.0.1:PORT and serve ROOT over SFTP until killed."""
    parser = argparse.ArgumentParser(prog="python -m pgvault.testing.sftp_process")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--host-key", required=True)
    parser.add_argument("--authorized-keys", required=True)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args.port, args.root, args.host_key, args.authorized_keys))
    except OSError as exc:
        print(f"cannot listen on port {args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
