"""Where the time goes: the CPU of the server, pg_dump and pgvault for one dump.

    python -m benchmarks.cpu_budget [SIZE_GB]

For each method: wall time, CPU of the command's own processes, and CPU of the PostgreSQL
server (its postmaster's reaped children, so backends that exit during the run are counted).
Total CPU divided by the core count is the floor no scheduling can beat.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import dataset, measure
from pgvault.postgres.cluster import PostgresCluster


def server_cpu(cluster):
    """The server's CPU so far (see :func:`benchmarks.measure.server_cpu`)."""
    return measure.server_cpu(int((cluster.data / "postmaster.pid").read_text().split()[0]))


c = PostgresCluster()
c.start()
work = Path(tempfile.mkdtemp(prefix="pgvault-cpu-"))
cores = os.cpu_count() or 1
try:
    dataset.build(c, "bench", float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    key = work / "k"
    key.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pgvault", "keygen", "--out", str(key)],
        check=True,
        capture_output=True,
    )
    cfg = work / "p.toml"
    cfg.write_text(
        f'name = "x"\n[source]\ntype = "pg_dump"\ndsn = "{c.dsn("bench")}"\n'
        '[[transform]]\ntype = "zstd"\nlevel = 3\n'
        f'[[transform]]\ntype = "aes-256-gcm"\nkey_file = "{key}"\n'
        f'[sink]\ntype = "local"\npath = "{work / "vault"}"\n'
    )
    pg_dump = str(c.bindir / "pg_dump")
    conn = f"-h 127.0.0.1 -p {c.port} -U postgres -d bench"
    cmds = {
        "pg_dump -Fc -Z0 > /dev/null": f"{pg_dump} -Fc -Z0 {conn} > /dev/null",
        "pgvault run zstd-3 + aes": f"{sys.executable} -m pgvault run -q {cfg}",
    }
    subprocess.run(["bash", "-c", cmds["pg_dump -Fc -Z0 > /dev/null"]], check=True)  # warm cache
    for _rep in range(3):
        for name, cmd in cmds.items():
            s0 = server_cpu(c)
            r0 = os.times()
            t0 = time.perf_counter()
            subprocess.run(["bash", "-c", cmd], check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            r1 = os.times()
            s1 = server_cpu(c)
            client = (r1.children_user - r0.children_user) + (
                r1.children_system - r0.children_system
            )
            server = s1 - s0
            print(
                f"{name:28} wall {wall:5.2f}s  client CPU {client:5.2f}s  "
                f"server CPU {server:5.2f}s  total {client + server:5.2f}s  "
                f"=> {cores}-core floor {(client + server) / cores:5.2f}s",
                flush=True,
            )
finally:
    c.destroy()
    subprocess.run(["rm", "-rf", str(work)], check=False)
