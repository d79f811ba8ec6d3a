"""Network namespaces, links and processes for the end-to-end tests.

A :class:`Lab` owns everything it creates: namespaces named ``tdm-e2e-<random>-<role>``
(so parallel runs never collide), the links inside them and the processes it started.
:meth:`Lab.close` stops those processes by PID (SIGTERM, then SIGKILL) and deletes the
namespaces, which takes every veth and bridge with them. Links are created inside the
namespaces (never in the host's), so interface names can be short and fixed (``eth0``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

NS_PREFIX = "tdm-e2e-"


class LabError(RuntimeError):
    pass


def sh(argv: Sequence[str], *, check: bool = True, timeout: float = 30) -> str:
    """Run a short command, return its stdout; raise with stderr when it fails."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``probe`` until it returns something other than None/False (e2e only: this
    waits on real processes and real timers, there is no clock to drive)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Proc:
    """A process started by the lab; output goes to ``log``."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None):
        self.name = name
        self.argv = argv
        self.log = log
        self._out: IO[bytes] = log.open("wb")
        self.popen = subprocess.Popen(
            argv,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        """Signal this PID, wait, SIGKILL if it does not go; returns the exit status."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            if self.wait(timeout) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._out.close()
        return self.popen.returncode

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(10)

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


class Netns:
    def __init__(self, lab: Lab, name: str):
        self.lab = lab
        self.name = name

    def argv(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def sh(self, *cmd: str, check: bool = True, timeout: float = 30) -> str:
        return sh(self.argv(*cmd), check=check, timeout=timeout)

    def ip(self, *args: str, check: bool = True) -> str:
        return sh(["ip", "-n", self.name, *args], check=check)

    def sysctl(self, key: str, value: str) -> None:
        self.sh("sysctl", "-q", "-w", f"{key}={value}")

    def spawn(self, name: str, *cmd: str, env: dict[str, str] | None = None) -> Proc:
        """Start ``cmd`` in this namespace. ``ip netns exec`` execs the command, so the
        PID we keep is the command's own."""
        return self.lab.spawn(name, self.argv(*cmd), env=env)

    def addresses(self, dev: str) -> list[str]:
        out = self.ip("-4", "-o", "addr", "show", "dev", dev, check=False)
        return [line.split()[3] for line in out.splitlines() if " inet " in line]

    def mac(self, dev: str) -> str:
        out = self.ip("-o", "link", "show", "dev", dev)
        words = out.split()
        return words[words.index("link/ether") + 1]

    def udp_bound(self, port: int) -> bool:
        out = self.sh("ss", "-H", "-u", "-a", "-n", f"sport = :{port}", check=False)
        return bool(out.strip())


class Lab:
    """Everything one test module builds; torn down by :meth:`close` even on failure."""

    def __init__(self, workdir: Path):
        self.id = secrets.token_hex(3)
        self.prefix = f"{NS_PREFIX}{self.id}-"
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.namespaces: list[Netns] = []
        self.procs: list[Proc] = []
        self.finalizers: list[Callable[[], object]] = []

    # -- building -----------------------------------------------------------------
    def netns(self, role: str) -> Netns:
        ns = Netns(self, self.prefix + role)
        sh(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def failover_pair(
        self, lan_ip: dict[str, str], fo_ip: dict[str, str]
    ) -> tuple[Netns, dict[str, Netns]]:
        """A client LAN (bridge ``br0`` in namespace "lan") with a primary and a secondary
        server namespace on it (``lan_ip[role]``/24), and the failover link as a veth pair
        ``fo0`` straight between the two (``fo_ip[role]``/24)."""
        lan = self.netns("lan")
        self.bridge(lan)
        servers = {}
        for role in ("primary", "secondary"):
            ns = self.netns(role[:4])
            self.plug(lan, "br0", ns, address=f"{lan_ip[role]}/24")
            servers[role] = ns
        p, s = servers["primary"], servers["secondary"]
        p.ip("link", "add", "fo0", "type", "veth", "peer", "name", "fo0", "netns", s.name)
        for role, ns in servers.items():
            ns.ip("addr", "add", f"{fo_ip[role]}/24", "dev", "fo0")
            ns.ip("link", "set", "fo0", "up")
        return lan, servers

    def bridge(self, ns: Netns, name: str = "br0") -> None:
        ns.ip("link", "add", name, "type", "bridge", "forward_delay", "0", "stp_state", "0")
        ns.ip("link", "set", name, "up")

    def plug(
        self,
        bridge_ns: Netns,
        bridge: str,
        ns: Netns,
        dev: str = "eth0",
        *,
        mac: str | None = None,
        address: str | None = None,
    ) -> None:
        """A veth from ``ns``/``dev`` into ``bridge`` (in ``bridge_ns``)."""
        port = f"p{len(self.namespaces)}{secrets.token_hex(2)}"
        bridge_ns.ip("link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns.name)
        bridge_ns.ip("link", "set", port, "master", bridge)
        bridge_ns.ip("link", "set", port, "up")
        if mac:
            ns.ip("link", "set", "dev", dev, "address", mac)
        ns.ip("link", "set", dev, "up")
        if address:
            ns.ip("addr", "add", address, "dev", dev)

    # -- processes ----------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        full_env = None
        if env is not None:
            full_env = dict(os.environ)
            full_env.update(env)
        proc = Proc(name, argv, log, full_env)
        self.procs.append(proc)
        return proc

    # -- teardown -----------------------------------------------------------------
    def on_close(self, fn: Callable[[], object]) -> None:
        self.finalizers.append(fn)

    def close(self) -> None:
        for fn in reversed(self.finalizers):
            with contextlib.suppress(Exception):
                fn()
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop(timeout=3)
        for ns in reversed(self.namespaces):
            sh(["ip", "netns", "del", ns.name], check=False)
        self.namespaces.clear()
