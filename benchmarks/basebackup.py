"""Base backups and point-in-time restores: pgvault against pgBackRest and pg_basebackup.

    python -m benchmarks.basebackup [--scale 50] [--segments 32] [--reps 3]

One throwaway archiving cluster (16 MiB segments) holding ``pgbench -i -s SCALE``. Its WAL goes
to both archives at once: ``pgvault wal-daemon`` (ack.sh) for pgvault's vault and ``pgbackrest
archive-push`` (async, process-max 2) for pgBackRest's repository, so each tool's backup can
prove its WAL is archived. Then, alternating, ``reps`` times each:

* ``pgvault run``: the ``basebackup`` source, zstd-3 + aes-256-gcm, local sink;
* ``pgbackrest backup --type=full`` at ``process-max`` 1 and 2: ``compress-type=zst``,
  ``compress-level=3``, ``repo1-cipher-type=aes-256-cbc`` (pgBackRest offers no GCM; CBC is its
  only repository cipher, so this is encryption parity, not cipher parity);
* ``pg_basebackup -Ft -z -X none -c fast`` into a folder (gzip, no encryption): PostgreSQL's
  own tool.

Each reports wall time, CPU of its process tree (the server's walsender is not counted: it
serves every method alike) and stored size. Then ``--segments`` more segments of WAL are written
and archived, and the newest backup of each tool is restored to the end of the archive, started
on a port of its own and followed until it is promoted: ``pgvault restore --target-dir --start``
(restore_command ``fetch.sh`` with prefetch 8) against ``pgbackrest restore`` + ``pg_ctl start``
(restore_command ``archive-get``, async with process-max 2, so it prefetches too). Restore
figures: wall time from the command's start to promotion, CPU of the restore command, and the
recovery's CPU (the startup process and every restore_command it ran, reaped by the postmaster).

pgBackRest comes from Debian (``apt-get install pgbackrest``); it is installed when missing and
this runs as root, otherwise the benchmark stops with one line saying so. Results go to
``benchmarks/results/basebackup.json``; ``python -m benchmarks.run`` puts them in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from benchmarks import wal as walb
from benchmarks.measure import Sample, compile_bytecode, load_summary, run, summarize
from pgvault.postgres.cluster import PostgresCluster, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "basebackup.json"
TICK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] basebackup: {message}", file=sys.stderr, flush=True)


def ensure_pgbackrest() -> str:
    """pgBackRest's version; installed from Debian when missing and we are root."""
    if shutil.which("pgbackrest") is None:
        if not walb.AS_ROOT:
            sys.exit(
                "benchmarks.basebackup: pgbackrest is missing; as root: "
                "apt-get install -y pgbackrest"
            )
        walb.ensure_peers()
    out = subprocess.run(["pgbackrest", "version"], capture_output=True, text=True)
    return out.stdout.strip()


def du(path: Path) -> int:
    """Bytes in the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def postmaster_cpu(data: Path, wait: float = 30.0) -> float:
    """CPU seconds of a running server's postmaster and the children it reaped (the startup
    process ends with recovery, carrying the restore_commands it waited for). Waits until the
    startup process is gone: the server reports the end of recovery a moment before it exits."""
    pid = (data / "postmaster.pid").read_text().split()[0]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        children = subprocess.run(
            ["ps", "--ppid", pid, "-o", "cmd="], capture_output=True, text=True
        ).stdout
        if "startup" not in children:
            break
        time.sleep(0.05)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


def sh(command: str) -> str:
    """``command`` as postgres (when we are root), for a bash pipeline."""
    return " ".join(shlex.quote(a) for a in walb.as_postgres(["bash", "-c", command]))


@attrs.frozen
class Rig:
    """The cluster, both archives and the commands that back it up and restore it."""

    bench: walb.Bench
    pgvault_config: Path
    pgbackrest_config: Path

    @property
    def cluster(self) -> PostgresCluster:
        return self.bench.cluster

    def pgbackrest(self, *args: str) -> str:
        return f"pgbackrest --config={self.pgbackrest_config} --stanza=bench {' '.join(args)}"


def make_rig(work: Path, cluster: PostgresCluster) -> tuple[Rig, subprocess.Popen[bytes]]:
    """Both archives set up and archiving; the daemon's process (stop it when done)."""
    bench = walb.Bench(work, cluster, None)
    wal_config = bench.pgvault_config("local", "daemon", prefetch=8)
    bb_config = wal_config.with_name("base.toml")
    bb_config.write_text(
        wal_config.read_text()
        .replace('type = "pg_dump"', 'type = "basebackup"')
        .replace("level = 1", "level = 3")
    )
    walb.chown(bb_config)
    conf, _ = bench.pgbackrest_config("local", asynchronous=True)
    daemon = subprocess.Popen(
        walb.as_postgres([*bench.command, "wal-daemon", str(wal_config)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pid = wal_config.parent / "spool" / "archive" / "daemon.pid"
    while not pid.exists():
        if daemon.poll() is not None:
            raise RuntimeError("pgvault wal-daemon did not start")
        time.sleep(0.05)
    from pgvault import load_config
    from pgvault.wal.configure import archive_command

    ours = archive_command(load_config(wal_config), bench.command)[1:-1].replace("''", "'")
    rig = Rig(bench, bb_config, conf)
    # Both archives get every segment: each tool's backup checks its own for the WAL it needs.
    bench.set_archive_command(f"{ours} && {rig.pgbackrest('archive-push %p')}")
    return rig, daemon


def stop_daemon(rig: Rig, daemon: subprocess.Popen[bytes]) -> None:
    pid_file = rig.pgvault_config.parent / "spool" / "archive" / "daemon.pid"
    try:
        os.kill(int(pid_file.read_text().strip()), 15)  # the daemon itself, by its pid
    except (OSError, ValueError):
        daemon.terminate()
    daemon.wait(60)


@attrs.frozen
class Method:
    """A named command, what to do before it, and how to find its stored size after."""

    name: str
    command: str
    size: Callable[[], int | None]
    before: Callable[[], None] | None = None


def backup_methods(rig: Rig, work: Path) -> list[Method]:
    """The base backup methods, in the order they alternate."""
    py = shlex.quote(sys.executable)
    vault = rig.pgvault_config.parent / "vault" / "bench" / "backups"
    repo = rig.pgbackrest_config.parent / "repo" / "backup" / "bench"
    out = work / "pg_basebackup"
    last: dict[str, int] = {}

    def pgvault_size() -> int | None:
        manifests = sorted(vault.glob("*/manifest.json"))
        return int(json.loads(manifests[-1].read_text())["size"]) if manifests else None

    def repo_size() -> int | None:
        # The newest full backup's folder (pgBackRest names them <date>-<time>F).
        folders = sorted(p for p in repo.glob("*F") if p.is_dir())
        return du(folders[-1]) if folders else None

    def clear_out() -> None:
        shutil.rmtree(out, ignore_errors=True)
        last.clear()

    pg_basebackup = shlex.quote(str(rig.cluster.bindir / "pg_basebackup"))
    conn = f"-h 127.0.0.1 -p {rig.cluster.port} -U postgres"
    return [
        Method(
            "pgvault run (basebackup, zstd-3 + aes-256-gcm)",
            f"{py} -m pgvault run -q {rig.pgvault_config}",
            pgvault_size,
        ),
        Method(
            "pgbackrest backup --type=full, process-max 1 (zst-3 + aes-256-cbc)",
            sh(rig.pgbackrest("--type=full", "--process-max=1", "backup")),
            repo_size,
        ),
        Method(
            "pgbackrest backup --type=full, process-max 2 (zst-3 + aes-256-cbc)",
            sh(rig.pgbackrest("--type=full", "--process-max=2", "backup")),
            repo_size,
        ),
        Method(
            "pg_basebackup -Ft -z -X none -c fast (gzip, no encryption)",
            f"{pg_basebackup} {conn} -D {out} -Ft -z -X none -c fast",
            lambda: du(out) if out.exists() else None,
            clear_out,
        ),
    ]


def write_wal(rig: Rig, segments: int) -> int:
    """Write about ``segments`` segments of WAL after the backups, and wait until both archives
    have them; the number of segments switched past."""
    cluster = rig.cluster
    first = str(cluster.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])
    cluster.execute("CREATE TABLE IF NOT EXISTS replay (id bigint, v text)")
    target = segments * (16 << 20)
    start = str(cluster.execute("SELECT pg_current_wal_lsn()")[0][0])
    while True:
        cluster.execute(
            "INSERT INTO replay SELECT g, md5(g::text) FROM generate_series(1, 50000) g"
        )
        done = cluster.execute(f"SELECT pg_current_wal_lsn() - '{start}'::pg_lsn")[0][0]
        if int(str(done)) >= target:
            break
    last = str(cluster.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])
    cluster.execute("SELECT pg_switch_wal()")
    rig.bench.drain(1800)
    return int(last[16:], 16) - int(first[16:], 16) + 1


def restore_methods(rig: Rig, work: Path) -> list[tuple[str, Callable[[Path, int], str]]]:
    """(name, command for a target folder and port) of each PITR restore."""
    py = shlex.quote(sys.executable)
    launcher = " ".join(rig.bench.command)
    pg_ctl = shlex.quote(str(rig.cluster.bindir / "pg_ctl"))
    psql = shlex.quote(str(rig.cluster.bindir / "psql"))

    def pgvault(target: Path, port: int) -> str:
        return (
            f"{py} -m pgvault restore -q {rig.pgvault_config} latest --target-dir {target} "
            f"--start --port {port} --pgvault {shlex.quote(launcher)} --timeout 1800"
        )

    def pgbackrest(process_max: int) -> Callable[[Path, int], str]:
        def command(target: Path, port: int) -> str:
            # Start, then wait for the promotion: hot standby accepts connections before then.
            wait = (
                f'until [ "$({psql} -h 127.0.0.1 -p {port} -U postgres -Atc '
                "'SELECT pg_is_in_recovery()' 2>/dev/null)\" = f ]; do sleep 0.05; done"
            )
            return sh(
                rig.pgbackrest(
                    f"--pg1-path={target}",
                    "--archive-mode=off",
                    "--type=default",
                    f"--process-max={process_max}",
                    "restore",
                )
                + f" && echo 'port = {port}' >> {target}/postgresql.auto.conf"
                + f" && {pg_ctl} -D {target} -l {target}/recovery.log -W start && {wait}"
            )

        return command

    return [
        ("pgvault restore --target-dir --start (fetch.sh, prefetch 8)", pgvault),
        ("pgbackrest restore, process-max 1 + start (archive-get async)", pgbackrest(1)),
        ("pgbackrest restore, process-max 2 + start (archive-get async)", pgbackrest(2)),
    ]


def measure_restores(rig: Rig, work: Path, reps: int) -> list[dict[str, Any]]:
    """Each restore ``reps`` times, alternating: medians of wall, client and recovery CPU."""
    methods = restore_methods(rig, work)
    samples: dict[str, list[tuple[Sample, float]]] = {name: [] for name, _ in methods}
    pg_ctl = str(rig.cluster.bindir / "pg_ctl")
    for rep in range(reps):
        for name, command in methods:
            parent = work / f"restore-{rep}-{len(samples[name])}-{abs(hash(name)) % 1000}"
            parent.mkdir()
            walb.chown(parent)
            target = parent / "data"
            s = run([command(target, free_port())], shell=True)
            recovery = postmaster_cpu(target)
            subprocess.run(
                walb.as_postgres([pg_ctl, "-D", str(target), "-m", "immediate", "stop"]),
                capture_output=True,
            )
            shutil.rmtree(parent, ignore_errors=True)
            samples[name].append((s, recovery))
            log(
                f"rep {rep + 1}/{reps} {name}: {s.wall:.2f}s cpu {s.cpu:.2f}s "
                f"recovery {recovery:.2f}s"
            )
    out = []
    for name, _ in methods:
        r = summarize(name, [s for s, _ in samples[name]])
        out.append(
            {**attrs.asdict(r), "recovery_cpu": statistics.median(c for _, c in samples[name])}
        )
    return out


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    """Build the cluster, measure backups then restores; the results."""
    version = ensure_pgbackrest()
    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="pgvault-bbbench-"))
    work.chmod(0o755)
    walb.chown(work)
    cluster = PostgresCluster(
        settings={
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": "'/bin/true'",
            "max_wal_size": "'4GB'",
            "checkpoint_timeout": "'30min'",
        },
        initdb_args=("--wal-segsize=16",),
    )
    cluster.start()
    loads: list[float] = [os.getloadavg()[0]]
    stop = threading.Event()
    threading.Thread(target=walb.load_monitor, args=(stop, loads), daemon=True).start()
    daemon = None
    try:
        rig, daemon = make_rig(work, cluster)
        log(f"pgbench -i -s {args.scale}")
        walb_pgbench = [str(cluster.bindir / "pgbench"), "-i", "-q", "-s", str(args.scale)]
        loaded = subprocess.run(
            [
                *walb_pgbench,
                "-h",
                "127.0.0.1",
                "-p",
                str(cluster.port),
                "-U",
                "postgres",
                "postgres",
            ],
            capture_output=True,
            text=True,
        )
        if loaded.returncode != 0:
            raise RuntimeError(f"pgbench -i failed: {loaded.stderr.strip()}")
        cluster.execute("CHECKPOINT")
        cluster.execute("SELECT pg_switch_wal()")
        rig.bench.drain(1800)
        db_bytes = int(
            str(cluster.execute("SELECT sum(pg_database_size(oid)) FROM pg_database")[0][0])
        )
        log(f"cluster: {db_bytes / 1e6:.0f} MB")
        methods = backup_methods(rig, work)
        samples: dict[str, list[Sample]] = {m.name: [] for m in methods}
        for rep in range(args.reps):
            for m in methods:
                if m.before:
                    m.before()
                s = run([m.command], shell=True, reap_orphans=True)
                s = attrs.evolve(s, output_bytes=m.size())
                samples[m.name].append(s)
                log(
                    f"rep {rep + 1}/{args.reps} {m.name}: {s.wall:.2f}s cpu {s.cpu:.2f}s "
                    f"stored {(s.output_bytes or 0) / 1e6:.0f} MB"
                )
        backups = [attrs.asdict(summarize(m.name, samples[m.name])) for m in methods]
        log(f"writing {args.segments} segments of WAL to replay")
        replay = write_wal(rig, args.segments)
        restores = measure_restores(rig, work, args.reps)
        server_version = str(cluster.execute("SHOW server_version")[0][0])
    finally:
        stop.set()
        if daemon is not None:
            stop_daemon(rig, daemon)
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "scale": args.scale,
        "cluster_bytes": db_bytes,
        "segments_replayed": replay,
        "reps": args.reps,
        "server_version": server_version,
        "pgbackrest": version,
        "backups": backups,
        "restores": restores,
        "load_average": load_summary(loads),
    }


def report_lines(data: dict[str, Any]) -> list[str]:
    """The docs/benchmarks.md section for saved base backup results."""
    load = data["load_average"]
    backups, restores = data["backups"], data["restores"]
    ours = backups[0]
    lines = [
        f"## Base backups and point-in-time restore (`pgbench -i -s {data['scale']}`, "
        f"{data['cluster_bytes'] / 1e6:,.0f} MB cluster)",
        "",
        "Measured by `python -m benchmarks.basebackup` on one archiving cluster whose WAL goes "
        "to pgvault's vault and pgBackRest's repository at once; methods alternate, "
        f"{data['reps']} repetitions, medians. Load average while measuring: {load['min']}–"
        f"{load['max']} (median {load['median']}) on {load['cores']} cores: wall times are "
        "from a loaded machine; CPU seconds (process tree) hold under load. pgBackRest's only "
        "repository cipher is aes-256-cbc, so it runs with that (encryption parity); "
        f"{data['pgbackrest']}.",
        "",
        "| base backup | wall (s) | × pgvault | CPU (s) | stored (MB) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in backups:
        lines.append(
            f"| {r['name']} | {r['wall']:.2f} | {r['wall'] / ours['wall']:.2f}× | "
            f"{r['cpu']:.2f} | {(r['output_bytes'] or 0) / 1e6:,.0f} | {r['max_rss_mb']:.0f} |"
        )
    first = restores[0]
    lines += [
        "",
        f"Point-in-time restore: the newest backup of each tool plus replay of "
        f"{data['segments_replayed']} segments (16 MiB) to the end of the archive, started and "
        "followed until promoted. *Recovery CPU* is the server's startup process with every "
        "restore_command it ran.",
        "",
        "| restore | wall (s) | × pgvault | command CPU (s) | recovery CPU (s) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in restores:
        lines.append(
            f"| {r['name']} | {r['wall']:.2f} | {r['wall'] / first['wall']:.2f}× | "
            f"{r['cpu']:.2f} | {r['recovery_cpu']:.2f} | {r['max_rss_mb']:.0f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale of the cluster")
    parser.add_argument("--segments", type=int, default=32, help="WAL segments to replay")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    data = measure_all(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print("\n".join(report_lines(data)))
    log(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
