"""Where a backup's CPU goes, stage by stage: each stage thread's own CPU, and its profile.

    python -m benchmarks.stages [--dataset entropy] [--size-gb 0.3] [--top 8] [--dsn DSN]

Runs ``pgvault.run`` in this process on a dataset of its own (or ``--dsn``), zstd-3 +
aes-256-gcm into a local vault, with every stage thread of :mod:`pgvault.engine.flow` wrapped: the
thread's CPU (``time.thread_time``) and a cProfile of it. Prints per stage the CPU seconds and
the functions that took most of it, then the process's CPU against its stages' (what is left is
the main thread and interpreter start), and pg_dump's. :func:`measure` returns the same figures
for :mod:`benchmarks.run`.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.pipelines import write_config
from benchmarks.run import make_key
from pgvault.engine import flow


@contextmanager
def profiled_stages(profile: bool = True) -> Iterator[dict[str, dict[str, Any]]]:
    """While active, every stage a :class:`pgvault.engine.flow.Flow` spawns records its CPU
    (and, with ``profile``, a cProfile) under its stage kind (``read``, ``zstd``, ``store`` …)."""
    stages: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    original = flow.Flow.spawn

    def spawn(self: flow.Flow, name: str, target: Callable[[], None]) -> None:
        kind = re.sub(r"-.*", "", name)

        def wrapped() -> None:
            prof = cProfile.Profile() if profile else None
            start = time.thread_time()
            try:
                if prof is not None:
                    prof.runcall(target)
                else:
                    target()
            finally:
                cpu = time.thread_time() - start
                with lock:
                    entry = stages.setdefault(kind, {"cpu": 0.0, "stats": None})
                    entry["cpu"] += cpu
                    if prof is not None:
                        if entry["stats"] is None:
                            entry["stats"] = pstats.Stats(prof)
                        else:
                            entry["stats"].add(prof)

        original(self, name, wrapped)

    flow.Flow.spawn = spawn  # type: ignore[method-assign]
    try:
        yield stages
    finally:
        flow.Flow.spawn = original  # type: ignore[method-assign]


def top_functions(stats: pstats.Stats | None, n: int) -> list[tuple[str, float, int]]:
    """The ``n`` functions with most own time: ``(name, seconds, calls)``."""
    if stats is None:
        return []
    rows = []
    for (file, line, func), (_cc, calls, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}" if line else "~"
        rows.append((f"{func} ({where})", tottime, calls))
    rows.sort(key=lambda r: -r[1])
    return rows[:n]


def measure(config_path: Path, *, profile: bool = True, top: int = 8) -> dict[str, Any]:
    """One in-process ``pgvault run`` of ``config_path``: per-stage CPU and top functions,
    the process's CPU and its children's (pg_dump, pg_dumpall)."""
    from pgvault.config import load_config
    from pgvault.engine.pipeline import run

    config = load_config(config_path)
    t0, r0 = time.perf_counter(), os.times()
    with profiled_stages(profile) as stages:
        manifest = run(config)
    wall, r1 = time.perf_counter() - t0, os.times()
    return {
        "wall": wall,
        "process_cpu": (r1.user - r0.user) + (r1.system - r0.system),
        "children_cpu": (r1.children_user - r0.children_user)
        + (r1.children_system - r0.children_system),
        "raw_bytes": manifest.raw_size,
        "stored_bytes": manifest.size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "stages": {
            kind: {"cpu": s["cpu"], "top": top_functions(s["stats"], top)}
            for kind, s in sorted(stages.items(), key=lambda kv: -kv[1]["cpu"])
        },
    }


def report(result: dict[str, Any]) -> str:
    """The figures of :func:`measure` as text."""
    out = io.StringIO()
    stage_cpu = sum(s["cpu"] for s in result["stages"].values())
    print(
        f"wall {result['wall']:.2f} s; raw {result['raw_bytes'] / 1e6:.0f} MB, stored "
        f"{result['stored_bytes'] / 1e6:.0f} MB; pgvault process CPU "
        f"{result['process_cpu']:.2f} s (stages {stage_cpu:.2f} s); pg_dump & co "
        f"{result['children_cpu']:.2f} s",
        file=out,
    )
    for kind, s in result["stages"].items():
        print(f"  {kind:12s} {s['cpu']:6.2f} s", file=out)
        for name, secs, calls in s["top"]:
            print(f"      {secs:6.2f} s {calls:>9} calls  {name}", file=out)
    return out.getvalue()


def main() -> int:
    """Build a dataset (or use ``--dsn``), back it up once with every stage profiled."""
    from benchmarks import dataset
    from pgvault.postgres.cluster import PostgresCluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="entropy", choices=dataset.DATASETS)
    parser.add_argument("--size-gb", type=float, default=0.3)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--dsn", help="back this database up instead of building one")
    parser.add_argument("--no-profile", action="store_true", help="stage CPU only, no cProfile")
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgvault-stages-"))
    cluster = None
    dsn = args.dsn
    if dsn is None:
        cluster = PostgresCluster(base_dir=None)
        cluster.start()
        size = dataset.build_named(cluster, args.dataset, "stages", args.size_gb)
        print(f"{args.dataset}: {size / 1e9:.2f} GB on disk", file=sys.stderr)
        dsn = cluster.dsn("stages")
    try:
        key = make_key(work)
        if key is None:
            raise SystemExit("benchmarks.stages needs the aes-256-gcm transform")
        cfg = write_config(
            work,
            "p",
            dsn,
            '[[transform]]\ntype = "zstd"\nlevel = 3\n'
            f'[[transform]]\ntype = "aes-256-gcm"\nkey_file = "{key}"\n',
        )
        for _ in range(args.reps):
            print(report(measure(cfg, profile=not args.no_profile, top=args.top)))
    finally:
        if cluster is not None:
            cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
