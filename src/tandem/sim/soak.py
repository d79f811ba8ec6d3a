"""Many DST seeds (``make soak``): every core, progress, resumable, a summary file.

    python -m tandem.sim.soak --from 0 --to 100000 --out build/soak

runs seeds ``[from, to)`` of :mod:`tandem.sim.faults` over ``--workers`` processes (0:
every core). Each finished seed is appended as one JSON line to ``OUT/seeds-FROM-TO.jsonl``
(seed, outcome, steps, ACKs checked, faults injected, CPU seconds; for a failure its kind,
the first violated invariant and the message with the trace tail). Run the same command
again after an interruption (Ctrl-C, ``--time-limit``, a crash of the machine) and only the
seeds not in that file run. A range can be split between machines or sessions
(``--from``/``--to``): each range has its own file.

At the end (and on an interruption) ``OUT/summary-FROM-TO.txt`` and ``.json`` hold the seeds
run, steps, ACKs checked, faults injected by kind, CPU time, and every failure with its seed
and first violated invariant. Exit status: 0 when every seed of the range ran and none
failed except the known-bug seeds (:data:`tandem.sim.faults.KNOWN_BUGS`, failing with their
known signature), 1 when another seed failed, 2 when seeds are left to run (resume).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.sim.faults import KNOWN_BUGS, run_seed

__all__ = ["SoakSummary", "main", "run_one", "summarize"]

MESSAGE_LIMIT = 20_000  # characters of a failure's message kept in the seeds file


def run_one(seed: int) -> dict[str, Any]:
    """Run one seed; the JSON-able record of its outcome."""
    t0 = time.process_time()
    res = run_seed(seed)  # without the trace; a failure is run again with it
    rec: dict[str, Any] = {
        "seed": seed,
        "ok": res.ok,
        "steps": res.steps,
        "acks": res.acks,
        "injected": dict(sorted(res.injected.items())),
        "cpu_s": round(time.process_time() - t0, 4),
    }
    if not res.ok:
        rec["failure"] = res.failure
        rec["first"] = res.first_line()
        rec["message"] = res.message[:MESSAGE_LIMIT]
    return rec


@dataclass(slots=True)
class SoakSummary:
    """What a range of seeds did (from the seeds file, across sessions)."""

    first: int
    end: int
    seeds: int = 0
    steps: int = 0
    acks: int = 0
    cpu_s: float = 0.0
    injected: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)  # unexpected
    known: list[dict[str, Any]] = field(default_factory=list)  # known-bug seeds, as known

    @property
    def missing(self) -> int:
        return (self.end - self.first) - self.seeds

    def add(self, rec: dict[str, Any], known_bugs: dict[int, tuple[str, str]]) -> None:
        self.seeds += 1
        self.steps += int(rec["steps"])
        self.acks += int(rec["acks"])
        self.cpu_s += float(rec.get("cpu_s", 0.0))
        self.injected.update(rec.get("injected", {}))
        if rec["ok"]:
            return
        known = known_bugs.get(int(rec["seed"]))
        if known is not None and known[0] in rec.get("first", ""):
            self.known.append(rec)
        else:
            self.failures.append(rec)

    def exit_status(self) -> int:
        if self.failures:
            return 1
        return 2 if self.missing > 0 else 0

    def text(self) -> str:
        n = self.end - self.first
        per_core = self.seeds / self.cpu_s if self.cpu_s else 0.0
        lines = [
            f"DST soak, seeds {self.first}..{self.end - 1} ({n}): {self.seeds} run"
            + (f", {self.missing} NOT RUN (resume with the same command)" if self.missing else ""),
            f"steps {self.steps}, ACKs checked {self.acks} (MCLT bound; every invariant after "
            f"every step), CPU {self.cpu_s:.0f} s ({per_core:.1f} seeds/s per core)",
            "faults injected by kind:",
        ]
        lines.extend(f"  {k:<26} {v}" for k, v in sorted(self.injected.items()))
        by_kind = Counter(str(r.get("failure")) for r in self.failures)
        lines.append(
            f"failures: {len(self.failures)}"
            + (f" ({', '.join(f'{k} {v}' for k, v in sorted(by_kind.items()))})" if by_kind else "")
        )
        for r in sorted(self.failures, key=lambda r: int(r["seed"])):
            lines.append(f"  seed {r['seed']} [{r.get('failure')}]: {str(r.get('first'))[:300]}")
        lines.append(f"known-bug seeds failing as known: {len(self.known)}")
        for r in sorted(self.known, key=lambda r: int(r["seed"])):
            lines.append(f"  seed {r['seed']}: {str(r.get('first'))[:300]}")
        status = self.exit_status()
        lines.append(
            "result: "
            + {0: "PASS", 1: "FAIL (unexpected failures above)", 2: "INCOMPLETE"}[status]
            + (
                "; replay a seed: python -m tandem.sim.faults --seed N"
                if self.failures or self.known
                else ""
            )
        )
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "end": self.end,
            "seeds_run": self.seeds,
            "seeds_missing": self.missing,
            "steps": self.steps,
            "acks_checked": self.acks,
            "cpu_s": round(self.cpu_s, 1),
            "injected": dict(sorted(self.injected.items())),
            "failures": [
                {k: r.get(k) for k in ("seed", "failure", "first")}
                for r in sorted(self.failures, key=lambda r: int(r["seed"]))
            ],
            "known_bug_seeds": [
                {k: r.get(k) for k in ("seed", "first")}
                for r in sorted(self.known, key=lambda r: int(r["seed"]))
            ],
            "exit_status": self.exit_status(),
        }


def read_records(path: Path, first: int, end: int) -> Iterator[dict[str, Any]]:
    """The records of seeds in ``[first, end)`` in a seeds file (the last one per seed; a
    torn last line from an interruption is skipped)."""
    if not path.exists():
        return
    latest: dict[int, dict[str, Any]] = {}
    with path.open() as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            s = rec.get("seed")
            if isinstance(s, int) and first <= s < end:
                latest[s] = rec
    yield from latest.values()


def summarize(
    records: Iterable[dict[str, Any]],
    first: int,
    end: int,
    known_bugs: dict[int, tuple[str, str]] | None = None,
) -> SoakSummary:
    bugs = KNOWN_BUGS if known_bugs is None else known_bugs
    summary = SoakSummary(first, end)
    for rec in records:
        summary.add(rec, bugs)
    return summary


def _fmt_s(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_range(
    first: int,
    end: int,
    out: Path,
    *,
    workers: int = 0,
    time_limit_s: float | None = None,
    progress_s: float = 30.0,
    log: Any = sys.stderr,
) -> SoakSummary:
    """Run the seeds of ``[first, end)`` not yet in the seeds file; summarize the range."""
    out.mkdir(parents=True, exist_ok=True)
    seeds_path = out / f"seeds-{first}-{end}.jsonl"
    done = {int(r["seed"]) for r in read_records(seeds_path, first, end)}
    todo = [s for s in range(first, end) if s not in done]
    n = workers or os.cpu_count() or 1
    print(
        f"soak: seeds {first}..{end - 1}: {len(done)} already in {seeds_path}, "
        f"{len(todo)} to run on {n} processes",
        file=log,
        flush=True,
    )
    started = time.monotonic()
    deadline = None if time_limit_s is None else started + time_limit_s
    ran = 0
    cpu = 0.0
    fails = 0
    last_report = started
    interrupted = False

    def report(final: bool = False) -> None:
        el = time.monotonic() - started
        rate = ran / el if el > 0 else 0.0
        left = len(todo) - ran
        eta = _fmt_s(left / rate) if rate > 0 else "?"
        per_seed = cpu / ran if ran else 0.0
        have = len(done) + ran
        print(
            f"soak: {have}/{end - first} seeds ({100 * have / max(1, end - first):.1f} %), "
            f"{rate:.1f} seeds/s, {per_seed * 1000:.0f} ms CPU per seed, "
            f"{'done in ' + _fmt_s(el) if final else 'ETA ' + eta}, failures so far {fails}",
            file=log,
            flush=True,
        )

    if seeds_path.exists() and seeds_path.stat().st_size:
        with seeds_path.open("rb") as tail:
            tail.seek(-1, os.SEEK_END)
            torn = tail.read(1) != b"\n"
        if torn:  # a line cut by an interruption: end it (it is skipped when read)
            with seeds_path.open("a") as fh:
                fh.write("\n")
    with seeds_path.open("a") as fh:

        def record(rec: dict[str, Any]) -> None:
            nonlocal ran, cpu, fails, last_report
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
            fh.flush()
            ran += 1
            cpu += float(rec["cpu_s"])
            fails += 0 if rec["ok"] else 1
            now = time.monotonic()
            if now - last_report >= progress_s:
                last_report = now
                report()

        def timed_out() -> bool:
            return deadline is not None and time.monotonic() > deadline

        try:
            if n <= 1:
                for s in todo:
                    record(run_one(s))
                    if timed_out():
                        break
            elif todo:
                ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
                chunk = max(1, min(16, len(todo) // (n * 8)))
                with ctx.Pool(n, maxtasksperchild=2000) as pool:
                    for rec in pool.imap_unordered(run_one, todo, chunksize=chunk):
                        record(rec)
                        if timed_out():
                            print("soak: time limit reached", file=log, flush=True)
                            pool.terminate()
                            break
        except KeyboardInterrupt:
            interrupted = True
            print("soak: interrupted", file=log, flush=True)
    if todo:
        report(final=True)
    summary = summarize(read_records(seeds_path, first, end), first, end)
    text = summary.text()
    (out / f"summary-{first}-{end}.txt").write_text(text + "\n")
    (out / f"summary-{first}-{end}.json").write_text(json.dumps(summary.as_json(), indent=1) + "\n")
    if interrupted:
        raise KeyboardInterrupt
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tandem.sim.soak",
        description="Run many DST seeds over every core, resumable, with a summary file.",
    )
    ap.add_argument("--from", dest="first", type=int, default=0, help="first seed")
    ap.add_argument("--to", dest="end", type=int, default=100_000, help="end seed (excluded)")
    ap.add_argument("--workers", type=int, default=0, help="processes (0: every core)")
    ap.add_argument("--out", type=Path, default=Path("build/soak"), help="results directory")
    ap.add_argument("--time-limit", type=float, default=None, help="stop after this many s")
    ap.add_argument("--progress", type=float, default=30.0, help="progress line every S s")
    args = ap.parse_args(argv)
    if args.end <= args.first:
        ap.error("--to must be above --from")
    try:
        summary = run_range(
            args.first,
            args.end,
            args.out,
            workers=args.workers,
            time_limit_s=args.time_limit,
            progress_s=args.progress,
        )
    except KeyboardInterrupt:
        summary = summarize(
            read_records(args.out / f"seeds-{args.first}-{args.end}.jsonl", args.first, args.end),
            args.first,
            args.end,
        )
        print(summary.text())
        return 130
    print(summary.text())
    print(f"summary: {args.out / f'summary-{args.first}-{args.end}.txt'}")
    return summary.exit_status()


if __name__ == "__main__":
    sys.exit(main())
