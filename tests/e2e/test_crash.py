"""Durability before reply: kill -9 the server in the middle of a burst of clients, then
every ACK that reached the wire must have its lease in the store.

perfdhcp (kea-admin) plays the clients. It always behaves as a relay (giaddr = its own
address 203.0.113.2, port 67 to 67), so the server selects 198.18.0.0/16 through that
subnet's ``relay_addresses``. tshark captures in perfdhcp's namespace, i.e. what left the
server and reached the wire. After "some hundreds" of ACKs the server is killed with
SIGKILL; the store is read offline; then the server is restarted and must serve again
with the earlier leases intact.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass

import pytest

from .capture import ACK, Capture, Pkt
from .conftest import require
from .netns import Lab, Netns, Proc, wait_for
from .servers import Server, ServerSpec, StoredLease, SubnetSpec, make_server

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(180)]

SERVER_IP = "192.0.2.1"
PERF_IP = "203.0.113.2"
BENCH_NET = "198.18.0.0/16"
KILL_AFTER_ACKS = 300
RATE = 500  # exchanges per second
CLIENTS = 20000


@dataclass
class CrashResult:
    acks: dict[str, Pkt]  # yiaddr -> last ACK seen on the wire for it
    leases_after_kill: list[StoredLease]
    leases_after_restart: list[StoredLease]
    acks_when_killed: int
    killed_at: float
    ack_times: list[float]
    second_run_output: str
    second_run_rc: int | None
    server: Server


def _perfdhcp(ns: Netns, name: str, rate: int, clients: int, exchanges: int, period_s: int) -> Proc:
    argv = [
        "perfdhcp",
        "-4",
        "-g",
        "single",
        "-l",
        "eth0",
        "-r",
        str(rate),
        "-R",
        str(clients),
        "-n",
        str(exchanges),
        "-p",
        str(period_s),
        "-d",
        "2",
        SERVER_IP,
    ]
    if shutil.which("taskset") and len(_cpus()) > 1:
        argv = ["taskset", "-c", str(_cpus()[-1]), *argv]
    return ns.spawn(name, *argv)


def _cpus() -> list[int]:
    import os

    return sorted(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def crash(module_lab: Lab) -> CrashResult:
    require("perfdhcp")
    lab = module_lab
    lan = lab.netns("lan")
    lab.bridge(lan)
    srv = lab.netns("srv")
    lab.plug(lan, "br0", srv, address=f"{SERVER_IP}/24")
    srv.ip("route", "add", "203.0.113.0/24", "dev", "eth0")
    pf = lab.netns("perf")
    lab.plug(lan, "br0", pf, address=f"{PERF_IP}/24")
    pf.ip("route", "add", "192.0.2.0/24", "dev", "eth0")

    spec = ServerSpec(
        SERVER_IP,
        "eth0",
        (
            SubnetSpec("192.0.2.0/24", ("192.0.2.100", "192.0.2.199"), 3600),
            SubnetSpec(
                BENCH_NET, ("198.18.0.10", "198.18.255.250"), 3600, relay_addresses=(PERF_IP,)
            ),
        ),
    )
    server = make_server(srv, spec, lab.workdir)
    server.start()
    cap = Capture(pf, "eth0", lab.workdir / "perf.pcapng", count_acks=True).start()
    burst = _perfdhcp(pf, "perfdhcp-burst", RATE, CLIENTS, RATE * 20, 20)
    wait_for(
        lambda: cap.acks_seen >= KILL_AFTER_ACKS or not burst.alive(),
        30,
        f"{KILL_AFTER_ACKS} ACKs on the wire",
    )
    assert burst.alive(), f"perfdhcp ended early:\n{burst.tail()}"
    acks_when_killed = cap.acks_seen
    killed_at = time.time()
    server.kill9()
    burst.stop()
    packets = cap.stop()
    acks: dict[str, Pkt] = {}
    for p in packets:
        if p.mtype == ACK:
            acks[p.yiaddr] = p  # the last one wins (an address may change hands)
    leases_after_kill = server.leases()

    server.start()
    again = _perfdhcp(pf, "perfdhcp-again", 50, 50, 100, 5)
    rc = again.wait(30)
    out = again.output()
    server.stop()
    leases_after_restart = server.leases()
    ack_times = [p.time for p in packets if p.mtype == ACK]
    return CrashResult(
        acks,
        leases_after_kill,
        leases_after_restart,
        acks_when_killed,
        killed_at,
        ack_times,
        out,
        rc,
        server,
    )


def _missing(acks: dict[str, Pkt], leases: list[StoredLease]) -> list[str]:
    by_addr = {lease.address: lease for lease in leases}
    bad = []
    for addr, ack in sorted(acks.items()):
        lease = by_addr.get(addr)
        if lease is None:
            bad.append(f"{addr} ({ack.chaddr}) missing")
        elif lease.hwaddr != ack.chaddr or lease.state != "ACTIVE":
            bad.append(f"{addr} ACKed to {ack.chaddr}, stored {lease.hwaddr} {lease.state}")
    return bad


def test_every_ack_on_the_wire_is_in_the_store_after_kill9(crash: CrashResult) -> None:
    print(
        f"\ncrash: {crash.acks_when_killed} ACKs counted live at kill, "
        f"{len(crash.acks)} distinct ACKed addresses in the capture, "
        f"{len(crash.leases_after_kill)} leases in the store after kill -9"
    )
    assert len(crash.acks) >= KILL_AFTER_ACKS * 0.9, (
        f"only {len(crash.acks)} ACKed addresses captured"
    )
    # the kill landed mid-burst: ACKs were still flowing in the half second before it
    assert any(crash.killed_at - 0.5 <= t <= crash.killed_at for t in crash.ack_times)
    assert max(crash.ack_times) < crash.killed_at + 0.5, "ACKs after the kill?"
    bad = _missing(crash.acks, crash.leases_after_kill)
    assert not bad, f"{len(bad)} of {len(crash.acks)} ACKed leases not durable: {bad[:20]}"


def test_server_serves_again_after_restart(crash: CrashResult) -> None:
    out = crash.second_run_output
    # perfdhcp: exit 0 when every exchange completed, 3 when some did not
    assert crash.second_run_rc in (0, 3), out
    pairs = [
        (int(s), int(r))
        for s, r in re.findall(r"sent packets: (\d+)\s+received packets: (\d+)", out)
    ]
    # DISCOVER-OFFER and REQUEST-ACK; a packet lost to a cold ARP cache is tolerated
    assert len(pairs) >= 2, out
    for sent, received in pairs[:2]:
        assert sent >= 50 and received >= 0.95 * sent, out


def test_leases_survive_the_restart(crash: CrashResult) -> None:
    bad = _missing(crash.acks, crash.leases_after_restart)
    assert not bad, f"{len(bad)} leases lost or changed across the restart: {bad[:20]}"
    assert len(crash.leases_after_restart) >= len(crash.leases_after_kill)
