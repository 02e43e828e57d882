"""The whole pipeline against pg_dump itself and the shell scripts users run today.

Every method dumps the same database; methods alternate within each repetition so a slow moment
of the machine hits all of them alike. CPU time and peak RSS cover each command's own process
tree (pg_dump, gzip, pgvault), not the PostgreSQL server, which serves all methods equally.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import attrs

from benchmarks.measure import Result, Sample, run, summarize
from pgvault.postgres.cluster import PostgresCluster


@attrs.frozen
class Method:
    """A named command and how to find its output size afterwards."""

    name: str
    command: str
    output: Callable[[], int | None]
    before: Callable[[], None] | None = None


def _vault_size(vault: Path, name: str) -> Callable[[], int | None]:
    def size() -> int | None:
        manifests = sorted((vault / name / "backups").glob("*/manifest.json"))
        if not manifests:
            return None
        return int(json.loads(manifests[-1].read_text())["size"])

    return size


def _file_size(path: Path) -> Callable[[], int | None]:
    return lambda: path.stat().st_size if path.exists() else None


def write_config(work: Path, name: str, dsn: str, transforms: str, source: str = "") -> Path:
    """A pgvault pipeline config for the benchmark database."""
    path = work / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n[source]\ntype = "pg_dump"\ndsn = "{dsn}"\n{source}{transforms}'
        f'[sink]\ntype = "local"\npath = "{work / "vault"}"\n'
    )
    return path


def backup_methods(
    cluster: PostgresCluster, db: str, work: Path, key_file: Path | None
) -> list[Method]:
    """The dump methods to compare, the physical limit first."""
    pg_dump = shlex.quote(str(cluster.bindir / "pg_dump"))
    conn = f"-h 127.0.0.1 -p {cluster.port} -U postgres -d {db}"
    py = shlex.quote(sys.executable)
    dsn = cluster.dsn(db)
    zstd_cfg = write_config(work, "zstd3", dsn, '[[transform]]\ntype = "zstd"\nlevel = 3\n')
    methods = [
        Method(
            "pg_dump -Fc -Z0 > /dev/null (limit)",
            f"{pg_dump} -Fc -Z0 {conn} > /dev/null",
            lambda: None,
        ),
        Method(
            "pg_dump -Fc -Z9 > file",
            f"{pg_dump} -Fc -Z9 {conn} > {work}/z9.pgdump",
            _file_size(work / "z9.pgdump"),
        ),
        Method(
            "pg_dump | gzip -9 > file",
            f"{pg_dump} {conn} | gzip -9 > {work}/plain.sql.gz",
            _file_size(work / "plain.sql.gz"),
        ),
        Method(
            "pg_dump -Fc -Z0 | zstd -3 > file",
            f"{pg_dump} -Fc -Z0 {conn} | zstd -3 -q -c > {work}/z0.pgdump.zst",
            _file_size(work / "z0.pgdump.zst"),
        ),
        Method(
            "pgvault run (zstd-3)",
            f"{py} -m pgvault run -q {zstd_cfg}",
            _vault_size(work / "vault", "zstd3"),
        ),
    ]
    if key_file is not None:
        aes_cfg = write_config(
            work,
            "zstd3aes",
            dsn,
            '[[transform]]\ntype = "zstd"\nlevel = 3\n'
            f'[[transform]]\ntype = "aes-256-gcm"\nkey_file = "{key_file}"\n',
        )
        methods.append(
            Method(
                "pgvault run (zstd-3 + aes-256-gcm)",
                f"{py} -m pgvault run -q {aes_cfg}",
                _vault_size(work / "vault", "zstd3aes"),
            )
        )
    # Two more points: the split dump that restores in parallel while streaming, and the zstd
    # level whose output is as small as pg_dump -Z9's, for the size/speed trade-off.
    split_cfg = write_config(
        work, "zstd3split", dsn, '[[transform]]\ntype = "zstd"\nlevel = 3\n', "jobs = 2\n"
    )
    methods.append(
        Method(
            "pgvault run (zstd-3, jobs = 2 split)",
            f"{py} -m pgvault run -q {split_cfg}",
            _vault_size(work / "vault", "zstd3split"),
        )
    )
    z9_cfg = write_config(
        work, "zstd9t2", dsn, '[[transform]]\ntype = "zstd"\nlevel = 9\nthreads = 2\n'
    )
    methods.append(
        Method(
            "pgvault run (zstd-9, 2 threads)",
            f"{py} -m pgvault run -q {z9_cfg}",
            _vault_size(work / "vault", "zstd9t2"),
        )
    )
    return methods


def restore_methods(cluster: PostgresCluster, db: str, work: Path) -> list[Method]:
    """Restore methods: pgvault from its vault against pg_restore from an uncompressed dump."""
    bindir = cluster.bindir
    pg_restore = shlex.quote(str(bindir / "pg_restore"))
    conn = f"-h 127.0.0.1 -p {cluster.port} -U postgres"
    py = shlex.quote(sys.executable)
    dump = work / "restore-source.pgdump"
    zstd_cfg = work / "zstd3.toml"
    target = "bench_restored"

    def drop() -> None:
        cluster.drop_database(target)

    def create_then_drop() -> None:
        drop()
        cluster.create_database(target)

    return [
        Method(
            "pg_restore -j1 (uncompressed file)",
            f"{pg_restore} {conn} -d {target} {dump}",
            lambda: None,
            create_then_drop,
        ),
        Method(
            "pg_restore -j2 (uncompressed file)",
            f"{pg_restore} {conn} -j 2 -d {target} {dump}",
            lambda: None,
            create_then_drop,
        ),
        Method(
            "pgvault restore --jobs 1",
            f"{py} -m pgvault restore -q {zstd_cfg} latest --target-db {target}",
            lambda: None,
            drop,
        ),
        Method(
            "pgvault restore --jobs 2 (split dump)",
            f"{py} -m pgvault restore -q {work / 'zstd3split.toml'} latest --target-db {target} "
            "--jobs 2",
            lambda: None,
            drop,
        ),
        Method(
            "pgvault restore --jobs 2",
            f"{py} -m pgvault restore -q {zstd_cfg} latest --target-db {target} --jobs 2 "
            f"--work-dir {work}",
            lambda: None,
            drop,
        ),
    ]


def compare(methods: list[Method], reps: int, log: Callable[[str], None]) -> list[Result]:
    """Run every method ``reps`` times, alternating; return medians in method order."""
    samples: dict[str, list[Sample]] = {m.name: [] for m in methods}
    for rep in range(reps):
        for m in methods:
            if m.before:
                m.before()
            s = run([m.command], shell=True)
            s = attrs.evolve(s, output_bytes=m.output())
            samples[m.name].append(s)
            log(
                f"rep {rep + 1}/{reps} {m.name}: {s.wall:.2f}s cpu {s.cpu:.2f}s "
                f"rss {s.max_rss_mb:.0f} MB"
            )
    return [summarize(m.name, samples[m.name]) for m in methods]
