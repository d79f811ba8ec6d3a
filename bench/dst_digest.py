"""Determinism oracle for the DST simulator: one digest per seed of its whole trajectory.

The digest is a SHA-256 over every trace line of the run (every DHCP message sent, received
or dropped, every state change, commit, crash, failover chunk, fault), the outcome (ok,
failure kind, first line of the message), the step count, the number of ACKs the MCLT bound
checked, the invariant checks run, the faults injected by kind, both servers' committed
stores (every field of every lease) and every client's binding history. A change to the
simulator that is meant to be a pure speed-up must leave every seed's digest unchanged.

    python bench/dst_digest.py --first 0 --count 300 > before.txt   # record
    python bench/dst_digest.py --first 0 --count 300 --check before.txt  # compare
    python bench/dst_digest.py --first 0 --count 300 --no-trace --check before.txt

Each line: seed, the digest, ``state=`` the digest of everything but the trace, a summary.
``--no-trace`` runs the seeds without recording the trace (as ``make soak`` does) and
compares the state digests: the trace must not change the run. ``--workers`` runs seeds in
parallel (the digest is the same: each seed is its own run).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import sys
import time
from dataclasses import fields, is_dataclass

from tandem.sim.faults import make_schedule, run_schedule


def _lease_text(le: object) -> str:
    if is_dataclass(le):
        return repr(tuple((f.name, getattr(le, f.name)) for f in fields(le)))
    slots = getattr(type(le), "__slots__", ())
    if slots:
        return repr(tuple((s, getattr(le, s, None)) for s in slots))
    return repr(sorted(vars(le).items()))


def digest(seed: int, trace: bool = True) -> tuple[int, str, str, str]:
    """(seed, digest of everything, digest of everything but the trace, summary) of one
    seed's run; without ``trace`` the run records no trace and the first digest is "-"."""
    if trace:
        res, run = run_schedule(make_schedule(seed))
    else:
        res, run = run_schedule(make_schedule(seed), trace=False)
    whole = hashlib.sha256()
    state = hashlib.sha256()

    def put(s: str, *, traced: bool = False) -> None:
        for h in (whole,) if traced else (whole, state):
            h.update(s.encode())
            h.update(b"\n")

    put(f"ok={res.ok} failure={res.failure} first={res.first_line()}")
    put(f"steps={res.steps} acks={res.acks}")
    put("injected=" + repr(sorted(res.injected.items())))
    if run is not None:
        sim = run.sim
        put(f"checks={sim.invariants.checks_run} now={sim.sched.now!r}")
        for e in sim.trace.events:
            put(e.line(), traced=True)
        for name in sorted(sim.servers):
            srv = sim.servers[name]
            put(f"server {name} up={srv.up} lives={srv.lives} commits={srv.store.commits}")
            for addr in sorted(srv.store.leases):
                put(_lease_text(srv.store.leases[addr]))
        for name in sorted(sim.clients):
            c = sim.clients[name]
            put(f"client {name} state={c.state.value} binding={c.binding!r}")
            for b in c.history:
                put(repr(b))
    summary = (
        f"ok={int(res.ok)} steps={res.steps} acks={res.acks}"
        f"{' ' + res.failure if not res.ok else ''}"
    )
    return seed, whole.hexdigest() if trace else "-", state.hexdigest(), summary


def _digest_no_trace(seed: int) -> tuple[int, str, str, str]:
    return digest(seed, trace=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-trace", action="store_true",
                    help="run without the trace; --check compares the state digests only")
    ap.add_argument("--check", help="compare with a file this script wrote; exit 1 on any change")
    args = ap.parse_args(argv)
    seeds = range(args.first, args.first + args.count)
    fn = _digest_no_trace if args.no_trace else digest
    t0 = time.process_time()
    if args.workers > 1:
        with multiprocessing.get_context("fork").Pool(args.workers) as pool:
            rows = sorted(pool.imap_unordered(fn, seeds, chunksize=2))
    else:
        rows = [fn(s) for s in seeds]
    if args.check is None:
        for s, whole, st, summ in rows:
            print(f"{s} {whole} state={st} {summ}")
        if args.workers <= 1:
            print(f"# cpu {time.process_time() - t0:.1f} s", file=sys.stderr)
        return 0
    want: dict[int, tuple[str, str | None]] = {}
    with open(args.check) as fh:
        for ln in fh:
            tok = ln.split()
            if not tok or ln.startswith("#"):
                continue
            st_want = next((t[6:] for t in tok if t.startswith("state=")), None)
            want[int(tok[0])] = (tok[1], st_want)
    bad = 0
    for s, whole, st, summ in rows:
        w = want.get(s)
        if w is None:
            ok = False
        elif args.no_trace:
            ok = w[1] is not None and w[1] == st
        else:
            ok = w[0] == whole and (w[1] is None or w[1] == st)
        if not ok:
            bad += 1
            if bad <= 20:
                print(f"DIFFERS seed {s}: want {w}, got {(whole, st)} {summ}")
    what = "state digests (no trace)" if args.no_trace else "digests"
    print(f"{len(rows) - bad}/{len(rows)} seeds identical ({what})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
