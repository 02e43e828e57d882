"""Backups on several datasets, as work grows, and of many databases in one run (issue 17).

    python -m benchmarks.scaling [--part datasets,scaling,many] [--size-gb 0.4] [--reps 3]
        [--sizes 0.25,1,4] [--tables 10,1000,10000] [--tables-gb 0.2]
        [--databases 100] [--database-mb 10] [--many-jobs 2,1] [--backups 100]

Three parts, each on a throwaway cluster of its own, each writing its results to
``benchmarks/results/<part>.json`` (``python -m benchmarks.run`` puts them in docs/benchmarks.md):

* ``datasets``: on each of :data:`benchmarks.dataset.DATASETS` (``--size-gb``), the limit
  ``pg_dump -Fc -Z0 > /dev/null``, the shell pipeline doing pgvault's work
  (``pg_dump -Fc -Z0 | zstd -3 | openssl enc -aes-256-ctr | tee >(sha256sum) > file``) and
  ``pgvault run`` zstd-3 + aes-256-gcm, alternating; then one in-process run with every stage's
  CPU (:mod:`benchmarks.stages`) for the profile summary.
* ``scaling``: the limit and pgvault against database size (the ``app`` dataset at ``--sizes``
  GB) and against table count (``--tables`` tables holding ``--tables-gb`` GB in all).
* ``many``: ``--databases`` databases of ``--database-mb`` MB each, backed up by pgvault's
  all-databases source (``databases = ["*"]``, ``jobs``) against a shell loop of
  ``pg_dump -Fc -Z0 | zstd -3`` over every database with the same parallelism (``xargs -P``;
  ``-Z0`` because compressing twice would make the loop slower than the script users write),
  at each parallelism of ``--many-jobs``, with the server's CPU beside each command's.
  When the installed pgvault has no all-databases source, the shell side is measured alone and the
  results say so.
* ``fixed``: what a command costs when there is no data: ``pgvault run`` of an empty database
  (plain, and zstd-3 + aes-256-gcm), ``pgvault list`` and ``pgvault show latest`` of a vault of
  ``--backups`` real backups, beside ``python3 -c pass`` and ``pg_dump -Fc`` of the same
  database.

Wall times on a shared machine are noise; CPU seconds (process tree) and peak RSS hold under
load, so every result carries the load average while it was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from benchmarks import dataset
from benchmarks.measure import Result, Sample, compile_bytecode, load_summary, run, summarize
from benchmarks.pipelines import write_config
from pgvault.postgres.cluster import PostgresCluster

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PARTS = ("datasets", "scaling", "many", "fixed")
LIMIT = "pg_dump -Fc -Z0 > /dev/null"
PIPELINE = "pg_dump -Fc -Z0 | zstd -3 | openssl aes-256-ctr | tee >(sha256sum) > file"
PGVAULT = "pgvault run (zstd-3 + aes-256-gcm)"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] scaling: {message}", file=sys.stderr, flush=True)


@contextmanager
def load_watch() -> Iterator[dict[str, Any]]:
    """The 1-minute load average sampled every 5 s while the block runs (filled in at exit)."""
    samples = [os.getloadavg()[0]]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(5):
            samples.append(os.getloadavg()[0])

    threading.Thread(target=watch, daemon=True).start()
    out: dict[str, Any] = {}
    try:
        yield out
    finally:
        stop.set()
        samples.append(os.getloadavg()[0])
        out.update(load_summary(samples))


@attrs.frozen
class Bench:
    """A cluster, a work folder and the key of the encrypted pipelines."""

    cluster: PostgresCluster
    work: Path
    key: Path

    def conn(self, db: str) -> str:
        return f"-h 127.0.0.1 -p {self.cluster.port} -U postgres -d {db}"

    @property
    def pg_dump(self) -> str:
        return shlex.quote(str(self.cluster.bindir / "pg_dump"))

    def pgvault_config(self, name: str, db: str, source: str = "", *, encrypt: bool = True) -> Path:
        aes = f'[[transform]]\ntype = "aes-256-gcm"\nkey_file = "{self.key}"\n' if encrypt else ""
        return write_config(
            self.work,
            name,
            self.cluster.dsn(db),
            '[[transform]]\ntype = "zstd"\nlevel = 3\n' + aes,
            source,
        )

    def commands(self, db: str) -> dict[str, str]:
        """The three backups of ``db`` compared everywhere: limit, shell pipeline, pgvault."""
        out = self.work / f"{db}.pgdump.zst.enc"
        py = shlex.quote(sys.executable)
        return {
            LIMIT: f"{self.pg_dump} -Fc -Z0 {self.conn(db)} > /dev/null",
            PIPELINE: f"{self.pg_dump} -Fc -Z0 {self.conn(db)} | zstd -3 -q -c | "
            "openssl enc -aes-256-ctr -pbkdf2 -pass pass:bench | "
            f"tee >(sha256sum > {out}.sha256) > {out}",
            PGVAULT: f"{py} -m pgvault run -q {self.pgvault_config(f'p_{db}', db)}",
        }


def compare(
    commands: dict[str, str], reps: int, label: str, server_pid: int | None = None
) -> list[Result]:
    """Every command ``reps`` times, alternating; medians in order. With ``server_pid`` (the
    cluster's postmaster) each sample also has the server's CPU."""
    samples: dict[str, list[Sample]] = {name: [] for name in commands}
    for rep in range(reps):
        for name, command in commands.items():
            s = run([command], shell=True, server_pid=server_pid)
            samples[name].append(s)
            server = f" server {s.server_cpu:.2f}s" if s.server_cpu is not None else ""
            log(f"{label} rep {rep + 1}/{reps} {name}: {s.wall:.2f}s cpu {s.cpu:.2f}s{server}")
    return [summarize(name, samples[name]) for name in commands]


def postmaster_pid(cluster: PostgresCluster) -> int:
    """The cluster's postmaster (first line of ``postmaster.pid``)."""
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


@contextmanager
def bench() -> Iterator[Bench]:
    from benchmarks.run import make_key

    work = Path(tempfile.mkdtemp(prefix="pgvault-scaling-"))
    # pg_dump locks every table it dumps in one transaction: 10,000 tables need more lock slots
    # than the default 64 per connection (times 50 connections) give.
    cluster = PostgresCluster(base_dir=None, settings={"max_locks_per_transaction": "512"})
    cluster.start()
    try:
        key = make_key(work)
        if key is None:
            raise SystemExit("benchmarks.scaling needs the aes-256-gcm transform")
        yield Bench(cluster, work, key)
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)


def datasets(args: argparse.Namespace) -> dict[str, Any]:
    """Per dataset: the three backups, then the stages' CPU of one profiled pgvault run."""
    from benchmarks import stages

    rows: list[dict[str, Any]] = []
    with bench() as b, load_watch() as load:
        for kind in args.datasets.split(","):
            db = f"ds_{kind}"
            size = dataset.build_named(b.cluster, kind, db, args.size_gb)
            log(f"{kind}: {size / 1e9:.2f} GB on disk")
            commands = b.commands(db)
            run([commands[LIMIT]], shell=True)  # warm the page cache
            results = compare(commands, args.reps, kind, server_pid=postmaster_pid(b.cluster))
            profile = stages.measure(b.pgvault_config(f"prof_{db}", db), top=10)
            rows.append(
                {
                    "dataset": kind,
                    "db_bytes": size,
                    "results": [attrs.asdict(r) for r in results],
                    "profile": profile,
                }
            )
            b.cluster.drop_database(db)
    return {"size_gb": args.size_gb, "reps": args.reps, "rows": rows, "load_average": load}


def scaling(args: argparse.Namespace) -> dict[str, Any]:
    """The limit and pgvault against size, then against table count."""
    points: list[dict[str, Any]] = []
    with bench() as b, load_watch() as load:

        def measure(axis: str, x: float, db: str, size: int) -> None:
            commands = b.commands(db)
            del commands[PIPELINE]
            run([commands[LIMIT]], shell=True)
            for r in compare(commands, args.reps, f"{axis}={x:g}"):
                points.append({"axis": axis, "x": x, "db_bytes": size, **attrs.asdict(r)})
            b.cluster.drop_database(db)

        for gb in (float(v) for v in args.sizes.split(",")):
            db = f"size_{str(gb).replace('.', '_')}"
            measure("size_gb", gb, db, dataset.build(b.cluster, db, gb))
        for n in (int(v) for v in args.tables.split(",")):
            db = f"tables_{n}"
            started = time.perf_counter()
            size = dataset.build_tables(b.cluster, db, n, args.tables_gb)
            log(f"{n} tables built in {time.perf_counter() - started:.0f}s")
            measure("tables", n, db, size)
    return {
        "reps": args.reps,
        "tables_gb": args.tables_gb,
        "points": points,
        "load_average": load,
    }


def all_databases_supported(b: Bench) -> str | None:
    """None when this pgvault loads an all-databases config; else why not (its error)."""
    import pgvault

    config = b.pgvault_config("probe", "postgres", 'databases = ["*"]\njobs = 2\n')
    try:
        pgvault.load_config(config)
    except Exception as exc:  # the config's own error says what is missing
        return f"{type(exc).__name__}: {exc}"
    return None


def many(args: argparse.Namespace) -> dict[str, Any]:
    """``--databases`` small databases: pgvault's all-databases run against an xargs loop, at
    each parallelism of ``--many-jobs`` (the first is the one the target names)."""
    jobs_list = [int(j) for j in str(args.many_jobs).split(",") if j.strip()]
    with bench() as b, load_watch() as load:
        rows = max(1, round(args.database_mb * 1e6 / 110))
        for i in range(args.databases):
            db = f"db{i:03d}"
            b.cluster.create_database(db)
            with b.cluster.connect(db) as conn:
                conn.execute(dataset.TABLE_DDL.format(name="t", rows=rows))
                conn.execute("VACUUM ANALYZE")
        log(f"{args.databases} databases of about {args.database_mb} MB")
        out = b.work / "loop"
        out.mkdir()
        # One shell per database, as a cron script would run; the same parallelism as pgvault.
        list_dbs = (
            f"psql -h 127.0.0.1 -p {b.cluster.port} -U postgres -Atc "
            '"SELECT datname FROM pg_database WHERE NOT datistemplate"'
        )
        one = (
            f'{b.pg_dump} -Fc -Z0 -h 127.0.0.1 -p {b.cluster.port} -U postgres -d "$0" | '
            f'zstd -3 -q -c > {out}/"$0".pgdump.zst'
        )
        psql = shutil.which("psql") or str(b.cluster.bindir / "psql")
        list_dbs = list_dbs.replace("psql", shlex.quote(psql), 1)
        missing = all_databases_supported(b)
        commands: dict[str, str] = {}
        for jobs in jobs_list:
            commands[f"pg_dump -Fc -Z0 | zstd -3 loop, xargs -P {jobs}"] = (
                f"{list_dbs} | xargs -P {jobs} -n 1 bash -o pipefail -c {shlex.quote(one)}"
            )
            if missing is None:
                # zstd-3 alone: the loop's work (pgvault adds its digests, globals, metadata).
                cfg = b.pgvault_config(
                    f"many{jobs}", "postgres", f'databases = ["*"]\njobs = {jobs}\n', encrypt=False
                )
                commands[f"pgvault run (all databases, jobs = {jobs}, zstd-3)"] = (
                    f"{shlex.quote(sys.executable)} -m pgvault run -q {cfg}"
                )
        if missing is not None:
            log(f"pgvault has no all-databases source here: {missing}")
        results = compare(commands, args.reps, "many", server_pid=postmaster_pid(b.cluster))
    return {
        "databases": args.databases,
        "database_mb": args.database_mb,
        "jobs": jobs_list[0],
        "jobs_list": jobs_list,
        "reps": args.reps,
        "results": [attrs.asdict(r) for r in results],
        "pgvault_missing": missing,
        "load_average": load,
    }


def fixed(args: argparse.Namespace) -> dict[str, Any]:
    """Fixed costs: commands that move no data, ``--backups`` backups in the vault listed."""
    with bench() as b, load_watch() as load:
        b.cluster.create_database("empty")
        py = shlex.quote(sys.executable)
        plain = b.pgvault_config("fixed_plain", "empty", encrypt=False)
        sealed = b.pgvault_config("fixed_sealed", "empty")
        for _ in range(args.backups):  # real backups: list reads each one's manifest
            run([f"{py} -m pgvault run -q {plain} > /dev/null"], shell=True)
        log(f"{args.backups} backups in the vault")
        commands = {
            "python3 -c pass (interpreter start)": f"{py} -c pass",
            "pg_dump -Fc (empty database) > /dev/null": f"{b.pg_dump} -Fc {b.conn('empty')}"
            " > /dev/null",
            "pgvault run (empty database, no transforms)": f"{py} -m pgvault run -q {plain}"
            " > /dev/null",
            "pgvault run (empty database, zstd-3 + aes-256-gcm)": f"{py} -m pgvault run -q "
            f"{sealed} > /dev/null",
            f"pgvault list ({args.backups}+ backups)": f"{py} -m pgvault list {plain} > /dev/null",
            "pgvault show latest": f"{py} -m pgvault show {plain} latest > /dev/null",
        }
        results = compare(commands, args.reps_fixed, "fixed")
    return {
        "backups": args.backups,
        "reps": args.reps_fixed,
        "results": [attrs.asdict(r) for r in results],
        "load_average": load,
    }


def fixed_lines(data: dict[str, Any]) -> list[str]:
    """The fixed-costs table."""
    return [
        "## Fixed costs (no data to move)",
        "",
        "Measured by `python -m benchmarks.scaling --part fixed` "
        f"({data['reps']} alternating repetitions, medians; {_load_text(data['load_average'])}"
        f"; local sink; the vault holds {data['backups']} backups of an empty database, and "
        "every `run` adds one). Target: well under 0.5 s of wall time for an empty backup and "
        "for `list`.",
        "",
        *_cost_table("command", data["results"]),
    ]


def _cost_table(first: str, results: list[dict[str, Any]]) -> list[str]:
    """A table of what each command cost: wall, CPU of the process tree, peak RSS, and the
    server's CPU where it was measured."""
    server = any(r.get("server_cpu") is not None for r in results)
    head = f"| {first} | wall (s) | CPU (s) | peak RSS (MB) |"
    rule = "|---|---:|---:|---:|"
    if server:
        head, rule = head + " server CPU (s) |", rule + "---:|"
    lines = [head, rule]
    for r in results:
        line = f"| {_esc(r['name'])} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['max_rss_mb']:.0f} |"
        if server:
            value = r.get("server_cpu")
            line += f" {value:.2f} |" if value is not None else " |"
        lines.append(line)
    return lines


def _load_text(load: dict[str, Any]) -> str:
    return (
        f"load average {load['min']}–{load['max']} (median {load['median']}) on "
        f"{load['cores']} cores"
    )


def _esc(text: str) -> str:
    return text.replace("|", "\\|")


def dataset_lines(data: dict[str, Any]) -> list[str]:
    """Per-dataset ratio tables and the profile summary."""
    lines = [
        "## Backup on every dataset",
        "",
        "Measured by `python -m benchmarks.scaling --part datasets` (datasets of about "
        f"{data['size_gb']:g} GB; {data['reps']} alternating repetitions, medians; "
        f"{_load_text(data['load_average'])}). *× limit* is wall time against "
        f"`{LIMIT}`, *× pipeline* against the shell pipeline doing the same work, *CPU × "
        "pipeline* the process tree's CPU against the pipeline's; *server CPU* what the "
        "PostgreSQL server spent meanwhile. Targets: pgvault within 1.10× the limit, CPU within "
        "1.3× the pipeline's. The *2-core floor* is (CPU + server CPU) / 2: no schedule on two "
        "cores finishes sooner, so where it is above 1.10× the limit, the target cannot be met "
        "on this machine by any client doing that work.",
    ]
    for row in data["rows"]:
        by = {r["name"]: r for r in row["results"]}
        limit, pipe = by[LIMIT], by[PIPELINE]
        lines += [
            "",
            f"### {row['dataset']} ({row['db_bytes'] / 1e9:.2f} GB on disk)",
            "",
            "| method | wall (s) | × limit | × pipeline | CPU (s) | CPU × pipeline | "
            "peak RSS (MB) | server CPU (s) | 2-core floor (s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in row["results"]:
            server = r.get("server_cpu")
            extra = (
                f" {server:.2f} | {(r['cpu'] + server) / 2:.2f} |" if server is not None else " | |"
            )
            lines.append(
                f"| {_esc(r['name'])} | {r['wall']:.2f} | {r['wall'] / limit['wall']:.2f}× | "
                f"{r['wall'] / pipe['wall']:.2f}× | {r['cpu']:.2f} | "
                f"{r['cpu'] / pipe['cpu']:.2f}× | {r['max_rss_mb']:.0f} |{extra}"
            )
        ours = by[PGVAULT]
        verdict = (
            f"pgvault: {ours['wall'] / limit['wall']:.2f}× the limit "
            f"({'met' if ours['wall'] <= 1.10 * limit['wall'] else 'missed'}), CPU "
            f"{ours['cpu'] / pipe['cpu']:.2f}× the pipeline's "
            f"({'met' if ours['cpu'] <= 1.3 * pipe['cpu'] else 'missed'})"
        )
        if ours.get("server_cpu") is not None:
            floor = (ours["cpu"] + ours["server_cpu"]) / 2
            verdict += f"; its 2-core floor is {floor / limit['wall']:.2f}× the limit"
        lines += ["", verdict + "."]
    lines += [
        "",
        "### Profile summary (where pgvault's CPU goes)",
        "",
        "One in-process `pgvault run` per dataset with every stage thread's CPU "
        "(`time.thread_time`) and cProfile (`benchmarks/stages.py`; profiling slows the "
        "stages a little). *Rest* is the process's CPU outside the stages: the main thread, "
        "imports, the manifest; *children* pg_dump and pg_dumpall.",
        "",
        "| dataset | raw → stored (MB) | process CPU (s) | stages | rest (s) | children (s) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for row in data["rows"]:
        p = row["profile"]
        stage_cpu = sum(s["cpu"] for s in p["stages"].values())
        per_stage = ", ".join(f"{k} {s['cpu']:.2f}" for k, s in p["stages"].items())
        lines.append(
            f"| {row['dataset']} | {p['raw_bytes'] / 1e6:,.0f} → {p['stored_bytes'] / 1e6:,.0f} | "
            f"{p['process_cpu']:.2f} | {per_stage} | {p['process_cpu'] - stage_cpu:.2f} | "
            f"{p['children_cpu']:.2f} |"
        )
    lines += [
        "",
        "Top functions by own time in the largest stage of each dataset (cProfile's clock is "
        "the wall clock, so a call that waits for a core counts its wait too; the stage's CPU "
        "is in brackets):",
        "",
    ]
    for row in data["rows"]:
        stages_ = row["profile"]["stages"]
        if not stages_:
            continue
        kind, s = next(iter(stages_.items()))
        # Waiting on a queue's lock is time, not CPU: leave it out of "where the CPU goes".
        busy = [t for t in s["top"] if "_thread.lock" not in t[0] and "queue.py" not in t[0]]
        top = "; ".join(f"`{name}` {secs:.2f} s" for name, secs, _calls in busy[:3])
        lines.append(f"- {row['dataset']}, {kind} ({s['cpu']:.2f} s): {top}")
    return lines


def _fit(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least-squares line (intercept, slope) and the largest relative miss of a point."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points) or 1.0
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    a = my - slope * mx
    miss = max(abs(y - (a + slope * x)) / max(y, 1e-9) for x, y in points)
    return a, slope, miss


def scaling_lines(data: dict[str, Any], svg_name: str) -> list[str]:
    """The scaling tables (the chart is written by :func:`scaling_svg`)."""
    lines = [
        "## Cost as work grows",
        "",
        f"![wall time and CPU against size and table count]({svg_name})",
        "",
        "Measured by `python -m benchmarks.scaling --part scaling` "
        f"({data['reps']} alternating repetitions, medians; {_load_text(data['load_average'])}). "
        f"Table counts hold {data['tables_gb']:g} GB in all. Under each table, a least-squares "
        "line through the CPU figures (fixed cost + cost per unit) and how far the worst "
        "point lies from it: a small miss means linear, no step that grows worse.",
    ]
    for axis, unit, scale in (("size_gb", "GB", 1.0), ("tables", "tables", 1000.0)):
        pts = [p for p in data["points"] if p["axis"] == axis]
        if not pts:
            continue
        lines += [
            "",
            f"| {unit} | on disk (GB) | method | wall (s) | CPU (s) | peak RSS (MB) |",
            "|---:|---:|---|---:|---:|---:|",
        ]
        for p in pts:
            lines.append(
                f"| {p['x']:g} | {p['db_bytes'] / 1e9:.2f} | {_esc(p['name'])} | "
                f"{p['wall']:.2f} | {p['cpu']:.2f} | {p['max_rss_mb']:.0f} |"
            )
        for name in (LIMIT, PGVAULT):
            series = [(p["x"], p["cpu"]) for p in pts if p["name"] == name]
            if len(series) >= 3:
                a, slope, miss = _fit(series)
                per = "GB of the ladder" if axis == "size_gb" else "1,000 tables"
                lines.append(
                    f"\n{_esc(name)}: CPU ≈ {a:.2f} s + {slope * scale:.3f} s per {per}; "
                    f"the worst point is {miss * 100:.0f}% off that line."
                )
    return lines


def scaling_svg(data: dict[str, Any]) -> str:
    """The scaling curves: wall and CPU against size and against table count."""
    from pgvault.operations.report.chart import LinePanel, line_chart

    panels = []
    for axis, unit in (("size_gb", "GB"), ("tables", "tables")):
        pts = [p for p in data["points"] if p["axis"] == axis]
        if not pts:
            continue
        xs = sorted({p["x"] for p in pts})
        ticks = [(x, f"{x:g} {unit}") for x in xs]
        for what in ("wall", "cpu"):
            series = [
                (name, [(p["x"], p[what]) for p in pts if p["name"] == name])
                for name in (LIMIT, PGVAULT)
            ]
            title = f"{'wall time' if what == 'wall' else 'CPU (process tree)'} against {unit}"
            panels.append(LinePanel(title, series, lambda v: f"{v:.1f}s", ticks))
    return line_chart("pgvault run (zstd-3 + aes-256-gcm) against pg_dump as work grows", panels)


def many_lines(data: dict[str, Any]) -> list[str]:
    """The many-databases table."""
    jobs_list = data.get("jobs_list") or [data["jobs"]]
    at_a_time = " or ".join(str(j) for j in jobs_list)
    lines = [
        f"## Many databases ({data['databases']} × {data['database_mb']} MB, "
        f"{at_a_time} at a time)",
        "",
        "Measured by `python -m benchmarks.scaling --part many` "
        f"({data['reps']} alternating repetitions, medians; {_load_text(data['load_average'])}). "
        "CPU is the command's process tree; server CPU is what the PostgreSQL server spent "
        "meanwhile (its backends, reaped).",
        "",
        *_cost_table("method", data["results"]),
    ]
    by_name = {r["name"]: r for r in data["results"]}
    ratios = []
    for jobs in jobs_list:
        loop = by_name.get(f"pg_dump -Fc -Z0 | zstd -3 loop, xargs -P {jobs}")
        mine = by_name.get(f"pgvault run (all databases, jobs = {jobs}, zstd-3)")
        if loop and mine:
            ratios.append(f"{mine['wall'] / loop['wall']:.2f}× the loop's wall at {jobs} at a time")
    if ratios:
        lines += ["", "pgvault: " + "; ".join(ratios) + " (target: ≤ 1.00×)."]
    if data.get("note"):  # added by hand to saved results, e.g. which pgvault was measured
        lines += ["", str(data["note"])]
    if data.get("pgvault_missing"):
        lines += [
            "",
            "**pgvault's side is not measured**: the all-databases source "
            '(`databases = ["*"]`, issue 15) was not in the pgvault this ran '
            f"({data['pgvault_missing']}). The shell loop above is the figure to beat.",
        ]
    return lines


def report_lines(svg_path: Path) -> list[str]:
    """Sections for every saved part's results; writes the scaling chart beside the report."""
    lines: list[str] = []
    renders = (
        ("datasets", dataset_lines),
        ("scaling", None),
        ("many", many_lines),
        ("fixed", fixed_lines),
    )
    for part, render in renders:
        path = RESULTS / f"{part}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        if render is None:
            svg_path.write_text(scaling_svg(data))
            lines += ["", *scaling_lines(data, svg_path.name)]
        else:
            lines += ["", *render(data)]
    return lines


PART_RUNNERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "datasets": datasets,
    "scaling": scaling,
    "many": many,
    "fixed": fixed,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every part (``benchmarks.run`` passes them on)."""
    parser.add_argument("--datasets", default=",".join(dataset.DATASETS))
    parser.add_argument("--sizes", default="0.25,1,4", help="GB ladder of the size curve")
    parser.add_argument("--tables", default="10,1000,10000", help="table counts of the curve")
    parser.add_argument("--tables-gb", type=float, default=0.2, help="GB the table counts hold")
    parser.add_argument("--databases", type=int, default=100)
    parser.add_argument("--database-mb", type=float, default=10)
    parser.add_argument(
        "--many-jobs",
        default="2,1",
        help="databases at a time in `many`, the target's first (the others show the headroom)",
    )
    parser.add_argument("--backups", type=int, default=100, help="backups listed by `fixed`")
    parser.add_argument("--reps-fixed", type=int, default=10, help="repetitions of `fixed`")


def measure_parts(parts: list[str], args: argparse.Namespace) -> None:
    """Run ``parts`` and save each one's results."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    compile_bytecode()
    for part in parts:
        log(f"part {part}")
        data = PART_RUNNERS[part](args)
        (RESULTS / f"{part}.json").write_text(json.dumps(data, indent=2) + "\n")
        log(f"results in {RESULTS / f'{part}.json'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default=",".join(PARTS))
    parser.add_argument("--size-gb", type=float, default=1.0, help="size of each dataset")
    parser.add_argument("--reps", type=int, default=3)
    add_arguments(parser)
    args = parser.parse_args()
    parts = [p for p in args.part.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    measure_parts(parts, args)
    print("\n".join(report_lines(Path(tempfile.gettempdir()) / "pgvault-scaling.svg")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
