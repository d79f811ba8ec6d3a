#!/usr/bin/env python3
"""Memory soak: is ``tandem serve``'s resident memory flat over time under steady load?

Runs one Tandem server in a network namespace (the topology of bench/dora.py: a bridge, a
server host, a client host; 198.18.0.0/15 addresses that never leave the namespaces) and
drives it with perfdhcp at a fixed, modest rate for ``--minutes`` (default 30): 200 DORA/s
over 6,000 clients with 20 s leases, so a client comes back every ~30 s after its lease has
expired -- the table fills within the first minutes, then leases expire and are bound again
all the time: the steady state a long-running server lives in. Every ``--interval`` seconds
(default 10) it samples the server's RSS (/proc/PID/status VmRSS) and its ``status``
(leases, counters) through the control socket, writes every sample to ``rss.csv`` and a
``summary.json``:

* ``rss_start_kib``: RSS at the end of the warm-up (``--warmup-fraction`` of the run,
  default 0.2: the lease table is still filling until about one lease time has passed);
* ``rss_end_kib``, ``rss_max_kib``;
* ``slope_kib_per_min``: least-squares slope of RSS over the samples after the warm-up;
* ``flat``: growth after the warm-up below max(4 MiB, 5 %) and a slope that would add less
  than 4 MiB per hour.

Needs root (namespaces), perfdhcp (kea-admin) and the venv's ``tandem``. Only processes this
script started are stopped, by PID; namespaces and (unless --keep) the work directory are
removed on every exit path. ``make soak-rss`` runs it with the defaults.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import dora  # noqa: E402  (bench/dora.py: namespaces, process bookkeeping, Tandem start)

DEFAULT_OUT = BENCH_DIR / "out" / "soak-rss"


def rss_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of ``pid`` in KiB, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    vals: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0])
    if "VmRSS" not in vals:
        return None
    return vals["VmRSS"], vals.get("VmHWM", vals["VmRSS"])


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t seconds, value) in value per minute (0 with < 2 points)."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return 0.0
    return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / den


def summarise(rows: list[dict[str, Any]], opts: argparse.Namespace) -> dict[str, Any]:
    total_s = opts.minutes * 60.0
    warm = [r for r in rows if r["t_s"] >= opts.warmup_fraction * total_s] or rows
    start, end = warm[0]["rss_kib"], warm[-1]["rss_kib"]
    slope = slope_per_min([(r["t_s"], float(r["rss_kib"])) for r in warm])
    growth = end - start
    allowed = max(4096.0, 0.05 * start)
    flat = growth < allowed and slope * 60.0 < 4096.0
    last = rows[-1]
    return {
        "minutes": opts.minutes,
        "rate_per_s": opts.rate,
        "clients": opts.clients,
        "lease_time_s": opts.lease_time,
        "samples": len(rows),
        "rss_first_kib": rows[0]["rss_kib"],
        "rss_start_kib": start,
        "rss_end_kib": end,
        "rss_max_kib": max(r["rss_kib"] for r in rows),
        "hwm_kib": last["hwm_kib"],
        "growth_after_warmup_kib": growth,
        "slope_kib_per_min": round(slope, 2),
        "flat": flat,
        "acks_sent": last["acks_sent"],
        "active_leases_end": last["active_leases"],
        "known_leases_end": last["known_leases"],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="soak duration (default 30)")
    p.add_argument("--interval", type=float, default=10.0, help="sample every N s (10)")
    p.add_argument("--rate", type=int, default=200, help="perfdhcp DORAs per second (200)")
    p.add_argument("--clients", type=int, default=6000, help="simulated clients (6000)")
    p.add_argument("--lease-time", type=int, default=20,
                   help="lease time in s (20: clients come back every ~30 s, leases expired)")
    p.add_argument("--warmup-fraction", type=float, default=0.2)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where rss.csv goes")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--binary", type=Path, default=dora.REPO_DIR / ".venv" / "bin" / "tandem")
    opts = p.parse_args(argv)
    if opts.minutes <= 0 or opts.interval <= 0 or opts.rate <= 0:
        p.error("--minutes, --interval and --rate must be positive")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if os.geteuid() != 0:
        print("soak_rss: needs root (network namespaces)", file=sys.stderr)
        return 2
    if shutil.which("perfdhcp") is None:
        print("soak_rss: perfdhcp not found (apt-get install kea-admin)", file=sys.stderr)
        return 2
    system = dora.TandemSingle(opts.lease_time, opts.binary, opts.log_level)
    why = system.available()
    if why is not None:
        print(f"soak_rss: {why}", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, dora._on_signal)
    atexit.register(dora.JANITOR.cleanup)
    dora.JANITOR.keep_dirs = opts.keep
    workdir = Path(tempfile.mkdtemp(prefix="tandem-soak-"))
    dora.JANITOR.dirs.append(workdir)
    opts.out.mkdir(parents=True, exist_ok=True)

    topo = dora.Topology.create(f"tdm-soak-{os.getpid()}")
    system.build_topology(topo)
    cli = topo.add_host("cli", dora.CLIENT_IP)
    servers = system.start(topo, workdir)
    server = servers.procs[0]
    duration_s = int(opts.minutes * 60)
    perf_log = workdir / "perfdhcp.log"
    perf = dora.spawn(cli, dora.CLIENT_CPU, [
        "perfdhcp", "-4", "-g", "single", "-l", dora.HOST_IFACE, "-r", str(opts.rate),
        "-R", str(opts.clients), "-p", str(duration_s), "-n", str(opts.rate * duration_s),
        "-d", "2",
    ], perf_log)
    dora.log(f"soak: tandem pid {server.pid}, perfdhcp pid {perf.pid}, {opts.minutes:g} min "
             f"at {opts.rate}/s, {opts.clients} clients, lease {opts.lease_time} s")

    rows: list[dict[str, Any]] = []
    fields = ["t_s", "rss_kib", "hwm_kib", "active_leases", "known_leases", "rx", "acks_sent",
              "store_write_failed", "drop_rate_client", "drop_rate_relay"]
    csv_path = opts.out / "rss.csv"
    t0 = time.monotonic()
    deadline = t0 + duration_s
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        next_at = t0
        while True:
            now = time.monotonic()
            if now >= next_at:
                mem = rss_kib(server.pid)
                if mem is None or server.poll() is not None:
                    dora.log(f"soak: the server exited ({server.returncode})")
                    break
                st = dora.tandem_status(workdir / "control.sock") or {}
                counters = st.get("counters", {})
                leases = st.get("leases", {})
                row = {
                    "t_s": round(now - t0, 1), "rss_kib": mem[0], "hwm_kib": mem[1],
                    "active_leases": leases.get("active"), "known_leases": leases.get("known"),
                    "rx": counters.get("rx"), "acks_sent": counters.get("acks_sent"),
                    "store_write_failed": counters.get("store_write_failed"),
                    "drop_rate_client": counters.get("drop_rate_client"),
                    "drop_rate_relay": counters.get("drop_rate_relay"),
                }
                rows.append(row)
                writer.writerow(row)
                fh.flush()
                dora.log(f"soak: t={row['t_s']:7.1f} s rss={mem[0] / 1024:7.1f} MiB "
                         f"active={row['active_leases']} known={row['known_leases']} "
                         f"acks={row['acks_sent']}")
                next_at += opts.interval
            if now >= deadline:
                break
            time.sleep(max(0.05, min(next_at, deadline) - time.monotonic()))
    dora.JANITOR.stop(perf, timeout_s=10)
    code = dora.JANITOR.stop(server, timeout_s=15)
    if not rows:
        print("soak_rss: no samples", file=sys.stderr)
        return 1
    summary = summarise(rows, opts)
    summary["server_exit_code"] = code
    summary["csv"] = str(csv_path)
    (opts.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if opts.keep:
        shutil.copy(perf_log, opts.out / "perfdhcp.log")
    print(json.dumps(summary, indent=2))
    return 0 if summary["flat"] and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
