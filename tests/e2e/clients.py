"""Drivers for the real DHCP clients: dhclient, udhcpc (busybox) and dhcpcd.

Each client runs in the foreground in its own namespace with ``client-hook.sh`` as its
event script (through a per-client wrapper that names the log file, since dhclient and
dhcpcd hand their script a fresh environment). The hook log is how the test knows *when*
something happened (to block unicast after the first renewal, to release at the end); what
happened on the wire is asserted from captures.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path

from .netns import Netns, Proc, sh, wait_for

HOOK = Path(__file__).resolve().parent / "client-hook.sh"

# Events after which the client holds an address, per client (hook log names).
BOUND_EVENTS = {"BOUND", "REBOOT", "RENEW", "REBIND"}


@dataclass(frozen=True, slots=True)
class HookEvent:
    time: float
    event: str
    address: str


class DhcpClient:
    name = "?"
    binary = "?"

    def __init__(self, ns: Netns, workdir: Path, dev: str = "eth0"):
        self.ns = ns
        self.dev = dev
        self.workdir = workdir
        self.hook_log = workdir / f"{self.name}-hook.log"
        self.script = workdir / f"{self.name}-hook.sh"
        self.script.write_text(
            "#!/bin/sh\n"
            f"TDM_HOOK_LOG='{self.hook_log}'\nTDM_HOOK_CLIENT='{self.name}'\n"
            "export TDM_HOOK_LOG TDM_HOOK_CLIENT\n"
            f"exec /bin/sh '{HOOK}' \"$@\"\n"
        )
        self.script.chmod(0o755)
        self.proc: Proc | None = None

    # -- lifecycle ----------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.proc = self.ns.spawn(f"client-{self.name}", *self.command())

    def release(self) -> None:
        """Release the lease and end the client."""
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    # -- observation --------------------------------------------------------------
    def events(self) -> list[HookEvent]:
        try:
            text = self.hook_log.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                out.append(HookEvent(float(parts[0]), parts[1].upper(), parts[2]))
        return out

    def wait_event(self, names: set[str], timeout: float, after: float = 0.0) -> HookEvent:
        def probe() -> HookEvent | None:
            for ev in self.events():
                if ev.event in names and ev.time > after:
                    return ev
            if self.proc is not None and not self.proc.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.proc.tail()}")
            return None

        return wait_for(probe, timeout, f"{self.name} event {sorted(names)}")

    def log_tail(self) -> str:
        return self.proc.tail(40) if self.proc else ""


class Dhclient(DhcpClient):
    name = "dhclient"
    binary = "dhclient"

    def __init__(self, ns: Netns, workdir: Path, dev: str = "eth0"):
        super().__init__(ns, workdir, dev)
        self.pidfile = workdir / "dhclient.pid"
        self.leasefile = workdir / "dhclient.leases"
        self.conffile = workdir / "dhclient.conf"
        self.conffile.write_text(
            "request subnet-mask, broadcast-address, routers, domain-name-servers;\n"
            # retransmit every 1-2 s, so that a 30 s lease's [T2, expiry) window of 4 s
            # sees a REBINDING request (default backoff skips it)
            "timeout 60;\nretry 5;\ninitial-interval 1;\nbackoff-cutoff 2;\n"
        )

    def _common(self) -> list[str]:
        return [
            "-4",
            "-v",
            "-sf",
            str(self.script),
            "-pf",
            str(self.pidfile),
            "-lf",
            str(self.leasefile),
            "-cf",
            str(self.conffile),
        ]

    def command(self) -> list[str]:
        return ["dhclient", "-d", *self._common(), self.dev]

    def release(self) -> None:
        # `dhclient -r` stops the running instance named by the pid file and sends RELEASE
        rel = self.ns.spawn("client-dhclient-release", "dhclient", "-r", *self._common(), self.dev)
        if rel.wait(30) is None:
            raise TimeoutError(f"dhclient -r did not finish:\n{rel.tail()}")
        if self.proc is not None and self.proc.wait(10) is None:
            self.proc.stop()


class Udhcpc(DhcpClient):
    name = "udhcpc"
    binary = "udhcpc"

    def command(self) -> list[str]:
        return [
            "udhcpc",
            "-f",
            "-i",
            self.dev,
            "-s",
            str(self.script),
            "-t",
            "10",
            "-T",
            "2",
            "-A",
            "2",
        ]

    def release(self) -> None:
        assert self.proc is not None
        self.proc.send(signal.SIGUSR2)  # release the lease (state: released)
        self.wait_event({"DECONFIG"}, 10, after=time.time() - 0.5)
        self.proc.stop(signal.SIGTERM)


class Dhcpcd(DhcpClient):
    """dhcpcd keeps state in /var/lib/dhcpcd and /run/dhcpcd: it runs in a private mount
    namespace with a tmpfs over both, so nothing of it reaches the host."""

    name = "dhcpcd"
    binary = "dhcpcd"

    def __init__(self, ns: Netns, workdir: Path, dev: str = "eth0"):
        super().__init__(ns, workdir, dev)
        self.conffile = workdir / "dhcpcd.conf"
        self.conffile.write_text(
            "ipv4only\nnoipv4ll\nnoarp\nnoipv6rs\n"
            "option subnet_mask, routers, domain_name_servers\n"
            "require dhcp_server_identifier\n"
        )

    def command(self) -> list[str]:
        inner = (
            "mount -t tmpfs tdm-e2e /run && mkdir -p /run/dhcpcd && "
            "mount -t tmpfs tdm-e2e /var/lib/dhcpcd && "
            f"exec dhcpcd -B -4 -d -f '{self.conffile}' -c '{self.script}' {self.dev}"
        )
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", inner]

    def release(self) -> None:
        assert self.proc is not None
        # talk to the running dhcpcd through its control socket in its mount namespace
        sh(
            ["nsenter", "-t", str(self.proc.pid), "-m", "-n", "dhcpcd", "-4", "-k", self.dev],
            timeout=30,
        )
        if self.proc.wait(10) is None:
            self.proc.stop()


CLIENTS: dict[str, type[DhcpClient]] = {c.name: c for c in (Dhclient, Udhcpc, Dhcpcd)}
