"""WAL archiving and fetching, pgvault against pgBackRest and barman-cloud, on one cluster.

    python -m benchmarks.wal [--scale 100] [--sinks local,s3] [--only METHODS] [--fetch 32]

One throwaway PostgreSQL cluster (16 MiB segments) archives the WAL of ``pgbench -i -s SCALE``
(a bulk load: the stress case for an archiver) through each method in turn, to the local disk
and to moto's S3 server over TLS on loopback (pgBackRest speaks S3 over TLS only; the server runs
in its own process, as a remote store would). For each method it reports the segments the load
wrote, how many were still waiting (``.ready``) when the load ended, how long they took to drain,
and segments per second over load and drain. Methods (all with compression; pgvault and
pgBackRest with client-side encryption too, barman-cloud has none):

* ``push``: ``pgvault wal-push`` as archive_command (a Python start per segment), zstd-1 + AES;
* ``daemon``: ``pgvault wal-daemon`` with the ack.sh archive_command, zstd-1 + AES;
* ``pgbackrest-sync`` / ``pgbackrest-async``: ``pgbackrest archive-push`` (zst-3, aes-256-cbc;
  async with process-max 2);
* ``barman``: ``barman-cloud-wal-archive`` (gzip; S3 only: it has no local target).

Then it measures pgvault's synchronous push cost per segment on its own, and ``wal-fetch``
segments per second, called the way PostgreSQL calls a restore_command (one after another, as
postgres), without and with prefetch (fetch.sh). pgBackRest (2.45) and barman-cli-cloud (3.4)
come from Debian; they are installed with apt-get when missing. Results go to
``benchmarks/results/wal.json``; ``python -m benchmarks.run`` puts them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pgvault
from benchmarks.measure import compile_bytecode, load_summary
from pgvault.postgres.cluster import PostgresCluster

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "wal.json"
METHODS = ("push", "daemon", "pgbackrest-sync", "pgbackrest-async", "barman")
AS_ROOT = os.geteuid() == 0
ACCESS, SECRET = "bench-key", "bench-secret"

_S3_SERVER = r"""
import sys
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
)
from werkzeug.serving import make_server
from pgvault.testing.servers import atomic_conditional_writes
atomic_conditional_writes("moto")
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]

class Handler(MotoRequestHandler):
    # OpenSSL 3 clients (pgBackRest) refuse a TLS connection closed without close_notify.
    def finish(self):
        super().finish()
        try:
            self.connection.unwrap()
        except Exception:
            pass

server = make_server("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), True,
                     request_handler=Handler, ssl_context=(cert, key))
print("ready", flush=True)
server.serve_forever()
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] wal: {message}", file=sys.stderr, flush=True)


def chown(path: Path) -> None:
    if AS_ROOT:
        pg = pwd.getpwnam("postgres")
        os.chown(path, pg.pw_uid, pg.pw_gid)


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if AS_ROOT else argv


def ensure_peers() -> dict[str, str]:
    """pgBackRest and barman-cloud from Debian (installed when missing); their versions."""
    if not shutil.which("pgbackrest") or not shutil.which("barman-cloud-wal-archive"):
        if not AS_ROOT:
            sys.exit(
                "benchmarks: pgbackrest or barman-cloud-wal-archive is missing; as root: "
                "apt-get install -y pgbackrest barman-cli-cloud"
            )
        log("installing pgbackrest and barman-cli-cloud (apt-get)")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "pgbackrest", "barman-cli-cloud"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    versions = {
        "pgbackrest": subprocess.run(
            ["pgbackrest", "version"], capture_output=True, text=True
        ).stdout.strip(),
        "barman-cloud": subprocess.run(
            ["barman-cloud-wal-archive", "--version"], capture_output=True, text=True
        ).stdout.strip()
        or "barman-cloud",
    }
    return versions


class S3:
    """moto over TLS in its own process, with a self-signed certificate."""

    def __init__(self, work: Path) -> None:
        from pgvault.testing.postgres import free_port

        self.cert, self.key = work / "s3.crt", work / "s3.key"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
            ],
            check=True,
            capture_output=True,
        )
        self.cert.chmod(0o644)
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _S3_SERVER, str(self.port), str(self.cert), str(self.key)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("moto over TLS did not start")
        self.endpoint = f"https://127.0.0.1:{self.port}"

    def bucket(self, name: str) -> str:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS,
            aws_secret_access_key=SECRET,
            verify=str(self.cert),
        ).create_bucket(Bucket=name)
        return name

    def env(self) -> str:
        """Shell assignments for the AWS SDKs run by PostgreSQL."""
        return (
            f"AWS_ACCESS_KEY_ID={ACCESS} AWS_SECRET_ACCESS_KEY={SECRET} "
            f"AWS_DEFAULT_REGION=us-east-1 AWS_CA_BUNDLE={self.cert}"
        )

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def launcher(work: Path) -> list[str]:
    """How postgres starts this pgvault (the tests' launcher: Debian's python3 + PYTHONPATH)."""
    if not AS_ROOT:
        return [sys.executable, "-m", "pgvault"]
    src = Path(pgvault.__file__).resolve().parents[1]
    site = sysconfig.get_paths()["purelib"]
    path = work / "pgvault"
    path.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(f'{src}:{site}')} PYTHONDONTWRITEBYTECODE=1 "
        'exec /usr/bin/python3 -m pgvault "$@"\n'
    )
    path.chmod(0o755)
    return [str(path)]


class Bench:
    """The cluster, the work folder and one target (local or s3) being measured."""

    def __init__(self, work: Path, cluster: PostgresCluster, s3: S3 | None) -> None:
        self.work = work
        self.cluster = cluster
        self.s3 = s3
        self.command = launcher(work)
        self.key = work / "wal.key"
        if not self.key.exists():
            from pgvault.transforms import keys

            keys.write_key_file(self.key)
            chown(self.key)

    def folder(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(exist_ok=True)
        chown(path)
        return path

    def pgvault_config(self, sink: str, tag: str, *, prefetch: int = 0, workers: int = 2) -> Path:
        folder = self.folder(f"pgvault-{sink}-{tag}")
        if sink == "local":
            sink_table = f'type = "local"\npath = "{folder / "vault"}"\n'
        else:
            assert self.s3 is not None
            bucket = self.s3.bucket(f"pgvault-{tag}-{int(time.time())}")
            sink_table = (
                f'type = "s3"\nurl = "s3://{bucket}/wal"\nendpoint_url = "{self.s3.endpoint}"\n'
                f'region = "us-east-1"\naccess_key_id = "{ACCESS}"\n'
                f'secret_access_key = "{SECRET}"\nverify_tls = false\n'
            )
        spool = self.folder(f"pgvault-{sink}-{tag}/spool")
        config = folder / "bench.toml"
        config.write_text(
            'name = "bench"\n[source]\ntype = "pg_dump"\n'
            f'dsn = "{self.cluster.dsn()}"\n'
            '[[transform]]\ntype = "zstd"\nlevel = 1\n'
            f'[[transform]]\ntype = "aes-256-gcm"\nkey_file = "{self.key}"\n'
            f"[sink]\n{sink_table}"
            f'[wal]\npg_wal = "{self.cluster.data / "pg_wal"}"\nspool = "{spool}"\n'
            f"prefetch = {prefetch}\nworkers = {workers}\n"
        )
        chown(config)
        return config

    def pgbackrest_config(self, sink: str, *, asynchronous: bool) -> tuple[Path, str]:
        folder = self.folder(f"pgbackrest-{sink}-{'async' if asynchronous else 'sync'}")
        for sub in ("repo", "spool", "log", "lock"):
            self.folder(f"{folder.name}/{sub}")
        repo = [f"repo1-path={folder / 'repo'}"]
        if sink == "s3":
            assert self.s3 is not None
            bucket = self.s3.bucket(f"pgbackrest-{folder.name[-5:]}-{int(time.time())}")
            repo = [
                "repo1-type=s3",
                "repo1-path=/pgbackrest",
                f"repo1-s3-bucket={bucket}",
                # pgBackRest checks the certificate by host name (an IP address never matches).
                "repo1-s3-endpoint=localhost",
                f"repo1-storage-port={self.s3.port}",
                "repo1-s3-region=us-east-1",
                f"repo1-s3-key={ACCESS}",
                f"repo1-s3-key-secret={SECRET}",
                "repo1-s3-uri-style=path",
                f"repo1-storage-ca-file={self.s3.cert}",
            ]
        conf = folder / "pgbackrest.conf"
        lines = [
            "[global]",
            *repo,
            "repo1-cipher-type=aes-256-cbc",
            "repo1-cipher-pass=bench-passphrase-not-secret",
            "compress-type=zst",
            "compress-level=3",
            f"spool-path={folder / 'spool'}",
            f"log-path={folder / 'log'}",
            f"lock-path={folder / 'lock'}",
            "log-level-console=warn",
            "log-level-file=off",
            "start-fast=y",
            *(["archive-async=y", "process-max=2"] if asynchronous else []),
            "[bench]",
            f"pg1-path={self.cluster.data}",
            f"pg1-port={self.cluster.port}",
            f"pg1-socket-path={self.cluster.socket_dir}",
        ]
        conf.write_text("\n".join(lines) + "\n")
        chown(conf)
        created = subprocess.run(
            as_postgres(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"]),
            capture_output=True,
            text=True,
            cwd=folder,
        )
        if created.returncode != 0:
            raise RuntimeError(f"pgbackrest stanza-create failed: {created.stderr.strip()}")
        return conf, f"pgbackrest --config={conf} --stanza=bench archive-push %p"

    def archive_command(self, method: str, sink: str) -> tuple[str, Path | None]:
        """The archive_command of ``method`` to ``sink``, and the pgvault config if any."""
        if method in ("push", "daemon"):
            from pgvault.wal.configure import archive_command

            config = self.pgvault_config(sink, method)
            value = archive_command(
                pgvault.load_config(config), self.command, sync=method == "push"
            )
            return value[1:-1].replace("''", "'"), config
        if method.startswith("pgbackrest"):
            return self.pgbackrest_config(sink, asynchronous=method.endswith("async"))[1], None
        assert self.s3 is not None
        bucket = self.s3.bucket(f"barman-{int(time.time())}")
        return (
            f"{self.s3.env()} barman-cloud-wal-archive --gzip --endpoint-url {self.s3.endpoint} "
            f"s3://{bucket}/barman bench %p",
            None,
        )

    def set_archive_command(self, value: str) -> None:
        quoted = "'" + value.replace("'", "''") + "'"
        self.cluster.execute(f"ALTER SYSTEM SET archive_command = {quoted}")
        self.cluster.execute("SELECT pg_reload_conf()")

    def status(self) -> tuple[int, int]:
        """(.ready, .done) files in archive_status."""
        ready = done = 0
        for entry in os.scandir(self.cluster.data / "pg_wal" / "archive_status"):
            if entry.name.endswith(".ready"):
                ready += 1
            elif entry.name.endswith(".done"):
                done += 1
        return ready, done

    def drain(self, timeout: float) -> float:
        started = time.perf_counter()
        while self.status()[0]:
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"the archive did not drain within {timeout:.0f}s")
            time.sleep(0.02)
        return time.perf_counter() - started

    def settle(self) -> None:
        """Between methods: nothing waiting, old .done files gone, a clean start."""
        self.set_archive_command("/bin/true")
        self.cluster.execute("SELECT pg_switch_wal()")
        self.drain(600)
        self.cluster.execute("CHECKPOINT")
        for entry in (self.cluster.data / "pg_wal" / "archive_status").iterdir():
            if entry.name.endswith(".done"):
                entry.unlink()

    def measure(self, method: str, sink: str, scale: int) -> dict[str, Any]:
        self.settle()
        command, config = self.archive_command(method, sink)
        daemon = None
        if method == "daemon":
            assert config is not None
            daemon = subprocess.Popen(
                as_postgres([*self.command, "wal-daemon", str(config)]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            pid = config.parent / "spool" / "archive" / "daemon.pid"
            while not pid.exists():
                time.sleep(0.05)
        self.set_archive_command(command)
        log(f"{method} → {sink}: pgbench -i -s {scale}")
        try:
            started = time.perf_counter()
            subprocess.run(
                [
                    shutil.which("pgbench") or str(self.cluster.bindir / "pgbench"),
                    "-i",
                    "-q",
                    "-s",
                    str(scale),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.cluster.port),
                    "-U",
                    "postgres",
                    "postgres",
                ],
                check=True,
                capture_output=True,
            )
            self.cluster.execute("SELECT pg_switch_wal()")  # the load's last segment too
            load = time.perf_counter() - started
            backlog, archived_during = self.status()
            drain = self.drain(1800)
            segments = sum(self.status())
        finally:
            if daemon is not None:
                assert config is not None
                pid_file = config.parent / "spool" / "archive" / "daemon.pid"
                try:
                    os.kill(int(pid_file.read_text().strip()), 15)  # the daemon itself, by pid
                except (OSError, ValueError):
                    daemon.terminate()
                daemon.wait(60)
        result = {
            "method": method,
            "sink": sink,
            "segments": segments,
            "load_seconds": round(load, 2),
            "archived_during_load": archived_during,
            "backlog_at_end": backlog,
            "drain_seconds": round(drain, 2),
            "segments_per_second": round(segments / (load + drain), 2),
        }
        log(json.dumps(result))
        if config is not None:
            result["config"] = str(config)
        return result

    def push_cost(self, config: Path, count: int) -> dict[str, Any]:
        """Seconds per synchronous wal-push of a fresh segment, run as PostgreSQL would."""
        folder = self.folder("push-cost")
        times = []
        self.set_archive_command("/bin/true")
        for _ in range(count):
            row = self.cluster.execute("SELECT pg_walfile_name(pg_switch_wal())")
            self.cluster.execute("CREATE TABLE IF NOT EXISTS push_cost (x int)")
            self.cluster.execute("INSERT INTO push_cost SELECT generate_series(1, 1000)")
            name = str(row[0][0])
            copy = folder / name
            shutil.copy(self.cluster.data / "pg_wal" / name, copy)
            chown(copy)
            started = time.perf_counter()
            done = subprocess.run(
                as_postgres([*self.command, "wal-push", str(config), str(copy)]),
                capture_output=True,
                text=True,
                cwd=self.cluster.data,
            )
            times.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise RuntimeError(f"wal-push failed: {done.stderr.strip()}")
        starts = []
        for _ in range(3):
            began = time.perf_counter()
            subprocess.run(as_postgres([*self.command, "--version"]), capture_output=True)
            starts.append(time.perf_counter() - began)
        return {
            "segments": count,
            "median_seconds": round(statistics.median(times), 3),
            "mean_seconds": round(statistics.mean(times), 3),
            "python_start_seconds": round(statistics.median(starts), 3),
        }

    def fetch_rate(self, config: Path, count: int, *, prefetch: bool) -> dict[str, Any]:
        """Segments per second through the restore_command, one call after another."""
        from pgvault.wal.archive import WalArchive
        from pgvault.wal.configure import restore_command

        loaded = pgvault.load_config(config)
        archive = WalArchive(loaded.sink, loaded.name)
        (record,) = archive.clusters()
        names = [i.name.text for i in archive.list(record.cluster) if i.name.is_segment_data]
        names = [n for n in names if not n.endswith(".partial")][:count]
        if prefetch:
            text = config.read_text().replace("prefetch = 0", "prefetch = 8")
            config = config.with_name("bench-prefetch.toml")
            config.write_text(text)
            chown(config)
            loaded = pgvault.load_config(config)
        command = restore_command(loaded, self.command)[1:-1].replace("''", "'")
        # A data directory stand-in: restore_command runs in the data directory.
        data = self.folder(f"fetch-{'prefetch' if prefetch else 'plain'}")
        (data / "global").mkdir(exist_ok=True)
        (data / "pg_wal").mkdir(exist_ok=True)
        shutil.copy(self.cluster.data / "global" / "pg_control", data / "global")
        shutil.copy(self.cluster.data / "PG_VERSION", data)
        for path in (data / "global", data / "pg_wal", data / "global" / "pg_control"):
            chown(path)
        started = time.perf_counter()
        for name in names:
            line = command.replace("%f", name).replace("%p", "pg_wal/RECOVERYXLOG")
            done = subprocess.run(as_postgres(["sh", "-c", line]), cwd=data, capture_output=True)
            if done.returncode != 0:
                raise RuntimeError(f"restore_command failed for {name}: {done.stderr!r}")
            (data / "pg_wal" / "RECOVERYXLOG").unlink()
        wall = time.perf_counter() - started
        lock = loaded.wal.spool / "fetch" / "prefetch.lock" if loaded.wal.spool else None
        if lock is not None and lock.exists():
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(lock.read_text().strip()), 15)
        return {
            "prefetch": prefetch,
            "segments": len(names),
            "seconds": round(wall, 2),
            "segments_per_second": round(len(names) / wall, 2),
        }


def load_monitor(stop: threading.Event, samples: list[float]) -> None:
    """Sample the 1-minute load average while measuring (how noisy was the machine?)."""
    while not stop.wait(5):
        samples.append(os.getloadavg()[0])


def measure_all(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="pgvault-walbench-"))
    work.chmod(0o755)
    chown(work)
    versions = ensure_peers()
    compile_bytecode()
    methods = [m for m in args.only.split(",") if m]
    sinks = [s for s in args.sinks.split(",") if s]
    s3 = S3(work) if "s3" in sinks else None
    cluster = PostgresCluster(
        settings={
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": "'/bin/true'",
            "max_wal_size": "'8GB'",
            "checkpoint_timeout": "'30min'",
        },
        initdb_args=("--wal-segsize=16",),
    )
    cluster.start()
    stop = threading.Event()
    loads: list[float] = [os.getloadavg()[0]]
    threading.Thread(target=load_monitor, args=(stop, loads), daemon=True).start()
    results: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    try:
        bench = Bench(work, cluster, s3)
        for sink in sinks:
            for method in methods:
                if method == "barman" and sink != "s3":
                    continue
                results.append(bench.measure(method, sink, args.scale))
        push_configs = [r["config"] for r in results if r["method"] == "push" and "config" in r]
        daemon_configs = [r["config"] for r in results if r["method"] == "daemon" and "config" in r]
        cost_config = Path(
            push_configs[0] if push_configs else bench.pgvault_config("local", "cost")
        )
        extra["push_cost"] = bench.push_cost(cost_config, args.push_cost)
        log(f"push cost: {extra['push_cost']}")
        source = Path((daemon_configs or push_configs or [str(cost_config)])[0])
        extra["fetch"] = [
            bench.fetch_rate(source, args.fetch, prefetch=False),
            bench.fetch_rate(source, args.fetch, prefetch=True),
        ]
        log(f"fetch: {extra['fetch']}")
        server_version = str(cluster.execute("SHOW server_version")[0][0])
    finally:
        stop.set()
        cluster.destroy()
        if s3 is not None:
            s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    for r in results:
        r.pop("config", None)
    return {
        "scale": args.scale,
        "segment_mib": 16,
        "server_version": server_version,
        "peers": versions,
        "archive": results,
        **extra,
        "load_average": load_summary(loads),
    }


def report_lines(data: dict[str, Any]) -> list[str]:
    """The docs/benchmarks.md section for saved WAL results."""
    labels = {
        "push": "pgvault wal-push (sync), zstd-1 + aes-256-gcm",
        "daemon": "pgvault wal-daemon + ack.sh, zstd-1 + aes-256-gcm",
        "pgbackrest-sync": "pgbackrest archive-push (sync), zst-3 + aes-256-cbc",
        "pgbackrest-async": "pgbackrest archive-push (async, process-max 2), zst-3 + aes-256-cbc",
        "barman": "barman-cloud-wal-archive, gzip (no client-side encryption)",
    }
    load = data["load_average"]
    lines = [
        f"## WAL archiving (`pgbench -i -s {data['scale']}`, {data['segment_mib']} MiB segments)",
        "",
        "Measured by `python -m benchmarks.wal` on one cluster, one method after another; the "
        "archive_command runs as postgres, as in production. *Backlog* is the `.ready` files "
        "when the load ended; *drain* the time until none was left. Load average while "
        f"measuring: {load['min']}–{load['max']} (median {load['median']}) on {load['cores']} "
        "cores.",
        "",
        *(
            [
                f"A short run (scale {data['scale']}): the issue's gate (backlog ≤ 2, drained "
                "within 2 s) is judged on `pgbench -i -s 100` on a quiet machine.",
                "",
            ]
            if data["scale"] < 100
            else []
        ),
        "| method | sink | segments | load (s) | backlog at end | drain (s) | segments/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in data["archive"]:
        lines.append(
            f"| {labels.get(r['method'], r['method'])} | {r['sink']} | {r['segments']} | "
            f"{r['load_seconds']:.1f} | {r['backlog_at_end']} | {r['drain_seconds']:.1f} | "
            f"{r['segments_per_second']:.1f} |"
        )
    cost = data.get("push_cost")
    if cost:
        lines += [
            "",
            f"Synchronous `wal-push` of one segment costs {cost['median_seconds']:.2f} s "
            f"(median of {cost['segments']}); a bare `pgvault --version` start takes "
            f"{cost['python_start_seconds']:.2f} s of that.",
        ]
    fetch = data.get("fetch")
    if fetch:
        lines += [
            "",
            "| restore_command | segments | seconds | segments/s |",
            "|---|---:|---:|---:|",
        ]
        for f in fetch:
            name = "fetch.sh with prefetch (8 ahead)" if f["prefetch"] else "pgvault wal-fetch"
            lines.append(
                f"| {name} | {f['segments']} | {f['seconds']:.1f} | "
                f"{f['segments_per_second']:.1f} |"
            )
    peers = data.get("peers", {})
    lines += ["", "Peers: " + "; ".join(f"{k} {v}" for k, v in peers.items()) + "."]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--sinks", default="local,s3")
    parser.add_argument("--only", default=",".join(METHODS))
    parser.add_argument("--push-cost", type=int, default=10, help="segments for the push cost")
    parser.add_argument("--fetch", type=int, default=32, help="segments to fetch")
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
