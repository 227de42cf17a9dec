"""``python -m benchmarks``: run bulkfetch's benchmark cases and write ``RESULTS.md``.

Usage (from the repository root, in the project's virtualenv)::

    python -m benchmarks                 # the full run (~25 min on 2 cores)
    python -m benchmarks --quick         # smaller N and a few cells, a smoke run (~4 min)
    python -m benchmarks --case matrix --cells spacing   # the matrix's spacing cells
    python -m benchmarks --case heavy-tail --case streaming

A full run writes ``benchmarks/RESULTS.md`` (and ``RESULTS.json`` beside it); a ``--quick``
or ``--case`` run writes only what ``--output`` names, so a smoke run never overwrites the
full results. Benchmarks are not tests: nothing here fails on a timing; a missed target is
reported, with the figures that explain it.

Cases: matrix (every limiter kind x Retry-After form x configured rate, bulkfetch beside the
fixed-delay and sequential scripts), nginx (behind nginx's own limit_req), heavy-tail,
streaming, object-store (moto's S3 server), scale, shared (2 and 4 processes on one key,
through the file store and Redis); and, not in the full run, the older single-server cases
known-rates, rates-too-high and rates-too-low (in-process, on the simulator's sliding log).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from benchmarks.common import CaseResult, RunFigures
from benchmarks.matrix import CELLS, KINDS, NGINX, Cell, run_matrix
from benchmarks.object_store import run_object_store_case
from benchmarks.report import render
from benchmarks.scale import run_scale_case
from benchmarks.scheduling import CASES, run_scheduling_case, start_sequential
from benchmarks.shared import run_shared_case
from benchmarks.streaming import MB, run_streaming_case

ALL = ["matrix", "nginx", *CASES, "streaming", "object-store", "scale", "shared"]
#: What a full run (no --case) runs.
FULL = ["matrix", "nginx", "heavy-tail", "streaming", "object-store", "scale", "shared"]
HERE = Path(__file__).resolve().parent


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller N: a smoke run")
    parser.add_argument(
        "--case", action="append", choices=ALL, help="run only this case (repeatable)"
    )
    parser.add_argument(
        "--cells",
        action="append",
        metavar="TEXT",
        help="matrix: only the cells whose name holds TEXT (repeatable; e.g. spacing, "
        "'too high', 'whole window')",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help=f"matrix and nginx: jobs per run [default: {MATRIX_N}; issue 11 measured 300]",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the Markdown results "
        "[default: benchmarks/RESULTS.md for a full run, none otherwise]",
    )
    parser.add_argument(
        "--serial",
        action="store_true",
        help="run the sequential scripts one at a time after each case's other clients "
        "(slower); by default they run in the background, beside the other clients",
    )
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        help="also run the diagnostic variants of bulkfetch in cases 1 and 2 (slow)",
    )
    return parser.parse_args(argv)


async def _scheduling(
    names: list[str], *, n: int, n_seq: int, serial: bool, diagnose: bool, quick: bool, tmp: Path
) -> list[CaseResult]:
    cases = {
        name: dataclasses.replace(case, seed=case.quick_seed)
        if quick and case.quick_seed is not None
        else case
        for name, case in CASES.items()
    }
    # The sequential scripts are slow and idle (one request every few slots): they run
    # beside the other clients, each against a simulator of its own, unless --serial.
    background: dict[str, asyncio.Task[RunFigures]] = {}
    if not serial:
        for name in names:
            background[name] = start_sequential(cases[name], n_seq, tmp / name)
    results = []
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        result = await run_scheduling_case(
            cases[name], n=n, n_seq=n_seq, sequential=background.get(name), diagnose=diagnose
        )
        for run in result.runs:
            print(
                f"[bench]   {run.client:<20} makespan/bound {run.ratio:.3f}  "
                f"status/job {run.status_per_job:.3f}  429s {run.pct_429:.2f}%  "
                f"({run.jobs} jobs, {run.wall:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
        results.append(result)
    return results


#: Jobs per matrix run: enough for the lanes to settle, few enough for ~74 runs in ~15 min.
MATRIX_N = 150
MATRIX_SEED = 11


def _cells(name: str, *, quick: bool, only: list[str] | None) -> list[Cell]:
    if name == "nginx":
        chosen = [Cell(NGINX, "off"), Cell(NGINX, "off", 2.0)]
    elif quick:
        chosen = [Cell(k, "float") for k in KINDS]
        chosen += [Cell("sliding", "window", 2.0), Cell("bucket", "off", 2.0)]
        chosen += [Cell("spacing", "float", 0.5, True)]
    else:
        chosen = list(CELLS)
    if only:
        chosen = [c for c in chosen if any(text in c.name for text in only)]
    return chosen


def _code_state() -> str:
    """The bulkfetch code measured: HEAD and the files changed in the working tree."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "bulkfetch"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{head}" + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    names = args.case or FULL
    full = not args.quick and args.case is None and args.cells is None
    output: Path | None = args.output or (HERE / "RESULTS.md" if full else None)
    n, n_seq = (100, 10) if args.quick else (300, 60)
    command = "python -m benchmarks" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    started = time.monotonic()
    when = datetime.now(UTC)
    code_before = _code_state()
    results: list[CaseResult] = []
    for name in ("matrix", "nginx"):
        if name in names:
            chosen = _cells(name, quick=args.quick, only=args.cells)
            with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
                results.append(
                    asyncio.run(
                        run_matrix(
                            chosen,
                            n=args.jobs or (80 if args.quick else MATRIX_N),
                            n_seq=10 if args.quick else 30,
                            seed=MATRIX_SEED,
                            tmp=Path(tmp),
                        )
                    )
                )
    sched = [name for name in names if name in CASES]
    if sched:
        with tempfile.TemporaryDirectory(prefix="bench-seq-") as tmp:
            results += asyncio.run(
                _scheduling(
                    sched,
                    n=n,
                    n_seq=n_seq,
                    serial=args.serial,
                    diagnose=args.diagnostics and not args.quick,
                    quick=args.quick,
                    tmp=Path(tmp),
                )
            )
    if "streaming" in names:
        print("[bench] streaming ...", file=sys.stderr, flush=True)
        sizes = [20 * MB, 100 * MB] if args.quick else [100 * MB, 500 * MB]
        results.append(run_streaming_case(sizes=sizes, repeats=1 if args.quick else 5))
    if "object-store" in names:
        print("[bench] object-store ...", file=sys.stderr, flush=True)
        sizes = [20 * MB, 100 * MB] if args.quick else [100 * MB, 500 * MB]
        results.append(run_object_store_case(sizes=sizes, repeats=1 if args.quick else 3))
    if "scale" in names:
        print("[bench] scale ...", file=sys.stderr, flush=True)
        sizes_scale = (10_000, 2_000) if args.quick else (100_000, 20_000)
        results.append(run_scale_case(n_manifest=sizes_scale[0], n_full=sizes_scale[1]))
    if "shared" in names:
        print("[bench] shared ...", file=sys.stderr, flush=True)
        results.append(run_shared_case(n=120 if args.quick else 400, with_none=not args.quick))
    for result in results:
        for what, target, measured, ok in result.targets:
            mark = "met" if ok else "MISSED"
            print(f"[bench] {result.name}: {what}: {measured} (target {target}) {mark}")
    machine = {
        "uname": " ".join(platform.uname()),
        "cores": os.cpu_count() or 0,
        "python": sys.version.split()[0],
        "date": when.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "seconds": time.monotonic() - started,
        "code": code_before,
        "code_after": _code_state(),
    }
    text = render(results, machine)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        data = {"machine": machine, "cases": [_case_json(r) for r in results]}
        output.with_suffix(".json").write_bytes(
            orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"
        )
        print(f"[bench] wrote {output}", file=sys.stderr)
    else:
        print(text)
    return 0


def _case_json(result: CaseResult) -> dict[str, object]:
    return {
        "name": result.name,
        "setup": result.setup,
        "seconds": result.seconds,
        "runs": [run.to_json() for run in [*result.runs, *result.runs_json]],
        "targets": [
            {"what": w, "target": t, "measured": m, "met": ok} for w, t, m, ok in result.targets
        ],
        "tables": [{"caption": c, "header": h, "rows": r} for c, h, r in result.tables],
    }


if __name__ == "__main__":
    sys.exit(main())
