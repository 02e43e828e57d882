"""Run every benchmark and write ``docs/benchmarks.md`` and its chart.

    python -m benchmarks.run [--size-gb 1.0] [--reps 3] [--no-large] [--no-wal]
                             [--no-basebackup] [--no-scaling] [--out docs/benchmarks.md]

Builds its own dataset on a throwaway cluster (nothing else is touched), then measures:
compressors on the real dump bytes; backup methods (pg_dump alone, the scripts users run
today, pgvault with and without encryption); restore methods; and pgvault's peak memory on the
dataset and on one four times larger. Then WAL archiving and fetching (:mod:`benchmarks.wal`, on a
cluster of its own), unless ``--no-wal``; base backups and point-in-time restores against
pgBackRest and pg_basebackup (:mod:`benchmarks.basebackup`), unless ``--no-basebackup``; and,
unless ``--no-scaling``, every dataset's ratios with a profile summary, the scaling curves, the
many-databases run and the fixed costs (:mod:`benchmarks.scaling`; ladders as options, the
issue's sizes by default). The report includes the latest saved results of each part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import attrs
import zstandard

from benchmarks import basebackup, chart, compressors, dataset, pipelines, scaling
from benchmarks import wal as wal_bench
from benchmarks.measure import Result, compile_bytecode, run
from pgvault.postgres.cluster import PostgresCluster

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
ANALYSIS = ROOT / "benchmarks" / "analysis.md"
SAMPLE_BYTES = 256 << 20


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem:.0f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def make_key(work: Path) -> Path | None:
    try:
        from importlib.metadata import entry_points

        from pgvault.transforms.api import Transform  # noqa: F401

        if "aes-256-gcm" not in {e.name for e in entry_points(group="pgvault.transforms")}:
            return None
    except ImportError:
        return None
    key = work / "bench.key"
    subprocess.run(
        [sys.executable, "-m", "pgvault", "keygen", "--out", str(key)],
        check=True,
        capture_output=True,
    )
    return key


def fmt_mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:,.0f}"


def table(results: list[Result], base: Result | None) -> list[str]:
    lines = [
        "| method | wall (s) | × limit | CPU (s) | output (MB) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = f"{r.wall / base.wall:.2f}×" if base else "—"
        name = r.name.replace("|", "\\|")  # a shell pipe must not split the table row
        lines.append(
            f"| {name} | {r.wall:.2f} | {ratio} | {r.cpu:.2f} | "
            f"{fmt_mb(r.output_bytes)} | {r.max_rss_mb:.0f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-large", action="store_true", help="skip the 4x memory check")
    parser.add_argument("--no-wal", action="store_true", help="skip the WAL archiving benchmark")
    parser.add_argument("--wal-scale", type=int, default=100, help="pgbench scale of the WAL run")
    parser.add_argument("--no-basebackup", action="store_true", help="skip base backups and PITR")
    parser.add_argument("--bb-scale", type=int, default=50, help="pgbench scale of that cluster")
    parser.add_argument("--bb-segments", type=int, default=32, help="WAL segments it replays")
    parser.add_argument(
        "--no-scaling",
        dest="scaling",
        action="store_false",
        help="skip every dataset, the scaling curves, many databases and the fixed costs",
    )
    scaling.add_arguments(parser)
    parser.add_argument(
        "--from-results",
        type=Path,
        metavar="JSON",
        help="only rewrite the report from a previous run's results (after editing analysis.md)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    if args.from_results:
        data = json.loads(args.from_results.read_text())
        write_report(args, **_load(data))
        return 0
    for tool, package in (("zstd", "zstd"), ("/usr/bin/time", "time")):
        if shutil.which(tool) is None:
            sys.exit(f"benchmarks: {tool} is needed (Debian: apt-get install {package})")

    compile_bytecode()
    work = Path(tempfile.mkdtemp(prefix="pgvault-bench-"))
    cluster = PostgresCluster(base_dir=None)
    cluster.start()
    try:
        log(f"building the {args.size_gb:g} GB dataset")
        db_bytes = dataset.build(cluster, "bench", args.size_gb)
        log(f"dataset: {db_bytes / 1e9:.2f} GB on disk")
        pg_dump = cluster.bindir / "pg_dump"
        conn = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres"]

        # Compressors, on a sample of the real uncompressed custom-format dump.
        dump = work / "restore-source.pgdump"
        subprocess.run(
            [str(pg_dump), "-Fc", "-Z0", *conn, "-d", "bench", "-f", str(dump)], check=True
        )
        with dump.open("rb") as f:
            sample = f.read(SAMPLE_BYTES)
        log(f"compressors on a {len(sample) >> 20} MiB sample of the dump")
        comp = compressors.compare(sample)
        sample_mib = len(sample) >> 20
        del sample

        key = make_key(work)
        methods = pipelines.backup_methods(cluster, "bench", work, key)
        log("warm-up run (fills the page cache)")
        run([methods[0].command], shell=True)
        backups = pipelines.compare(methods, args.reps, log)
        restores = pipelines.compare(
            pipelines.restore_methods(cluster, "bench", work), args.reps, log
        )

        memory: list[tuple[str, float, float]] = [
            (
                f"{args.size_gb:g} GB",
                db_bytes / 1e9,
                next(r.max_rss_mb for r in backups if r.name.startswith("pgvault run (zstd-3)")),
            )
        ]
        if not args.no_large:
            log(f"building the {4 * args.size_gb:g} GB dataset for the memory check")
            big_bytes = dataset.build(cluster, "bench_large", 4 * args.size_gb)
            cfg = pipelines.write_config(
                work,
                "large",
                cluster.dsn("bench_large"),
                '[[transform]]\ntype = "zstd"\nlevel = 3\n',
            )
            sample_run = run([sys.executable, "-m", "pgvault", "run", "-q", str(cfg)])
            memory.append((f"{4 * args.size_gb:g} GB", big_bytes / 1e9, sample_run.max_rss_mb))
            log(f"large run: {sample_run.wall:.1f}s, rss {sample_run.max_rss_mb:.0f} MB")
        server_version = cluster.execute("SHOW server_version")[0][0]
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)

    results = {
        "mach": machine(),
        "server_version": str(server_version),
        "db_bytes": db_bytes,
        "comp": [attrs.asdict(c) for c in comp],
        "sample_mib": sample_mib,
        "backups": [attrs.asdict(r) for r in backups],
        "restores": [attrs.asdict(r) for r in restores],
        "memory": memory,
        "size_gb": args.size_gb,
        "reps": args.reps,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    log(f"raw results in {RESULTS}")
    if not args.no_wal:
        wal_args = argparse.Namespace(
            scale=args.wal_scale,
            sinks="local,s3",
            only=",".join(wal_bench.METHODS),
            push_cost=10,
            fetch=64,
        )
        wal_data = wal_bench.measure_all(wal_args)
        wal_bench.RESULTS.write_text(json.dumps(wal_data, indent=2) + "\n")
        log(f"WAL results in {wal_bench.RESULTS}")
    if not args.no_basebackup:
        bb_args = argparse.Namespace(scale=args.bb_scale, segments=args.bb_segments, reps=args.reps)
        bb_data = basebackup.measure_all(bb_args)
        basebackup.RESULTS.write_text(json.dumps(bb_data, indent=2) + "\n")
        log(f"base backup results in {basebackup.RESULTS}")
    if args.scaling:
        scaling.measure_parts(list(scaling.PARTS), args)
    write_report(args, **_load(results))
    return 0


def _load(data: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`write_report` from saved results."""
    return {
        "mach": data["mach"],
        "server_version": data["server_version"],
        "db_bytes": data["db_bytes"],
        "comp": [compressors.CompressorResult(**c) for c in data["comp"]],
        "sample_mib": data["sample_mib"],
        "backups": [Result(**r) for r in data["backups"]],
        "restores": [Result(**r) for r in data["restores"]],
        "memory": [tuple(m) for m in data["memory"]],
        "size_gb": data["size_gb"],
        "reps": data["reps"],
    }


def write_report(
    args: argparse.Namespace,
    mach: dict[str, str],
    server_version: str,
    db_bytes: int,
    comp: list[compressors.CompressorResult],
    sample_mib: int,
    backups: list[Result],
    restores: list[Result],
    memory: list[tuple[str, float, float]],
    size_gb: float,
    reps: int,
) -> None:
    out: Path = args.out
    svg = out.with_suffix(".svg")
    svg.write_text(
        chart.render(
            backups, f"Backup of a {db_bytes / 1e9:.1f} GB database ({mach['cores']} cores)"
        )
    )
    limit = backups[0]
    by_name = {r.name: r for r in backups}
    enc = by_name.get("pgvault run (zstd-3 + aes-256-gcm)")
    plain = by_name["pgvault run (zstd-3)"]
    z9 = by_name["pg_dump -Fc -Z9 > file"]
    main = enc or plain
    equal = by_name.get("pgvault run (zstd-9, 2 threads)")
    lines = [
        "# Benchmarks",
        "",
        "Generated by `nox -s benchmarks` (`python -m benchmarks.run`); do not edit by hand.",
        f"Dataset {size_gb:g} GB requested, {db_bytes / 1e9:.2f} GB on disk; "
        f"{reps} repetitions per method, alternating; medians.",
        "",
        "## Machine and versions",
        "",
        f"- CPU: {mach['cpu']}, {mach['cores']} cores, {mach['memory']} RAM; {mach['os']}",
        f"- Python {mach['python']}, pgvault {_version('pgvault')}, zstandard "
        f"{zstandard.__version__}, cryptography {_version('cryptography')}",
        f"- PostgreSQL {server_version} (server and pg_dump), on the same machine over loopback",
        "",
        "## Method",
        "",
        "- The dataset is built by `benchmarks/dataset.py` on a throwaway cluster: pgbench tables "
        "plus `app_events`, a table of mixed types (word-list text of varying length, jsonb, "
        "numeric, timestamps, some bytea) so compression behaves like an application's data.",
        "- Each method runs as a real command (`bash -o pipefail -c …`) under GNU `time`: wall "
        "time with `perf_counter`; CPU time (user+system) of the command's whole process tree; "
        "peak RSS of its largest process. The PostgreSQL server's CPU serves every method alike "
        "and is not counted.",
        "- A warm-up dump fills the page cache first; methods alternate within each repetition.",
        "- Output sizes are the files written, or the backup's stored size for pgvault.",
        "- From 2026-12-02 on, pgvault's modules are compiled to bytecode before measuring, as an "
        "installed package "
        "has them (this machine sets `PYTHONDONTWRITEBYTECODE=1`, and an editable install would "
        "otherwise compile 300-odd modules at every start, about 0.25 CPU-s per command).",
        "- The machine is shared (2 cores, other sessions running tests): wall times are noisy; "
        "CPU seconds of the process tree and peak RSS hold under load. Each section gives the "
        "load average it was measured under.",
        "",
        "## Backup",
        "",
        f"![wall time and size per method]({svg.name})",
        "",
        *table(backups, limit),
        "",
        "### Targets",
        "",
        f"- `pgvault run` with zstd-3{' + aes-256-gcm' if enc else ''} within 1.10× of "
        f"`pg_dump -Fc -Z0 > /dev/null`: **{main.wall / limit.wall:.2f}×** "
        f"({'met' if main.wall <= 1.10 * limit.wall else 'missed'}).",
        f"- At least 4× faster than `pg_dump -Fc -Z9`: **{z9.wall / main.wall:.1f}×** "
        f"({'met' if z9.wall >= 4 * main.wall else 'missed'}); output "
        f"{fmt_mb(main.output_bytes)} MB vs {fmt_mb(z9.output_bytes)} MB "
        f"({'no larger' if (main.output_bytes or 0) <= (z9.output_bytes or 0) else 'LARGER'}).",
        "- Peak RSS under 100 MB and flat: "
        + ", ".join(f"{label} → {rss:.0f} MB" for label, _, rss in memory)
        + ".",
    ]
    if equal is not None:
        lines.append(
            f"- The size/speed trade-off: zstd-9 with 2 threads stores "
            f"{fmt_mb(equal.output_bytes)} MB (pg_dump -Z9: {fmt_mb(z9.output_bytes)} MB) and is "
            f"{z9.wall / equal.wall:.1f}× faster than pg_dump -Z9."
        )
    if enc:
        lines.append(
            f"- Encryption overhead: zstd-3 + aes-256-gcm takes "
            f"{(enc.wall / plain.wall - 1) * 100:+.1f}% wall time against zstd-3 alone."
        )
    if ANALYSIS.exists():
        lines += ["", "## Analysis", "", ANALYSIS.read_text().strip()]
    lines += scaling.report_lines(out.with_name(out.stem + "-scaling.svg"))
    # The WAL run of the gate (scale 100, the daemon and pgBackRest), then an earlier run with
    # every method when one is kept beside it.
    for wal_results in (wal_bench.RESULTS, wal_bench.RESULTS.with_name("wal-scale20.json")):
        if wal_results.exists():
            lines += ["", *wal_bench.report_lines(json.loads(wal_results.read_text()))]
    if basebackup.RESULTS.exists():
        lines += ["", *basebackup.report_lines(json.loads(basebackup.RESULTS.read_text()))]
    lines += [
        "",
        "## Restore",
        "",
        *table(restores, None),
        "",
        "pgvault's restore includes decoding, digest checks while streaming, and validation "
        "against the manifest (exact counts where recorded; small tables counted, large ones "
        "estimated from a sample of their pages).",
        "",
        f"## Compressors ({sample_mib} MiB sample of the uncompressed custom-format dump)",
        "",
        "| compressor | ratio | compress MB/s | decompress MB/s | offered |",
        "|---|---:|---:|---:|---|",
        *[
            f"| {c.name} | {c.ratio:.2f} | {c.compress_mb_s:.0f} | {c.decompress_mb_s:.0f} | "
            f"{'yes' if c.offered else 'no'} |"
            for c in comp
        ],
        "",
        "## Memory",
        "",
        "| dataset | on disk (GB) | pgvault peak RSS (MB) |",
        "|---|---:|---:|",
        *[f"| {label} | {size:.2f} | {rss:.0f} |" for label, size, rss in memory],
        "",
    ]
    out.write_text("\n".join(lines))
    log(f"wrote {out} and {svg}")


if __name__ == "__main__":
    sys.exit(main())
