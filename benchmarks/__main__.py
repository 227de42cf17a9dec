"""``python -m benchmarks``: run bulkfetch's benchmark cases and write ``RESULTS.md``.

Usage (from the repository root, in the project's virtualenv)::

    python -m benchmarks                 # every case, full size (~15 min on 2 cores)
    python -m benchmarks --quick         # smaller N, a smoke run (~2 min)
    python -m benchmarks --case heavy-tail --case streaming

A full run writes ``benchmarks/RESULTS.md`` (and ``RESULTS.json`` beside it); a ``--quick``
or ``--case`` run writes only what ``--output`` names, so a smoke run never overwrites the
full results. Benchmarks are not tests: nothing here fails on a timing; a missed target is
reported, with the figures that explain it.

Cases: known-rates, heavy-tail, rates-too-high, rates-too-low (each with the fixed-delay and
sequential scripts beside bulkfetch), streaming, object-store (moto's S3 server), scale.
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
from benchmarks.object_store import run_object_store_case
from benchmarks.report import render
from benchmarks.scale import run_scale_case
from benchmarks.scheduling import CASES, run_scheduling_case, start_sequential
from benchmarks.streaming import MB, run_streaming_case

ALL = [*CASES, "streaming", "object-store", "scale"]
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
        "--no-diagnostics",
        action="store_true",
        help="skip the diagnostic variants of bulkfetch in cases 1 and 2 (not in --quick)",
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
    names = args.case or ALL
    full = not args.quick and args.case is None
    output: Path | None = args.output or (HERE / "RESULTS.md" if full else None)
    n, n_seq = (100, 10) if args.quick else (300, 60)
    command = "python -m benchmarks" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    started = time.monotonic()
    when = datetime.now(UTC)
    code_before = _code_state()
    results: list[CaseResult] = []
    sched = [name for name in names if name in CASES]
    if sched:
        with tempfile.TemporaryDirectory(prefix="bench-seq-") as tmp:
            results += asyncio.run(
                _scheduling(
                    sched,
                    n=n,
                    n_seq=n_seq,
                    serial=args.serial,
                    diagnose=not args.quick and not args.no_diagnostics,
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
        "runs": [run.to_json() for run in result.runs],
        "targets": [
            {"what": w, "target": t, "measured": m, "met": ok} for w, t, m, ok in result.targets
        ],
        "tables": [{"caption": c, "header": h, "rows": r} for c, h, r in result.tables],
    }


if __name__ == "__main__":
    sys.exit(main())
