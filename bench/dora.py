#!/usr/bin/env python3
"""DORA throughput benchmark: Tandem against Kea and ISC dhcpd, driven by perfdhcp, in namespaces.

For each system the script searches for the highest request rate that the server sustains for
``--duration`` seconds with fewer than ``--drop-threshold`` % of exchanges left without their
ACK (median of ``--repeat`` runs), starting every run with a fresh server and an empty lease
store. See bench/README.md for what is measured and the traps.

Everything runs inside namespaces created here (``tdm-bench-<pid>`` holds a bridge, one
namespace per host hangs off it); addresses come from 198.18.0.0/15 and never leave them.
Only processes started by this script are stopped, by PID; namespaces and temporary
directories are removed on every exit path.

Systems: Tandem single and hot-standby pair, Kea single and HA hot-standby pair, ISC dhcpd
single and failover pair (a pair's members share the client LAN; their failover / HA traffic
crosses a veth of its own). Scenarios: DORA, renew storm, release churn. bench/README.md
lists them, what "ready" means for each and what is checked after a run.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import dataclasses
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from string import Template
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
CONFIG_DIR = BENCH_DIR / "configs"
DEFAULT_OUT_DIR = BENCH_DIR / "out"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Addresses: 198.18.0.0/15 is the benchmarking range (RFC 2544); used only in the namespaces.
PREFIX = "198.18.0.0/16"
PREFIX_LEN = 16
POOL_START = "198.18.1.0"
POOL_END = "198.18.255.254"
SERVER_IP = "198.18.0.1"
SERVER2_IP = "198.18.0.3"  # a pair's second member (standby / secondary), same LAN
CLIENT_IP = "198.18.0.2"
NETMASK = "255.255.0.0"
HOST_IFACE = "bench0"  # interface name inside every host namespace
# A pair's failover / HA link: a veth straight between the two server namespaces.
FO_IFACE = "fo0"
FO_IP1 = "203.0.113.2"
FO_IP2 = "203.0.113.3"
FO_PREFIX_LEN = 24
KEA_HA_PORT = 8005
KEA_HOOKS_DIR = Path("/usr/lib/x86_64-linux-gnu/kea/hooks")

SERVER_CPU = 0
CLIENT_CPU = 1
SECOND_SERVER_CPU = 1  # a pair's standby shares CPU 1 with perfdhcp (docs/benchmarking.md)

EXIT_INCOMPLETE = 3  # perfdhcp: some exchanges were incomplete (normal under load)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Process and namespace bookkeeping: everything we start is registered and cleaned up here.
# --------------------------------------------------------------------------------------------


class Janitor:
    """Remembers what this run created and removes it, once, on every exit path."""

    def __init__(self) -> None:
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.namespaces: list[str] = []
        self.dirs: list[Path] = []
        self.keep_dirs = False
        self._done = False

    def track(self, proc: subprocess.Popen[bytes]) -> None:
        self.procs[proc.pid] = proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> int | None:
        """SIGTERM then SIGKILL one process we started, by PID; returns its exit code."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout_s)
        self.procs.pop(proc.pid, None)
        return proc.returncode

    def cleanup(self) -> None:
        if self._done:
            return
        self._done = True
        for proc in list(self.procs.values()):
            try:
                self.stop(proc, timeout_s=3.0)
            except Exception as exc:  # keep cleaning whatever happens
                log(f"cleanup: could not stop pid {proc.pid}: {exc}")
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        self.namespaces.clear()
        if not self.keep_dirs:
            for d in self.dirs:
                shutil.rmtree(d, ignore_errors=True)


JANITOR = Janitor()
NICE = {"value": 0}  # niceness for the servers and perfdhcp (set from --nice)
SPAWNED: list[str] = []  # every command line spawn() ran, in order (for the report)


def _on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run(cmd: Sequence[str], check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, env=env)


def spawn(
    ns: str,
    cpu: int,
    argv: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in namespace ``ns`` pinned to ``cpu``. ``ip netns exec``, ``nice`` and
    ``taskset`` all exec in place, so the returned PID is the program's own PID."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    SPAWNED.append(" ".join([*(f"{k}={v}" for k, v in (env or {}).items()), "ip", "netns",
                             "exec", ns, "nice", "-n", str(NICE["value"]), "taskset", "-c",
                             str(cpu), *argv]))
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "nice", "-n", str(NICE["value"]),
             "taskset", "-c", str(cpu), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            start_new_session=True,  # a terminal ^C reaches only us; we stop children by PID
        )
    JANITOR.track(proc)
    set_autogroup_nice(proc.pid, NICE["value"])
    return proc


def set_autogroup_nice(pid: int, nice: int) -> None:
    """With kernel.sched_autogroup_enabled, plain niceness only ranks processes within one
    session; each child here has its own session (start_new_session), so give that session's
    autogroup the niceness as well. Touches only the group of a process we started."""
    if nice == 0:
        return
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def proc_cpu_ticks(pid: int) -> tuple[int, int] | None:
    """(utime, stime) of all threads of ``pid`` in clock ticks (from /proc/PID/stat)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)


def runqueue_wait_ns(pid: int) -> int | None:
    """Time all threads of ``pid`` spent runnable but waiting for a CPU (schedstat field 2)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int((task / "schedstat").read_text().split()[1])
    except OSError:
        return None
    return total


def cpu_times() -> list[tuple[int, int]]:
    """(busy, total) ticks per CPU from /proc/stat (coarse; fine for spotting other load)."""
    rows = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            vals = [int(v) for v in line.split()[1:]]
            idle = vals[3] + vals[4]
            rows.append((sum(vals) - idle, sum(vals)))
    return rows


def busy_ticks() -> int:
    """user + nice + system ticks of the whole machine (the first line of /proc/stat)."""
    vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return vals[0] + vals[1] + vals[2]


def background_busy_pct(sample_s: float = 1.0) -> float:
    """Percent of the machine (all CPUs) busy while nothing of ours runs."""
    a = cpu_times()
    time.sleep(sample_s)
    b = cpu_times()
    busy = sum(y[0] - x[0] for x, y in zip(a, b, strict=True))
    total = sum(y[1] - x[1] for x, y in zip(a, b, strict=True))
    return round(100.0 * busy / total, 1) if total else 0.0


def wait_quiet(opts: argparse.Namespace) -> float:
    """Wait (up to --quiet-wait s) until other load is below --quiet-pct; return its level."""
    deadline = time.monotonic() + opts.quiet_wait
    level = background_busy_pct()
    warned = False
    while level > opts.quiet_pct and time.monotonic() < deadline:
        if not warned:
            log(f"  machine busy ({level} % of all CPUs) with other work; waiting up to "
                f"{opts.quiet_wait:.0f} s for it to calm down")
            warned = True
        time.sleep(2.0)
        level = background_busy_pct()
    if level > opts.quiet_pct:
        log(f"  warning: measuring anyway with {level} % background load")
    return level


# --------------------------------------------------------------------------------------------
# Topology: a bridge in namespace tdm-bench-<pid>, one namespace per host on a veth.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Topology:
    base: str
    hosts: dict[str, str] = dataclasses.field(default_factory=dict)  # role -> namespace

    @classmethod
    def create(cls, base: str) -> Topology:
        topo = cls(base)
        run(["ip", "netns", "add", base])
        JANITOR.namespaces.append(base)
        hub = ["ip", "-n", base]
        run([*hub, "link", "set", "lo", "up"])
        run([*hub, "link", "add", "br0", "type", "bridge", "stp_state", "0",
             "forward_delay", "0", "mcast_snooping", "0"])
        run([*hub, "link", "set", "br0", "up"])
        return topo

    def add_host(self, role: str, address: str) -> str:
        """Add namespace ``<base>-<role>`` with interface HOST_IFACE at ``address``."""
        ns = f"{self.base}-{role}"
        run(["ip", "netns", "add", ns])
        JANITOR.namespaces.append(ns)
        peer = f"v-{role}"[:15]
        run(["ip", "-n", self.base, "link", "add", peer, "type", "veth",
             "peer", "name", HOST_IFACE, "netns", ns])
        run(["ip", "-n", self.base, "link", "set", peer, "master", "br0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", HOST_IFACE])
        run(["ip", "-n", ns, "link", "set", HOST_IFACE, "up"])
        self.hosts[role] = ns
        return ns

    def add_link(self, role_a: str, addr_a: str, role_b: str, addr_b: str) -> None:
        """A veth FO_IFACE straight between two host namespaces (a pair's failover link)."""
        ns_a, ns_b = self.hosts[role_a], self.hosts[role_b]
        run(["ip", "-n", ns_a, "link", "add", FO_IFACE, "type", "veth",
             "peer", "name", FO_IFACE, "netns", ns_b])
        for ns, addr in ((ns_a, addr_a), (ns_b, addr_b)):
            run(["ip", "-n", ns, "addr", "add", f"{addr}/{FO_PREFIX_LEN}", "dev", FO_IFACE])
            run(["ip", "-n", ns, "link", "set", FO_IFACE, "up"])


def udp_port_owned_by(ns: str, port: int, pid: int) -> bool:
    out = run(["ip", "netns", "exec", ns, "ss", "-H", "-ulnp", f"sport = :{port}"], check=False)
    return f"pid={pid}," in out.stdout


# --------------------------------------------------------------------------------------------
# Systems under test. A System starts fresh servers with empty stores for one run.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Servers:
    """What a System started for one run: processes to measure, logs to show on failure."""

    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    store_files: list[Path]
    ready_s: float = 0.0  # from spawn to ready (pairs: both in their steady state)


class StartError(RuntimeError):
    pass


class System:
    name = "?"
    label = "?"

    def available(self) -> str | None:
        """None if runnable here, else the reason why not."""
        raise NotImplementedError

    def build_topology(self, topo: Topology) -> None:
        topo.add_host("srv", SERVER_IP)

    def start(self, topo: Topology, workdir: Path) -> Servers:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label}

    def after_load(self, servers: Servers, workdir: Path) -> dict[str, Any]:
        """After the measured load, servers still running (a pair: let the standby catch up
        and say how far it got). Not part of the measured time."""
        return {}

    def after_stop(self, servers: Servers, workdir: Path) -> dict[str, Any]:
        """After the servers stopped (a pair: compare the stores)."""
        return {}

    @staticmethod
    def wait_ready(ns: str, proc: subprocess.Popen[bytes], log_path: Path,
                   timeout_s: float, settle_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StartError(f"exited with {proc.returncode}: {tail(log_path)}")
            if udp_port_owned_by(ns, 67, proc.pid):
                time.sleep(settle_s)
                if proc.poll() is not None:
                    raise StartError(f"exited with {proc.returncode}: {tail(log_path)}")
                return
            time.sleep(0.05)
        raise StartError(f"not listening on port 67 after {timeout_s:.0f} s: {tail(log_path)}")


def render(template: str, **values: object) -> str:
    text = (CONFIG_DIR / template).read_text()
    return Template(text).substitute({k: str(v) for k, v in values.items()})


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class KeaSingle(System):
    name = "kea"
    label = "Kea 2.2 kea-dhcp4, memfile persisted, 1 thread"

    def __init__(self, lease_time_s: int) -> None:
        self.lease_time_s = lease_time_s
        self.binary = shutil.which("kea-dhcp4") or "/usr/sbin/kea-dhcp4"

    def available(self) -> str | None:
        return None if os.access(self.binary, os.X_OK) else "kea-dhcp4 not installed"

    def start(self, topo: Topology, workdir: Path) -> Servers:
        conf = workdir / "kea-dhcp4.json"
        lease_file = workdir / "kea-leases4.csv"
        kea_log = workdir / "kea.log"
        conf.write_text(render(
            "kea-dhcp4.json", iface=HOST_IFACE, lease_file=lease_file, log_file=kea_log,
            lease_time_s=self.lease_time_s, prefix=PREFIX, pool_start=POOL_START,
            pool_end=POOL_END,
        ))
        out = workdir / "kea.stdout"
        env = {"KEA_PIDFILE_DIR": str(workdir), "KEA_LOCKFILE_DIR": str(workdir)}
        ns = topo.hosts["srv"]
        proc = spawn(ns, SERVER_CPU, [self.binary, "-c", str(conf)], out, env)
        self.wait_ready(ns, proc, out, timeout_s=15, settle_s=0.3)
        return Servers([proc], [out, kea_log], [lease_file])


class TandemSingle(System):
    name = "tandem"
    label = "Tandem, SQLite store (durable), 1 process"

    #: Extra environment of the server processes (the compiled variants set PYTHONPATH).
    env: dict[str, str] | None = None

    def __init__(self, lease_time_s: int, binary: Path, log_level: str) -> None:
        self.lease_time_s = lease_time_s
        self.binary = binary
        self.log_level = log_level

    def available(self) -> str | None:
        if not os.access(self.binary, os.X_OK):
            return f"{self.binary} not found (make venv)"
        if self.env is not None:
            probe = run([str(self.binary.parent / "python"), "-c",
                         "import tandem.dhcp.engine as e; assert e.__file__.endswith('.so')"],
                        check=False, env={**os.environ, **self.env})
            if probe.returncode != 0:
                return f"no compiled build in {COMPILED_DIR} (make compiled)"
        probe = run([str(self.binary), "serve", "--help"], check=False)
        if probe.returncode != 0:
            msg = (probe.stderr or probe.stdout).strip().splitlines()
            return f"`tandem serve --help` failed ({probe.returncode}): {msg[-1] if msg else ''}"
        return None

    def start(self, topo: Topology, workdir: Path) -> Servers:
        conf = workdir / "tandem.toml"
        store = workdir / "leases.db"
        conf.write_text(render(
            "tandem.toml", iface=HOST_IFACE, server_ip=SERVER_IP, store_path=store,
            lease_time_s=self.lease_time_s, prefix=PREFIX, pool_start=POOL_START,
            pool_end=POOL_END, relay_ip=CLIENT_IP, control_socket=workdir / "control.sock",
        ))
        out = workdir / "tandem.log"
        ns = topo.hosts["srv"]
        argv = [str(self.binary), "serve", "-c", str(conf), "--log-level", self.log_level]
        proc = spawn(ns, SERVER_CPU, argv, out, self.env)
        self.wait_ready(ns, proc, out, timeout_s=30, settle_s=0.5)
        return Servers([proc], [out], [store, Path(f"{store}-wal")])


# --------------------------------------------------------------------------------------------
# Pairs and ISC dhcpd. A pair: primary on CPU 0, its partner (standby / secondary) on CPU 1
# next to perfdhcp; both on the client LAN, the failover / HA traffic on a veth of its own.
# --------------------------------------------------------------------------------------------


def wait_until(what: str, check: Callable[[], bool], timeout_s: float,
               procs: Sequence[subprocess.Popen[bytes]], logs: Sequence[Path],
               interval_s: float = 0.2) -> float:
    """Poll ``check`` until true; StartError on timeout or when a process died."""
    t0 = time.monotonic()
    while True:
        for proc in procs:
            if proc.poll() is not None:
                raise StartError(f"pid {proc.pid} exited with {proc.returncode} while waiting "
                                 f"for {what}: " + "\n".join(tail(p) for p in logs))
        if check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise StartError(f"no {what} after {timeout_s:.0f} s: "
                             + "\n".join(tail(p, 8) for p in logs))
        time.sleep(interval_s)


def tandem_status(sock: Path) -> dict[str, Any] | None:
    """One ``status`` request on a Tandem control socket (newline-delimited JSON)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(str(sock))
            s.sendall(b'{"command": "status"}\n')
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        reply = json.loads(buf)
        return reply if isinstance(reply, dict) else None
    except (OSError, ValueError):
        return None


def tandem_store_bindings(store: Path) -> set[tuple[int, bytes]]:
    """(address, hwaddr) of every ACTIVE, unexpired lease in a stopped Tandem store."""
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT address, hwaddr FROM leases WHERE state = 2 AND end > ?",
                           (time.time(),)).fetchall()
    finally:
        con.close()
    return {(int(a), bytes(h or b"")) for a, h in rows}


def binding_agreement(primary: set[Any], standby: set[Any]) -> dict[str, Any]:
    return {"primary_bindings": len(primary), "standby_bindings": len(standby),
            "standby_missing": len(primary - standby), "standby_extra": len(standby - primary),
            "standby_has_all": primary <= standby}


def pair_topology(topo: Topology) -> None:
    """Both members of a pair on the client LAN, plus a veth between them (failover / HA)."""
    topo.add_host("srv", SERVER_IP)
    topo.add_host("srv2", SERVER2_IP)
    topo.add_link("srv", FO_IP1, "srv2", FO_IP2)


class TandemPair(TandemSingle):
    name = "tandem-pair"
    label = "Tandem hot-standby pair, SQLite stores (durable), BNDUPDs to the standby"

    def __init__(self, lease_time_s: int, binary: Path, log_level: str, mclt_s: int,
                 reserve_percent: int, sync_timeout_s: float) -> None:
        super().__init__(lease_time_s, binary, log_level)
        self.mclt_s = mclt_s
        self.reserve_percent = reserve_percent
        self.sync_timeout_s = sync_timeout_s

    def build_topology(self, topo: Topology) -> None:
        pair_topology(topo)

    def start(self, topo: Topology, workdir: Path) -> Servers:
        t0 = time.monotonic()
        procs, logs, stores, socks = [], [], [], []
        for role, host, ip, fo, peer_fo, cpu in (
            ("primary", "srv", SERVER_IP, FO_IP1, FO_IP2, SERVER_CPU),
            ("secondary", "srv2", SERVER2_IP, FO_IP2, FO_IP1, SECOND_SERVER_CPU),
        ):
            conf = workdir / f"tandem-{role}.toml"
            store = workdir / f"leases-{role}.db"
            sock = workdir / f"control-{role}.sock"
            conf.write_text(render(
                "tandem-pair.toml", iface=HOST_IFACE, server_ip=ip, store_path=store,
                lease_time_s=self.lease_time_s, prefix=PREFIX, pool_start=POOL_START,
                pool_end=POOL_END, control_socket=sock, role=role, fo_ip=fo,
                peer_fo_ip=peer_fo, mclt_s=self.mclt_s, reserve_percent=self.reserve_percent,
            ))
            out = workdir / f"tandem-{role}.log"
            argv = [str(self.binary), "serve", "-c", str(conf), "--log-level", self.log_level]
            procs.append(spawn(topo.hosts[host], cpu, argv, out, self.env))
            logs.append(out)
            stores.append(store)
            socks.append(sock)
        for proc, host, out in zip(procs, ("srv", "srv2"), logs, strict=True):
            self.wait_ready(topo.hosts[host], proc, out, timeout_s=30, settle_s=0.0)
        self.socks = socks

        def in_sync() -> bool:
            st = [tandem_status(s) for s in socks]
            fo = [(x or {}).get("failover") or {} for x in st]
            if any(f.get("state") != "NORMAL" for f in fo):
                return False
            # the primary moved reserve_percent of the free addresses to BACKUP: wait until
            # the standby has heard of every one (its BNDUPDs have flowed)
            p_backup = fo[0].get("reserve", {}).get("backup", -1)
            s_backup = fo[1].get("reserve", {}).get("backup", -2)
            return bool(p_backup == s_backup and (p_backup > 0 or self.reserve_percent == 0))

        wait_until("NORMAL on both with the reserve synced", in_sync, self.sync_timeout_s,
                   procs, logs)
        time.sleep(0.3)
        return Servers(procs, logs, [*stores, *(Path(f"{x}-wal") for x in stores)],
                       ready_s=round(time.monotonic() - t0, 2))

    def after_load(self, servers: Servers, workdir: Path) -> dict[str, Any]:
        """Wait (bounded) until the standby knows as many active leases as the primary."""
        t0 = time.monotonic()
        last: list[int] = [-1, -1]

        def caught_up() -> bool:
            st = [tandem_status(s) for s in self.socks]
            last[:] = [int(((x or {}).get("leases") or {}).get("active", -1)) for x in st]
            return last[0] >= 0 and last[1] >= last[0]

        try:
            wait_until("standby catch-up", caught_up, 30.0, servers.procs, servers.logs, 0.25)
            ok = True
        except StartError:
            ok = False
        return {"primary_active": last[0], "standby_active": last[1],
                "standby_caught_up": ok, "catch_up_s": round(time.monotonic() - t0, 2)}

    def after_stop(self, servers: Servers, workdir: Path) -> dict[str, Any]:
        try:
            prim = tandem_store_bindings(servers.store_files[0])
            stby = tandem_store_bindings(servers.store_files[1])
        except Exception as exc:  # report, do not crash the run
            return {"store_check_error": repr(exc)}
        return binding_agreement(prim, stby)


def kea_memfile_bindings(path: Path) -> set[tuple[str, str]]:
    """(address, hwaddr) of the active leases in a Kea memfile CSV (the last line per
    address wins; state 0 = default/assigned, expire in the future)."""
    latest: dict[str, tuple[str, str, int, int]] = {}
    if not path.exists():
        return set()
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                latest[row["address"]] = (row["address"], row["hwaddr"], int(row["expire"]),
                                          int(row["state"]))
            except (KeyError, ValueError):
                continue
    now = time.time()
    return {(a, h) for a, h, exp, state in latest.values() if state == 0 and exp > now}


#: `make compiled`'s output; TANDEM_BENCH_COMPILED_DIR points the compiled variants at another
#: build (an A/B of two compiled builds, one invocation each).
COMPILED_DIR = Path(os.environ.get("TANDEM_BENCH_COMPILED_DIR") or REPO_DIR / "build" / "compiled")


class TandemSingleCompiled(TandemSingle):
    name = "tandem-c"
    label = "Tandem compiled with mypyc (optional build, `make compiled`), SQLite store (durable)"
    env = {"PYTHONPATH": str(COMPILED_DIR)}


class TandemPairCompiled(TandemPair):
    name = "tandem-pair-c"
    label = ("Tandem hot-standby pair compiled with mypyc (optional build), SQLite stores "
             "(durable), BNDUPDs to the standby")
    env = {"PYTHONPATH": str(COMPILED_DIR)}


class KeaHaPair(KeaSingle):
    name = "kea-ha"
    label = "Kea 2.2 HA hot-standby pair, memfile, 2 threads, HA's own HTTP listener"

    def __init__(self, lease_time_s: int, threads: int) -> None:
        super().__init__(lease_time_s)
        self.threads = threads

    def available(self) -> str | None:
        missing = [lib for lib in ("libdhcp_ha.so", "libdhcp_lease_cmds.so")
                   if not (KEA_HOOKS_DIR / lib).exists()]
        if missing:
            return f"{', '.join(missing)} not in {KEA_HOOKS_DIR} (kea-common)"
        return super().available()

    def build_topology(self, topo: Topology) -> None:
        pair_topology(topo)

    def start(self, topo: Topology, workdir: Path) -> Servers:
        t0 = time.monotonic()
        procs, logs, leases = [], [], []
        for name, host, cpu in (("server1", "srv", SERVER_CPU),
                                ("server2", "srv2", SECOND_SERVER_CPU)):
            d = workdir / name
            d.mkdir()
            conf, lease_file, kea_log = d / "kea-dhcp4.json", d / "leases4.csv", d / "kea.log"
            conf.write_text(render(
                "kea-ha.json", iface=HOST_IFACE, lease_file=lease_file, log_file=kea_log,
                lease_time_s=self.lease_time_s, prefix=PREFIX, pool_start=POOL_START,
                pool_end=POOL_END, threads=self.threads, hooks_dir=KEA_HOOKS_DIR,
                this_name=name, fo_ip1=FO_IP1, fo_ip2=FO_IP2, ha_port=KEA_HA_PORT,
            ))
            out = d / "kea.stdout"
            env = {"KEA_PIDFILE_DIR": str(d), "KEA_LOCKFILE_DIR": str(d)}
            procs.append(spawn(topo.hosts[host], cpu, [self.binary, "-c", str(conf)], out, env))
            logs += [out, kea_log]
            leases.append(lease_file)
        for proc, host, name in zip(procs, ("srv", "srv2"), ("server1", "server2"), strict=True):
            self.wait_ready(topo.hosts[host], proc, workdir / name / "kea.stdout",
                            timeout_s=15, settle_s=0.0)
        hs = re.compile(r"transitions from \S+ to HOT-STANDBY state")

        def both_hot_standby() -> bool:
            return all(hs.search(tail(workdir / n / "kea.log", 200))
                       for n in ("server1", "server2"))

        wait_until("HOT-STANDBY on both Kea peers", both_hot_standby, 90.0, procs, logs, 0.25)
        time.sleep(0.3)
        return Servers(procs, logs, leases, ready_s=round(time.monotonic() - t0, 2))

    def after_load(self, servers: Servers, workdir: Path) -> dict[str, Any]:
        time.sleep(1.0)  # Kea HA sends each update before its ACK; give stragglers a moment
        return {}

    def after_stop(self, servers: Servers, workdir: Path) -> dict[str, Any]:
        return binding_agreement(kea_memfile_bindings(servers.store_files[0]),
                                 kea_memfile_bindings(servers.store_files[1]))


class DhcpdSingle(System):
    name = "dhcpd"
    label = "ISC dhcpd 4.4, single"
    template = "dhcpd.conf"

    def __init__(self, lease_time_s: int) -> None:
        self.lease_time_s = lease_time_s
        self.binary = shutil.which("dhcpd") or "/usr/sbin/dhcpd"

    def available(self) -> str | None:
        return None if os.access(self.binary, os.X_OK) else "dhcpd not installed (isc-dhcp-server)"

    def conf_values(self, role: str) -> dict[str, object]:
        return {"lease_time_s": self.lease_time_s, "net": PREFIX.split("/")[0],
                "netmask": NETMASK, "pool_start": POOL_START, "pool_end": POOL_END}

    def spawn_dhcpd(self, topo: Topology, host: str, cpu: int, d: Path, role: str,
                    seed: Path | None = None) -> tuple[subprocess.Popen[bytes], Path, Path]:
        d.mkdir()
        conf, lease_file, out = d / "dhcpd.conf", d / "dhcpd.leases", d / "dhcpd.log"
        conf.write_text(render(self.template, **self.conf_values(role)))
        if seed is not None:
            shutil.copyfile(seed, lease_file)
        else:
            lease_file.touch()
        # -f: foreground; -q: no banner. Logging goes to syslog as in production.
        argv = [self.binary, "-4", "-f", "-q", "-cf", str(conf), "-lf", str(lease_file),
                "-pf", str(d / "dhcpd.pid"), HOST_IFACE]
        return spawn(topo.hosts[host], cpu, argv, out), lease_file, out

    def start(self, topo: Topology, workdir: Path) -> Servers:
        t0 = time.monotonic()
        proc, lease_file, out = self.spawn_dhcpd(topo, "srv", SERVER_CPU, workdir / "dhcpd",
                                                 "single")
        self.wait_ready(topo.hosts["srv"], proc, out, timeout_s=15, settle_s=0.3)
        return Servers([proc], [out], [lease_file], ready_s=round(time.monotonic() - t0, 2))

    def after_stop(self, servers: Servers, workdir: Path) -> dict[str, Any]:
        return {"active_bindings": len(dhcpd_bindings(servers.store_files[0]))}


def dhcpd_bindings(path: Path) -> set[tuple[str, str]]:
    """(address, hwaddr) of every lease whose last record in a dhcpd lease file is active."""
    if not path.exists():
        return set()
    text = path.read_text(errors="replace")
    latest: dict[str, tuple[str, str]] = {}
    for m in re.finditer(r"^lease (\S+) \{(.*?)^\}", text, re.M | re.S):
        body = m.group(2)
        state = re.search(r"^\s*binding state (\S+);", body, re.M)
        hw = re.search(r"hardware ethernet (\S+);", body)
        latest[m.group(1)] = (state.group(1) if state else "", hw.group(1) if hw else "")
    return {(a, hw) for a, (st, hw) in latest.items() if st == "active"}


class DhcpdPair(DhcpdSingle):
    name = "dhcpd-pair"
    label = "ISC dhcpd 4.4 failover pair (split 255: the primary answers all)"
    template = "dhcpd-pair.conf"

    def __init__(self, lease_time_s: int, mclt_s: int, sync_timeout_s: float,
                 seed_dir: Path | None = None) -> None:
        super().__init__(lease_time_s)
        self.mclt_s = mclt_s
        self.sync_timeout_s = sync_timeout_s
        self.seeds: tuple[Path, Path] | None = None
        self.seed_dir: Path | None = seed_dir
        if seed_dir is not None and all((seed_dir / f).is_file()
                                        for f in ("primary.leases", "secondary.leases")):
            self.seeds = (seed_dir / "primary.leases", seed_dir / "secondary.leases")

    def build_topology(self, topo: Topology) -> None:
        pair_topology(topo)

    def conf_values(self, role: str) -> dict[str, object]:
        fo, peer = (FO_IP1, FO_IP2) if role == "primary" else (FO_IP2, FO_IP1)
        extra = f"  mclt {self.mclt_s};\n  split 255;" if role == "primary" else ""
        return {**super().conf_values(role), "role": role, "fo_ip": fo, "peer_fo_ip": peer,
                "primary_only": extra}

    def start(self, topo: Topology, workdir: Path) -> Servers:
        """The first start of a bench run goes from empty lease files through RECOVER to
        NORMAL, then waits out pool balancing (the primary sends the secondary half of the
        free pool, one BNDUPD per address: minutes for a /16). Both lease files are then
        kept as a seed: every later run starts from copies of them (pool balanced, NORMAL,
        no client binding), which takes seconds."""
        t0 = time.monotonic()
        seeds = self.seeds or (None, None)
        p, p_leases, p_out = self.spawn_dhcpd(topo, "srv", SERVER_CPU, workdir / "primary",
                                              "primary", seeds[0])
        s, s_leases, s_out = self.spawn_dhcpd(topo, "srv2", SECOND_SERVER_CPU,
                                              workdir / "secondary", "secondary", seeds[1])
        procs, logs = [p, s], [p_out, s_out]
        self.wait_ready(topo.hosts["srv"], p, p_out, timeout_s=15, settle_s=0.0)
        self.wait_ready(topo.hosts["srv2"], s, s_out, timeout_s=15, settle_s=0.0)
        if self.seeds is not None:
            # Restarted from NORMAL: dhcpd goes STARTUP -> NORMAL once the failover
            # connection is up (it writes no new state record for that).
            def connected() -> bool:
                out = run(["ip", "netns", "exec", topo.hosts["srv"], "ss", "-Htn", "state",
                           "established", "( sport = :647 or dport = :647 )"], check=False)
                return bool(out.stdout.strip())

            wait_until("the dhcpd failover connection", connected, self.sync_timeout_s,
                       procs, logs, 0.2)
            time.sleep(1.5)
            return Servers(procs, logs, [p_leases, s_leases],
                           ready_s=round(time.monotonic() - t0, 2))
        my_state = re.compile(r"my state (\S+) at")

        def both_normal() -> bool:
            states = []
            for f in (p_leases, s_leases):
                found = my_state.findall(f.read_text(errors="replace"))
                states.append(found[-1] if found else "")
            return states == ["normal", "normal"]

        wait_until("NORMAL on both dhcpd peers", both_normal, self.sync_timeout_s, procs, logs,
                   0.5)
        if True:  # first start: wait out pool balancing, keep the lease files as the seed
            # Pool balancing: wait until the secondary's lease file stops growing for 2 s.
            sizes: list[int] = []

            def balanced() -> bool:
                sizes.append(s_leases.stat().st_size)
                return len(sizes) >= 5 and len(set(sizes[-5:])) == 1

            wait_until("the end of pool balancing", balanced, self.sync_timeout_s, procs, logs,
                       0.5)
            seed_dir = self.seed_dir or workdir.parent / "dhcpd-pair-seed"
            seed_dir.mkdir(parents=True, exist_ok=True)
            self.seeds = (seed_dir / "primary.leases", seed_dir / "secondary.leases")
            shutil.copyfile(p_leases, self.seeds[0])
            shutil.copyfile(s_leases, self.seeds[1])
            log(f"  dhcpd pair: NORMAL and pool balanced after {time.monotonic() - t0:.0f} s; "
                f"later runs start from copies of these lease files ({seed_dir})")
        return Servers(procs, logs, [p_leases, s_leases], ready_s=round(time.monotonic() - t0, 2))

    def after_load(self, servers: Servers, workdir: Path) -> dict[str, Any]:
        time.sleep(1.0)
        return {}

    def after_stop(self, servers: Servers, workdir: Path) -> dict[str, Any]:
        return binding_agreement(dhcpd_bindings(servers.store_files[0]),
                                 dhcpd_bindings(servers.store_files[1]))


# --------------------------------------------------------------------------------------------
# Scenarios: how perfdhcp is driven. Only plain DORA exists now.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    build: Callable[[int, argparse.Namespace], list[str]]


def dora_command(rate: int, opts: argparse.Namespace) -> list[str]:
    return ["perfdhcp", "-4", "-g", "single", "-l", HOST_IFACE, "-r", str(rate),
            "-R", str(opts.clients), "-p", str(opts.duration), "-n", str(rate * opts.duration),
            "-d", "1"]


def renew_command(rate: int, opts: argparse.Namespace) -> list[str]:
    """Renew storm: RATE new DORAs/s and, once leases exist, RATE renewals/s (perfdhcp
    renews leases it obtained in the same run; -f may not exceed -r)."""
    return [*dora_command(rate, opts), "-f", str(rate)]


def churn_command(rate: int, opts: argparse.Namespace) -> list[str]:
    """Release / re-acquire churn: RATE DORAs/s and RATE RELEASEs/s of obtained leases; the
    25,000 simulated clients keep coming back for a (new) lease."""
    return [*dora_command(rate, opts), "-F", str(rate)]


SCENARIOS = {
    "dora": Scenario("dora", dora_command),
    "renew": Scenario("renew", renew_command),
    "churn": Scenario("churn", churn_command),
}


# --------------------------------------------------------------------------------------------
# perfdhcp output
# --------------------------------------------------------------------------------------------

_NUM = r"([0-9]+(?:\.[0-9]+)?)"


def parse_perfdhcp(text: str) -> dict[str, Any]:
    """Pull rate, per-exchange counters and delays out of perfdhcp 2.x's report."""
    result: dict[str, Any] = {}
    m = re.search(rf"^Rate:\s*{_NUM}", text, re.M)
    if m:
        result["rate"] = float(m.group(1))
    sections = re.split(r"^\*\*\*Statistics for: ", text, flags=re.M)[1:]
    for sec in sections:
        header, _, body = sec.partition("\n")
        name = header.strip(" *")
        key = {"DISCOVER-OFFER": "do", "REQUEST-ACK": "ra"}.get(name)
        if key is None:  # e.g. a renew or release exchange: keep it under its own name
            key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        stats: dict[str, float] = {}
        for field, pat in (
            ("sent", rf"^sent packets:\s*{_NUM}"),
            ("received", rf"^received packets:\s*{_NUM}"),
            ("drops", rf"^drops:\s*{_NUM}"),
            ("rejected", rf"^rejected leases:\s*{_NUM}"),
            ("min_ms", rf"^min delay:\s*{_NUM} ms"),
            ("avg_ms", rf"^avg delay:\s*{_NUM} ms"),
            ("max_ms", rf"^max delay:\s*{_NUM} ms"),
        ):
            fm = re.search(pat, body, re.M)
            if fm:
                stats[field] = float(fm.group(1))
        result[key] = stats
    return result


# --------------------------------------------------------------------------------------------
# One run, one trial (= repeats at one rate), the search.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    rate: int
    ok: bool  # perfdhcp produced a report and the server survived
    exit_code: int | None
    error: str | None
    duration_s: float
    achieved_rate: float | None  # perfdhcp's "Rate:" (4-way exchanges/s)
    do_sent: float
    ra_received: float
    drop_pct: float  # exchanges without their ACK, % of DISCOVERs sent
    offered_ok: bool  # perfdhcp really sent the asked-for load
    do_avg_ms: float | None
    do_max_ms: float | None
    ra_avg_ms: float | None
    ra_max_ms: float | None
    server_cpu_pct: list[float]  # user + system, per server process
    server_sys_pct: list[float]  # the system (kernel) part of it
    client_cpu_pct: float | None
    store_bytes: int
    command: str
    background_pct: float = 0.0  # other load on the machine just before the run
    other_pct: float = 0.0  # CPU used by processes not ours during the run, % of all CPUs
    # Time each server was runnable but kept off its CPU, % of the run: the contention figure.
    server_wait_pct: list[float] = dataclasses.field(default_factory=list)
    # renew storm: renewals sent / answered (the renew exchange of perfdhcp's report)
    renew_sent: float = 0.0
    renew_received: float = 0.0
    ready_s: float = 0.0  # server(s) start until ready (a pair: both in steady state)
    # what the system reported after the load / after stopping (a pair: standby bindings)
    checks: dict[str, Any] = dataclasses.field(default_factory=dict)
    server_commands: list[str] = dataclasses.field(default_factory=list)


def run_once(system: System, topo: Topology, scenario: Scenario, rate: int,
             opts: argparse.Namespace, workroot: Path, index: int) -> RunResult:
    workdir = workroot / f"{system.name}-{rate}-{index}"
    n = 1
    while workdir.exists():  # the same rate measured again (e.g. --rates 1000,1000)
        n += 1
        workdir = workroot / f"{system.name}-{rate}-{index}-{n}"
    workdir.mkdir(parents=True)
    argv = scenario.build(rate, opts)
    env = client_env(opts)
    env_text = "".join(f"{k}={v} " for k, v in (env or {}).items())
    cmd_text = (f"{env_text}ip netns exec {topo.hosts['cli']} nice -n {NICE['value']} "
                f"taskset -c {CLIENT_CPU} " + " ".join(argv))

    def failed(error: str, exit_code: int | None = None) -> RunResult:
        return RunResult(rate, False, exit_code, error, 0.0, None, 0, 0, 100.0, False,
                         None, None, None, None, [], [], None, 0, cmd_text)

    background = wait_quiet(opts)
    spawned = len(SPAWNED)
    try:
        servers = system.start(topo, workdir)
    except StartError as exc:
        return failed(f"server did not start: {exc}")
    server_commands = SPAWNED[spawned:]
    try:
        before = [proc_cpu_ticks(p.pid) for p in servers.procs]
        wait0 = [runqueue_wait_ns(p.pid) for p in servers.procs]
        out_path = workdir / "perfdhcp.out"
        machine0 = busy_ticks()
        t0 = time.monotonic()
        client = spawn(topo.hosts["cli"], CLIENT_CPU, argv, out_path, env)
        spy = start_py_spy(system, servers, opts, workdir)
        _, status, usage = os.wait4(client.pid, 0)
        JANITOR.procs.pop(client.pid, None)
        client.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.monotonic() - t0
        machine1 = busy_ticks()
        after = [proc_cpu_ticks(p.pid) for p in servers.procs]
        wait1 = [runqueue_wait_ns(p.pid) for p in servers.procs]
        dead = [p.pid for p in servers.procs if p.poll() is not None]
        checks = system.after_load(servers, workdir) if not dead else {}
        if spy is not None:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                JANITOR.stop(spy)
            JANITOR.procs.pop(spy.pid, None)
    finally:
        for proc in servers.procs:
            JANITOR.stop(proc)
    if not dead:
        checks.update(system.after_stop(servers, workdir))
    store_bytes = sum(f.stat().st_size for f in servers.store_files if f.exists())
    text = out_path.read_text(errors="replace")
    code = client.returncode
    if dead:
        logs = "\n".join(tail(p) for p in servers.logs)
        return failed(f"server died during the run (pid {dead}): {logs}", code)
    if code not in (0, EXIT_INCOMPLETE):
        return failed(f"perfdhcp exited {code}: {text[-500:]}", code)
    parsed = parse_perfdhcp(text)
    do, ra = parsed.get("do", {}), parsed.get("ra", {})
    if "sent" not in do:
        return failed(f"no DISCOVER-OFFER statistics in perfdhcp output: {text[-500:]}", code)
    do_sent = do["sent"]
    ra_recv = ra.get("received", 0.0)
    # Exchanges that expect an answer: every DORA (counted at its DISCOVER) and, in a renew
    # storm, every renewal. RELEASEs get no answer and are not counted.
    renew = [v for k, v in parsed.items() if isinstance(v, dict) and "renew" in k]
    renew_sent = sum(v.get("sent", 0.0) for v in renew)
    renew_recv = sum(v.get("received", 0.0) for v in renew)
    expected = do_sent + renew_sent
    drop_pct = 100.0 * (expected - ra_recv - renew_recv) / expected if expected else 100.0
    cpu: list[float] = []
    cpu_sys: list[float] = []
    for a, b in zip(after, before, strict=True):
        if a is None or b is None:
            cpu.append(-1.0)
            cpu_sys.append(-1.0)
            continue
        cpu.append(100.0 * (a[0] + a[1] - b[0] - b[1]) / CLK_TCK / elapsed)
        cpu_sys.append(100.0 * (a[1] - b[1]) / CLK_TCK / elapsed)
    client_cpu = 100.0 * (usage.ru_utime + usage.ru_stime) / elapsed
    waits = [100.0 * (w1 - w0) / 1e9 / elapsed if w0 is not None and w1 is not None else -1.0
             for w0, w1 in zip(wait0, wait1, strict=True)]
    ours: float = sum(a[0] + a[1] - b[0] - b[1] for a, b in zip(after, before, strict=True)
               if a is not None and b is not None)
    ours += (usage.ru_utime + usage.ru_stime) * CLK_TCK
    ncpu = os.cpu_count() or 1
    other = max(0.0, 100.0 * (machine1 - machine0 - ours) / CLK_TCK / elapsed / ncpu)
    target = rate * opts.duration
    return RunResult(
        rate=rate, ok=True, exit_code=code, error=None, duration_s=round(elapsed, 2),
        achieved_rate=parsed.get("rate"), do_sent=do_sent, ra_received=ra_recv,
        drop_pct=round(drop_pct, 3), offered_ok=do_sent >= opts.min_offered * target,
        do_avg_ms=do.get("avg_ms"), do_max_ms=do.get("max_ms"),
        ra_avg_ms=ra.get("avg_ms"), ra_max_ms=ra.get("max_ms"),
        server_cpu_pct=[round(c, 1) for c in cpu],
        server_sys_pct=[round(c, 1) for c in cpu_sys], client_cpu_pct=round(client_cpu, 1),
        store_bytes=store_bytes, command=cmd_text, background_pct=background,
        other_pct=round(other, 1), server_wait_pct=[round(w, 1) for w in waits],
        renew_sent=renew_sent, renew_received=renew_recv, ready_s=servers.ready_s,
        checks=checks, server_commands=server_commands,
    )


def start_py_spy(system: System, servers: Servers, opts: argparse.Namespace,
                 workdir: Path) -> subprocess.Popen[bytes] | None:
    """--py-spy DIR: sample the (first) Tandem server during the load, collapsed stacks
    (``--format raw``, one file per run; bench/profile_engine.py --summarize FILE reads it).
    Non-blocking sampling: the server is not paused."""
    if opts.py_spy is None or not system.name.startswith("tandem"):
        return None
    opts.py_spy.mkdir(parents=True, exist_ok=True)
    out = opts.py_spy / f"{system.name}-{workdir.parent.name}-{workdir.name}.txt"
    argv = [str(opts.py_spy_bin), "record", "--pid", str(servers.procs[0].pid),
            "--duration", str(max(1, opts.duration - 1)), "--rate", "250", "--nonblocking",
            "--format", "raw", "-o", str(out)]
    if opts.py_spy_gil:
        argv.append("--gil")  # only the thread holding the GIL: Python CPU, no idle waits
    with open(workdir / "py-spy.log", "wb") as err:
        proc = subprocess.Popen(argv, stdout=err, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    JANITOR.track(proc)
    log(f"  py-spy -> {out}")
    return proc


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


@dataclasses.dataclass
class Trial:
    rate: int
    runs: list[RunResult]
    threshold: float
    discarded: list[RunResult] = dataclasses.field(default_factory=list)

    @property
    def drop_pct(self) -> float:
        return statistics.median(r.drop_pct for r in self.runs)

    @property
    def offered_ok(self) -> bool:
        return sum(r.offered_ok for r in self.runs) * 2 > len(self.runs)

    @property
    def passed(self) -> bool:
        return self.offered_ok and self.drop_pct < self.threshold

    def summary(self) -> dict[str, Any]:
        rs = self.runs
        ncpu = max((len(r.server_cpu_pct) for r in rs), default=0)
        return {
            "rate": self.rate,
            "passed": self.passed,
            "offered_ok": self.offered_ok,
            "drop_pct": round(self.drop_pct, 3),
            "drop_pct_runs": [r.drop_pct for r in rs],
            "achieved_rate": _median([r.achieved_rate for r in rs]),
            "do_avg_ms": _median([r.do_avg_ms for r in rs]),
            "do_max_ms": _median([r.do_max_ms for r in rs]),
            "ra_avg_ms": _median([r.ra_avg_ms for r in rs]),
            "ra_max_ms": _median([r.ra_max_ms for r in rs]),
            "server_cpu_pct": [
                _median([r.server_cpu_pct[i] for r in rs if len(r.server_cpu_pct) > i])
                for i in range(ncpu)
            ],
            "server_sys_pct": [
                _median([r.server_sys_pct[i] for r in rs if len(r.server_sys_pct) > i])
                for i in range(ncpu)
            ],
            "client_cpu_pct": _median([r.client_cpu_pct for r in rs]),
            "store_bytes": _median([float(r.store_bytes) for r in rs]),
            "background_pct": [r.background_pct for r in rs],
            "other_pct": [r.other_pct for r in rs],
            "server_wait_pct": [r.server_wait_pct for r in rs],
            "discarded_contended_runs": len(self.discarded),
            "errors": [r.error for r in rs if r.error],
            "renew_sent": _median([r.renew_sent for r in rs]),
            "renew_received": _median([r.renew_received for r in rs]),
            "ready_s": _median([r.ready_s for r in rs]),
            "checks": [r.checks for r in rs],
        }


def run_trial(system: System, topo: Topology, scenario: Scenario, rate: int,
              opts: argparse.Namespace, workroot: Path) -> Trial:
    runs: list[RunResult] = []
    discarded: list[RunResult] = []
    i = 0
    while len(runs) < opts.repeat:
        r = run_once(system, topo, scenario, rate, opts, workroot, i)
        i += 1
        # A server kept off its CPU while other processes ran: someone else's load spoiled
        # the run. (Threads of one server pinned to one CPU also wait for each other, hence
        # both conditions.)
        if (r.ok and max(r.server_wait_pct, default=0.0) > opts.contended_pct
                and r.other_pct > opts.quiet_pct and len(discarded) < opts.retries):
            log(f"  {system.name} rate {rate}: server waited for its CPU "
                f"{r.server_wait_pct} % of the run (other processes used {r.other_pct} % of "
                f"the machine; drops {r.drop_pct} %); discarding and repeating")
            discarded.append(r)
            continue
        runs.append(r)
        if r.ok:
            log(f"  {system.name} rate {rate}: drops {r.drop_pct:.3f} % (achieved "
                f"{r.achieved_rate}/s, DO {r.do_avg_ms}/{r.do_max_ms} ms, RA "
                f"{r.ra_avg_ms}/{r.ra_max_ms} ms, server CPU {r.server_cpu_pct} % "
                f"(sys {r.server_sys_pct}), "
                f"perfdhcp CPU {r.client_cpu_pct} %, exit {r.exit_code}, server CPU wait "
                f"{r.server_wait_pct} %, other load before/during "
                f"{r.background_pct}/{r.other_pct} %)")
        else:
            log(f"  {system.name} rate {rate}: FAILED: {r.error}")
        # With a majority decided, further repeats cannot change pass/fail, but they do feed
        # the medians; only skip them while searching far from the answer (--fast-search).
        if opts.fast_search and len(runs) * 2 > opts.repeat:
            fails = sum(not (x.offered_ok and x.drop_pct < opts.drop_threshold) for x in runs)
            if fails * 2 > opts.repeat:
                break
    return Trial(rate, runs, opts.drop_threshold, discarded)


def round_rate(rate: float, granularity: int) -> int:
    return max(granularity, round(rate / granularity) * granularity)


def search(system: System, topo: Topology, scenario: Scenario, opts: argparse.Namespace,
           workroot: Path, deadline: float) -> dict[str, Any]:
    """Step up by --step-factor until a trial fails, then bisect to --resolution."""
    trials: list[Trial] = []
    best: Trial | None = None
    worst_fail: int | None = None
    stop_reason = "resolution reached"
    rate = opts.start_rate
    per_run_s = opts.duration + 3.0
    if opts.rates:
        queue = list(opts.rates)
        stop_reason = "fixed rates"
    else:
        queue = []
    while True:
        if opts.rates:
            if not queue:
                break
            rate = queue.pop(0)
        if len(trials) >= opts.max_trials:
            stop_reason = f"max trials ({opts.max_trials})"
            break
        if time.monotonic() + per_run_s * opts.repeat > deadline:
            stop_reason = "time budget (--max-minutes)"
            break
        log(f"{system.name}: trial {len(trials) + 1} at {rate}/s")
        trial = run_trial(system, topo, scenario, rate, opts, workroot)
        trials.append(trial)
        if opts.rates:
            if trial.passed and (best is None or rate > best.rate):
                best = trial
            elif not trial.passed:
                worst_fail = rate if worst_fail is None else min(worst_fail, rate)
            continue
        if all((r.error or "").startswith("server did not start") for r in trial.runs):
            stop_reason = "the server did not start; see errors"
            break
        if trial.passed:
            best = trial
            if rate >= opts.max_rate:
                stop_reason = f"reached --max-rate {opts.max_rate}"
                break
            if worst_fail is None:
                rate = min(opts.max_rate, round_rate(rate * opts.step_factor, 100))
                continue
        else:
            worst_fail = rate if worst_fail is None else min(worst_fail, rate)
            if best is None:
                nxt = round_rate(rate / opts.step_factor, 50)
                if nxt >= rate or nxt < opts.min_rate:
                    stop_reason = f"fails even at {rate}/s"
                    break
                rate = nxt
                continue
        assert best is not None and worst_fail is not None
        lo, hi = best.rate, worst_fail
        if (hi - lo) <= max(opts.resolution * lo, 100):
            break
        rate = round_rate((lo + hi) / 2, 100 if hi - lo > 400 else 50)
        if rate in (lo, hi):
            break
    return search_result(system, scenario, trials, best, worst_fail, stop_reason)


def search_result(system: System, scenario: Scenario, trials: list[Trial], best: Trial | None,
                  worst_fail: int | None, stop_reason: str) -> dict[str, Any]:
    return {
        "system": system.describe(),
        "scenario": scenario.name,
        "sustained_rate": best.rate if best else 0,
        "sustained": best.summary() if best else None,
        "first_failing_rate": worst_fail,
        "stop_reason": stop_reason,
        "trials": [t.summary() for t in trials],
        "runs": [dataclasses.asdict(r) for t in trials for r in t.runs],
        "discarded_runs": [dataclasses.asdict(r) for t in trials for r in t.discarded],
        "commands": sorted({r.command for t in trials for r in t.runs}),
        "server_commands": next((r.server_commands for t in trials for r in t.runs
                                 if r.server_commands), []),
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _fmt(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def markdown(results: list[dict[str, Any]], opts: argparse.Namespace) -> str:
    mode = (f"fixed rate(s) {', '.join(map(str, opts.rates))}/s" if opts.rates
            else "search for the highest sustained rate")
    if opts.interleave:
        mode += ", interleaved (at each rate one trial of every system in turn)"
    lines = [
        f"perfdhcp, {opts.clients} clients, {opts.duration} s per run, fresh server(s) and "
        f"empty store(s) per run, sustained = median drops < {opts.drop_threshold} % over "
        f"{opts.repeat} run(s), {mode}; server (a pair's primary) on CPU {SERVER_CPU}, "
        f"perfdhcp -g single on CPU {CLIENT_CPU} (a pair's partner too).",
    ]
    for scen in dict.fromkeys(r["scenario"] for r in results):
        unit = {"dora": "DORA/s", "renew": "renew rate (-r = -f)/s",
                "churn": "churn rate (-r = -F)/s"}[scen]
        lines += [
            "",
            f"### {scen}: {SCENARIO_TITLES[scen]}",
            "",
            f"| system | sustained {unit} | achieved/s | drop % | avg DO / RA (ms) "
            "| max DO / RA (ms) | server CPU % | perfdhcp CPU % | first failing rate |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for res in results:
            if res["scenario"] != scen:
                continue
            if "skipped" in res:
                lines.append(f"| {res['label']} | skipped: {res['skipped']} | | | | | | | |")
                continue
            s = res["sustained"] or {}
            rate_cell: object = res["sustained_rate"]
            if not s and res["trials"]:
                # nothing passed: show the lowest rate tried, marked as failed
                s = min(res["trials"], key=lambda t: t["rate"])
                rate_cell = f"none (failed at {s['rate']})"
            cpu = " + ".join(_fmt(c, 0) for c in s.get("server_cpu_pct", [])) or "-"
            lines.append(
                f"| {res['system']['label']} | {rate_cell} | "
                f"{_fmt(s.get('achieved_rate'), 0)} | {_fmt(s.get('drop_pct'), 3)} | "
                f"{_fmt(s.get('do_avg_ms'))} / {_fmt(s.get('ra_avg_ms'))} | "
                f"{_fmt(s.get('do_max_ms'), 1)} / {_fmt(s.get('ra_max_ms'), 1)} | {cpu} | "
                f"{_fmt(s.get('client_cpu_pct'), 0)} | {res['first_failing_rate'] or '-'} |"
            )
    lines.append("")
    for res in results:
        if "skipped" in res:
            continue
        note = (f"- {res['system']['name']} / {res['scenario']}: search stopped: "
                f"{res['stop_reason']}")
        s = res["sustained"] or (res["trials"][-1] if res["trials"] else {})
        if s.get("ready_s"):
            note += f"; ready after {s['ready_s']} s (median)"
        if s.get("renew_sent"):
            note += f"; renewals sent/answered {s['renew_sent']:.0f}/{s['renew_received']:.0f}"
        checks = [c for c in s.get("checks", []) if c]
        if checks:
            note += f"; after the run: {json.dumps(checks[0], sort_keys=True)}"
        errors = [e for t in res["trials"] for e in t["errors"]]
        if errors:
            first = " ".join(errors[0].split())
            note += f"; {len(errors)} failed run(s), first: {first[:300]}"
        lines.append(note)
    lines += ["", *ratio_lines(results)]
    by = {(r["system"]["name"], r["scenario"]): r for r in results if "skipped" not in r}
    if ("tandem", "dora") in by and not opts.rates:
        got = by[("tandem", "dora")]["sustained_rate"]
        verdict = "met" if got >= opts.target else "NOT met"
        lines.append(f"Target for Tandem (>= {opts.target} DORA/s, < 1 % drops, durable "
                     f"store): {verdict} ({got}/s)")
    return "\n".join(lines)


SCENARIO_TITLES = {
    "dora": "full DORA exchanges",
    "renew": "renew storm (perfdhcp -r RATE -f RATE: new DORAs plus renewals of obtained "
             "leases; drops count DORAs and renewals without an answer)",
    "churn": "release / re-acquire churn (perfdhcp -r RATE -F RATE)",
}

# (numerator, denominator) system names for the ratio lines, per scenario.
RATIOS = [
    ("tandem", "kea"), ("tandem", "dhcpd"), ("tandem-pair", "kea-ha"),
    ("tandem-pair", "dhcpd-pair"), ("tandem-pair", "tandem"),
    ("tandem-c", "kea"), ("tandem-pair-c", "kea-ha"), ("tandem-pair-c", "dhcpd-pair"),
]


def ratio_lines(results: list[dict[str, Any]]) -> list[str]:
    by = {(r["system"]["name"], r["scenario"]): r for r in results if "skipped" not in r}
    out = []
    for scen in dict.fromkeys(r["scenario"] for r in results):
        for num, den in RATIOS:
            a, b = by.get((num, scen)), by.get((den, scen))
            if a and b and b["sustained_rate"]:
                ratio = a["sustained_rate"] / b["sustained_rate"]
                out.append(f"- {scen}: {num} / {den} = {a['sustained_rate']} / "
                           f"{b['sustained_rate']} = {ratio:.2f}")
    return ["Ratios (sustained rates):", *out] if out else []


def _version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def tandem_revision() -> str:
    """The commit the Tandem under test comes from, and whether src/ differs from it."""
    commit = _version(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", str(REPO_DIR), "status", "--porcelain", "--", "src"])
    return f"git {commit}" + (" + uncommitted changes in src/" if dirty != "?" and dirty
                              else "")


def machine_info(opts: argparse.Namespace) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    return {
        "cpus": f"{os.cpu_count()} x {cpu}",
        "memory": mem,
        "kernel": f"{os.uname().sysname} {os.uname().release}",
        "python": sys.version.split()[0],
        "tandem": tandem_revision(),
        "kea-dhcp4": _version([shutil.which("kea-dhcp4") or "kea-dhcp4", "-v"]),
        "dhcpd": _version([shutil.which("dhcpd") or "dhcpd", "--version"]),
        "perfdhcp": "from kea-admin " + _version(["dpkg-query", "-W", "-f", "${Version}",
                                                   "kea-admin"]),
        "workdir": f"{opts.workdir} (stores)",
    }


def update_results(path: Path, section: list[str]) -> None:
    """Replace the section of ``path`` whose heading is ``section[0]`` (up to the next
    ``## `` heading or the end of the file), or append it; create the file if needed."""
    heading = section[0]
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *section]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        lines[start:end] = section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def results_section(title: str, report: str, commands: list[str], argv: Sequence[str],
                    stamp: str, elapsed_s: float, json_path: Path) -> list[str]:
    """``--results-section``: this run as one section of an existing results file."""
    return [
        f"## {title}",
        "",
        f"Written by `bench/dora.py` on {stamp} UTC in {elapsed_s / 60:.1f} min, "
        f"{tandem_revision()}.",
        "",
        report,
        "",
        "```sh",
        ".venv/bin/python bench/dora.py " + shlex.join(argv),
        "```",
        "",
        "perfdhcp, each run (RATE varies):",
        "",
        "```sh",
        *commands[:1],
        "```",
        "",
        f"Every run: `{json_path}` (not committed).",
        "",
    ]


def results_markdown(report: str, commands: list[str], info: dict[str, str],
                     opts: argparse.Namespace, argv: Sequence[str], stamp: str,
                     elapsed_s: float, json_path: Path, results: list[dict[str, Any]]) -> str:
    servers: list[str] = []
    seen: set[str] = set()
    for res in results:
        name = res["system"]["name"]
        if res.get("server_commands") and name not in seen:
            seen.add(name)
            servers += [f"# {res['system']['label']}", *res["server_commands"]]
    quick = " (QUICK MODE: one rate, one run, short: a smoke test, not a result)" \
        if opts.quick else ""
    lines = [
        "# Benchmark results",
        "",
        f"Written by `bench/dora.py` on {stamp} UTC in {elapsed_s / 60:.1f} min{quick}. "
        "How it measures: bench/README.md. Compare ratios, not absolute rates: these depend "
        "on the host (docs/benchmarking.md quotes Kea at ~20,000 DORA/s on faster cores).",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        "## Results",
        "",
        report,
        "",
        "## Exact commands",
        "",
        "```sh",
        "cd " + str(REPO_DIR),
        ".venv/bin/python bench/dora.py " + " ".join(argv),
        "```",
        "",
        "perfdhcp, each run (in the client namespace; RATE varies, -n = RATE x duration):",
        "",
        "```sh",
        *commands,
        "```",
        "",
        "Servers (first run of each system; configs rendered from bench/configs/ into a "
        "fresh directory per run):",
        "",
        "```sh",
        *servers,
        "```",
        "",
        f"Every run, every discarded run and the options: `{json_path}` (not committed).",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

ALL_SYSTEMS = "tandem-pair,tandem,tandem-c,kea,kea-ha,dhcpd,dhcpd-pair"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--systems", default="kea,tandem",
                   help=f"comma-separated, in order; 'all' = {ALL_SYSTEMS}")
    p.add_argument("--scenarios", default="dora",
                   help="comma-separated: dora, renew, churn. dora runs for every system; "
                        "renew and churn only for those in --scenario-systems")
    p.add_argument("--scenario-systems", default="tandem,kea",
                   help="systems that also run the renew / churn scenarios")
    p.add_argument("--repeat", type=int, default=3, help="runs per rate; the median counts")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: one rate (--quick-rate), 1 run, 3 s per run")
    p.add_argument("--quick-rate", type=int, default=1000, help="the rate of --quick")
    p.add_argument("--duration", type=int, default=10, help="seconds per run (perfdhcp -p)")
    p.add_argument("--clients", type=int, default=25000, help="simulated clients (perfdhcp -R)")
    p.add_argument("--interleave", action="store_true",
                   help="with --rates: at each rate one trial of every system in turn "
                   "(fresh namespaces each), so that a drift of the host's speed weighs on "
                   "all alike")
    p.add_argument("--client-rcvbuf", type=int, default=4 * 1024 * 1024, metavar="BYTES",
                   help="give perfdhcp's sockets this receive buffer (an LD_PRELOAD shim, "
                   "bench/shim/rcvbuf.c, built with gcc): with the kernel's default (208 KiB) "
                   "perfdhcp, busy at 99 %% of its core, drops replies that arrive in bursts; "
                   "0 = the kernel default")
    p.add_argument("--drop-threshold", type=float, default=1.0,
                   help="a rate is sustained when median drops are below this %%")
    p.add_argument("--start-rate", type=int, default=1000)
    p.add_argument("--step-factor", type=float, default=2.0,
                   help="multiply the rate by this while trials pass")
    p.add_argument("--max-rate", type=int, default=30000,
                   help="do not go above (perfdhcp -g single tops out near 25,000/s)")
    p.add_argument("--min-rate", type=int, default=100)
    p.add_argument("--resolution", type=float, default=0.05,
                   help="stop bisecting when (fail - pass) <= this fraction of pass")
    p.add_argument("--max-trials", type=int, default=12, help="rates tried per system")
    p.add_argument("--max-minutes", type=float, default=40.0,
                   help="overall time budget, shared among the (system, scenario) jobs")
    p.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="measure exactly these rates (comma-separated) instead of searching")
    p.add_argument("--min-offered", type=float, default=0.95,
                   help="a run counts only if perfdhcp sent at least this fraction of "
                        "rate*duration DISCOVERs (otherwise the client, not the server, "
                        "is the limit)")
    p.add_argument("--fast-search", action="store_true",
                   help="stop repeating a rate once a majority of runs failed")
    p.add_argument("--quiet-pct", type=float, default=10.0,
                   help="before each run, wait while other processes keep more than this "
                        "%% of all CPUs busy (this machine is shared)")
    p.add_argument("--quiet-wait", type=float, default=10.0,
                   help="longest wait (s) for the machine to calm down before a run")
    p.add_argument("--contended-pct", type=float, default=5.0,
                   help="a run during which a server waited for its CPU (runnable, not "
                        "running) more than this %% of the time while other processes used "
                        "more than --quiet-pct of the machine is discarded and repeated "
                        "(up to --retries per rate)")
    p.add_argument("--retries", type=int, default=2,
                   help="per rate, how many contended runs may be discarded and repeated")
    p.add_argument("--nice", type=int, default=-20,
                   help="niceness of the servers and perfdhcp, to shield them from other "
                        "work on a shared machine (same for every system; 0 = off)")
    p.add_argument("--lease-time", type=int, default=3600, help="lease time given (s)")
    p.add_argument("--mclt", type=int, default=3600, help="pairs: MCLT (s)")
    p.add_argument("--reserve-percent", type=int, default=5,
                   help="Tandem pair: the standby's reserve (BACKUP share of the free pool)")
    p.add_argument("--kea-ha-threads", type=int, default=2,
                   help="Kea HA pair: DHCP and HTTP threads per peer (the dedicated HTTP "
                        "listener needs multi-threading)")
    p.add_argument("--sync-timeout", type=float, default=600.0,
                   help="pairs: longest wait (s) for both peers to reach their steady state")
    p.add_argument("--dhcpd-seed", type=Path, default=None, metavar="DIR",
                   help="dhcpd pair: start every run from the lease files in DIR (NORMAL, pool "
                        "balanced, no binding; written there by the first start when absent) "
                        "instead of waiting out pool balancing once per invocation")
    p.add_argument("--target", type=int, default=5000,
                   help="Tandem's goal in sustained DORA/s (reported as met / not met)")
    p.add_argument("--tandem-bin", type=Path, default=REPO_DIR / ".venv" / "bin" / "tandem")
    p.add_argument("--tandem-log-level", default="warning",
                   help="tandem serve --log-level (Kea runs at WARN too)")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"),
                   help="where temporary stores go (must be a real disk, not tmpfs)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="JSON results directory")
    p.add_argument("--results", type=Path, default=None,
                   help="also write a markdown report (table, ratios, commands, machine) here, "
                        "e.g. bench/RESULTS.md")
    p.add_argument("--results-section", default=None, metavar="TITLE",
                   help="with --results: write this run as the section '## TITLE' of that "
                        "file (replacing a section of that title, else appended) instead of "
                        "writing the whole file")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary directory (configs, logs, stores)")
    p.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                   help="sample each Tandem server with py-spy during every run; collapsed "
                        "stacks go to DIR (see docs/performance.md)")
    p.add_argument("--py-spy-gil", action="store_true",
                   help="with --py-spy: sample only the thread holding the GIL (Python CPU "
                        "time; without it epoll and fsync waits count as busy frames)")
    p.add_argument("--py-spy-bin", type=Path,
                   default=Path(shutil.which("py-spy") or "py-spy"),
                   help="the py-spy executable")
    opts = p.parse_args(argv)
    if opts.systems == "all":
        opts.systems = ALL_SYSTEMS
    if opts.quick:
        opts.repeat = 1
        opts.duration = 3
        opts.rates = opts.rates or [opts.quick_rate]
    if opts.interleave and not opts.rates:
        p.error("--interleave needs --rates (the rates every system is measured at)")
    for name in opts.scenarios.split(","):
        if name.strip() not in SCENARIOS:
            p.error(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    return opts


def make_system(name: str, opts: argparse.Namespace) -> System:
    if name == "kea":
        return KeaSingle(opts.lease_time)
    if name == "tandem":
        return TandemSingle(opts.lease_time, opts.tandem_bin, opts.tandem_log_level)
    if name == "tandem-pair":
        return TandemPair(opts.lease_time, opts.tandem_bin, opts.tandem_log_level, opts.mclt,
                          opts.reserve_percent, opts.sync_timeout)
    if name == "tandem-c":
        return TandemSingleCompiled(opts.lease_time, opts.tandem_bin, opts.tandem_log_level)
    if name == "tandem-pair-c":
        return TandemPairCompiled(opts.lease_time, opts.tandem_bin, opts.tandem_log_level,
                                  opts.mclt, opts.reserve_percent, opts.sync_timeout)
    if name == "kea-ha":
        return KeaHaPair(opts.lease_time, opts.kea_ha_threads)
    if name == "dhcpd":
        return DhcpdSingle(opts.lease_time)
    if name == "dhcpd-pair":
        return DhcpdPair(opts.lease_time, opts.mclt, opts.sync_timeout, opts.dhcpd_seed)
    raise SystemExit(f"unknown system {name!r} (known: {ALL_SYSTEMS})")


def make_topology(system: System) -> Topology:
    topo = Topology.create(f"tdm-bench-{os.getpid()}")
    try:
        system.build_topology(topo)
        topo.add_host("cli", CLIENT_IP)
    except BaseException:
        remove_topology(topo)
        raise
    return topo


def remove_topology(topo: Topology) -> None:
    for ns in reversed([*topo.hosts.values(), topo.base]):
        run(["ip", "netns", "del", ns], check=False)
        with contextlib.suppress(ValueError):
            JANITOR.namespaces.remove(ns)


def interleaved(jobs: list[tuple[System, Scenario]], opts: argparse.Namespace,
                workroot: Path, deadline: float) -> list[dict[str, Any]]:
    """--interleave (with --rates): at each rate one trial of every job in turn, in fresh
    namespaces, instead of one job's whole search after the other. The speed of this VM
    drifts over minutes (Kea single sustained 25,600 DORA/s in one run and failed at 19,500
    forty minutes later, with the machine otherwise idle); interleaved, a drift weighs on
    every system alike. A system that failed two rates in a row is not tried higher."""
    trials: list[list[Trial]] = [[] for _ in jobs]
    stop_reason = "fixed rates, interleaved"
    per_trial_s = (opts.duration + 3.0) * opts.repeat
    for rate, i in ((rate, i) for rate in opts.rates for i in range(len(jobs))):
        if time.monotonic() + per_trial_s > deadline:
            stop_reason = "time budget (--max-minutes)"
            break
        if len(trials[i]) >= 2 and not (trials[i][-1].passed or trials[i][-2].passed):
            continue  # failed the last two rates
        system, scenario = jobs[i]
        log(f"{system.name}/{scenario.name}: {rate}/s (interleaved)")
        topo = make_topology(system)
        try:
            trial = run_trial(system, topo, scenario, rate, opts, workroot / scenario.name)
        finally:
            remove_topology(topo)
        trials[i].append(trial)
    out = []
    for (system, scenario), done in zip(jobs, trials, strict=True):
        best = max((t for t in done if t.passed), key=lambda t: t.rate, default=None)
        worst = min((t.rate for t in done if not t.passed), default=None)
        res = search_result(system, scenario, done, best, worst, stop_reason)
        log(f"{system.name}/{scenario.name}: sustained {res['sustained_rate']}/s "
            f"({stop_reason})")
        out.append(res)
    return out


SHIM_SOURCE = BENCH_DIR / "shim" / "rcvbuf.c"


def build_rcvbuf_shim(out_dir: Path) -> Path | None:
    """Compile bench/shim/rcvbuf.c (the LD_PRELOAD shim of --client-rcvbuf); None (and a
    warning) without gcc or when it fails: perfdhcp then runs with the kernel's buffer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / "rcvbuf.so"
    gcc = shutil.which("gcc")
    if gcc is None:
        log("warning: no gcc: --client-rcvbuf ignored (perfdhcp keeps the kernel's buffer)")
        return None
    res = subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(SHIM_SOURCE),
                          "-ldl"], capture_output=True, text=True)
    if res.returncode != 0:
        log(f"warning: building the rcvbuf shim failed, --client-rcvbuf ignored: {res.stderr}")
        return None
    return lib


def client_env(opts: argparse.Namespace) -> dict[str, str] | None:
    """perfdhcp's environment: the receive-buffer shim when --client-rcvbuf is on."""
    if not opts.client_rcvbuf or opts.rcvbuf_shim is None:
        return None
    return {"LD_PRELOAD": str(opts.rcvbuf_shim), "TANDEM_BENCH_RCVBUF": str(opts.client_rcvbuf)}


def preflight() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench/dora.py needs root (network namespaces, raw sockets)")
    for tool in ("ip", "taskset", "ss", "perfdhcp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (make sysdeps installs kea-admin for perfdhcp)")
    if (os.cpu_count() or 1) < 2:
        log("warning: fewer than 2 CPUs; server and perfdhcp will share a core")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(argv)
    preflight()
    opts.rcvbuf_shim = None
    if opts.client_rcvbuf:
        shim_dir = Path(tempfile.mkdtemp(prefix="tdm-bench-shim-"))
        atexit.register(shutil.rmtree, shim_dir, True)
        opts.rcvbuf_shim = build_rcvbuf_shim(shim_dir)
    NICE["value"] = opts.nice
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    atexit.register(JANITOR.cleanup)
    started = time.monotonic()
    deadline = started + opts.max_minutes * 60
    names = [n.strip() for n in opts.systems.split(",") if n.strip()]
    systems = [make_system(n, opts) for n in names]
    extra_for = {n.strip() for n in opts.scenario_systems.split(",")}
    jobs: list[tuple[System, Scenario]] = []
    for scen_name in [n.strip() for n in opts.scenarios.split(",") if n.strip()]:
        for system in systems:
            if scen_name == "dora" or system.name in extra_for:
                jobs.append((system, SCENARIOS[scen_name]))
    results: list[dict[str, Any]] = []
    workroot = Path(tempfile.mkdtemp(prefix=f"tdm-bench-{os.getpid()}-", dir=opts.workdir))
    JANITOR.dirs.append(workroot)
    JANITOR.keep_dirs = opts.keep
    log(f"work directory {workroot}; {len(jobs)} job(s)")
    ready: list[tuple[System, Scenario]] = []  # --interleave: measured together afterwards
    try:
        for i, (system, scenario) in enumerate(jobs):
            reason = system.available()
            if reason:
                log(f"{system.name}: skipped: {reason}")
                results.append({"system": system.describe(), "label": system.label,
                                "scenario": scenario.name, "skipped": reason})
                continue
            if opts.interleave:
                ready.append((system, scenario))
                continue
            # Share what is left of the budget among the jobs still to run.
            share = (deadline - time.monotonic()) / (len(jobs) - i)
            topo = make_topology(system)
            try:
                res = search(system, topo, scenario, opts, workroot / scenario.name,
                             time.monotonic() + share)
            finally:
                remove_topology(topo)
            results.append(res)
            log(f"{system.name}/{scenario.name}: sustained {res['sustained_rate']}/s "
                f"({res['stop_reason']})")
        if ready:
            results += interleaved(ready, opts, workroot, deadline)
    finally:
        JANITOR.cleanup()
    report = markdown(results, opts)
    commands = sorted({c for r in results for c in r.get("commands", [])})
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    opts.out.mkdir(parents=True, exist_ok=True)
    out_file = opts.out / f"dora-{stamp}.json"
    info = machine_info(opts)
    elapsed = round(time.monotonic() - started, 1)
    out_file.write_text(json.dumps({
        "started": stamp,
        "elapsed_s": elapsed,
        "host": info,
        "argv": argv,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "markdown": report,
        "results": results,
    }, indent=2))
    print(report)
    print("\nperfdhcp commands used (rate varies; -n = rate x duration):")
    for c in commands:
        print(f"    {c}")
    print(f"\nJSON: {out_file}")
    if opts.results is not None:
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
        json_rel = out_file.relative_to(REPO_DIR) if out_file.is_relative_to(REPO_DIR) \
            else out_file
        if opts.results_section:
            update_results(opts.results, results_section(opts.results_section, report,
                                                         commands, argv, when, elapsed,
                                                         json_rel))
        else:
            opts.results.write_text(results_markdown(report, commands, info, opts, argv, when,
                                                     elapsed, json_rel, results))
        print(f"report: {opts.results}")
    if opts.keep:
        print(f"kept: {workroot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
