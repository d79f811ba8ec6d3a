"""dhclient, udhcpc and dhcpcd against the server, in parallel, on one bridged LAN.

One scenario per client, all three at once (about 50 s in total):
  obtain an address -> renew by unicast at T1 (ACKed) -> unicast to the server dropped
  in the client's namespace -> rebind by broadcast (ACKed) -> unblock -> release.
Everything asserted comes from a tshark capture in the server's namespace and from the
server's lease store; the clients' hook logs only tell the scenario when to move on.

Lease 30 s (udhcpc's shortest honoured lease, real-clients.md), T1 15 s, T2 26 s.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .capture import ACK, BROADCAST_IP, RELEASE, REQUEST, Capture, Pkt
from .clients import BOUND_EVENTS, CLIENTS, DhcpClient
from .conftest import require
from .netns import Lab, Netns
from .servers import Server, ServerSpec, StoredLease, SubnetSpec, make_server

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(240)]

SERVER_IP = "192.0.2.1"
PREFIX = "192.0.2.0/24"
POOL = ("192.0.2.100", "192.0.2.199")
LEASE_S, T1_S, T2_S = 30, 15, 26
MACS = {
    "dhclient": "02:00:5e:e2:e0:01",
    "udhcpc": "02:00:5e:e2:e0:02",
    "dhcpcd": "02:00:5e:e2:e0:03",
}
# When each client is expected to rebind once unicast renewals fail, in seconds after the
# ACK that restarted its lease (real-clients.md): dhclient and dhcpcd at T2; udhcpc
# broadcasts about 2 s after one failed unicast renewal, i.e. soon after T1.
REBIND_WINDOW = {
    "dhclient": (T2_S - 2.0, T2_S + 3.0),
    "dhcpcd": (T2_S - 2.0, T2_S + 3.0),
    "udhcpc": (T1_S, T2_S + 3.0),
}


@dataclass
class Run:
    """What one client did, as seen by the scenario driver."""

    client: DhcpClient
    mac: str
    error: BaseException | None = None
    steps: list[str] = field(default_factory=list)
    blocked_at: float = 0.0


@dataclass
class Result:
    runs: dict[str, Run]
    packets: list[Pkt]
    leases: list[StoredLease]
    server: Server
    workdir: Path

    def of(self, mac: str) -> list[Pkt]:
        return [p for p in self.packets if p.chaddr == mac]

    def context(self, name: str) -> str:
        run = self.runs[name]
        pk = "\n".join(p.short() for p in self.of(run.mac))
        return (
            f"\n--- steps: {run.steps}\n--- error: {run.error!r}\n--- packets:\n{pk}"
            f"\n--- client log:\n{run.client.log_tail()}"
            f"\n--- server log:\n{self.server.log_tail(25)}\n--- workdir: {self.workdir}"
        )


def drive(run: Run) -> None:
    """obtain -> renew -> block unicast -> rebind -> unblock -> release."""
    c = run.client
    try:
        c.start()
        bound = c.wait_event({"BOUND", "REBOOT"}, timeout=30)
        run.steps.append(f"bound {bound.address}")
        renewed = c.wait_event({"RENEW"}, timeout=LEASE_S + 10, after=bound.time)
        run.steps.append("renewed")
        # Unicast to the server now goes to our own MAC, which the bridge drops (it never
        # sends a frame back out of the port it came in on). Routes cannot do this: a
        # socket bound to the device (udhcpc) sends on-link even past a blackhole route.
        c.ns.ip("neigh", "replace", SERVER_IP, "lladdr", run.mac, "dev", "eth0", "nud", "permanent")
        run.blocked_at = time.time()
        rebound = c.wait_event(BOUND_EVENTS, timeout=LEASE_S + 10, after=renewed.time)
        run.steps.append(f"rebound ({rebound.event})")
        c.ns.ip("neigh", "del", SERVER_IP, "dev", "eth0")
        c.release()
        run.steps.append("released")
    except BaseException as exc:  # reported per client by the tests
        run.error = exc
    finally:
        c.stop()


def build_lan(lab: Lab, names: list[str]) -> tuple[Netns, dict[str, Netns]]:
    lan = lab.netns("lan")
    lab.bridge(lan)
    srv = lab.netns("srv")
    lab.plug(lan, "br0", srv, address=f"{SERVER_IP}/24")
    clients = {}
    for name in names:
        ns = lab.netns(name[:7])
        lab.plug(lan, "br0", ns, mac=MACS[name])
        for key in ("all", "default", "eth0"):
            ns.sysctl(f"net.ipv4.conf.{key}.rp_filter", "0")
        clients[name] = ns
    return srv, clients


@pytest.fixture(scope="module")
def result(module_lab: Lab) -> Result:
    require("dhclient", "udhcpc", "dhcpcd")
    lab = module_lab
    srv, nss = build_lan(lab, list(CLIENTS))
    spec = ServerSpec(
        SERVER_IP, "eth0", (SubnetSpec(PREFIX, POOL, LEASE_S, T1_S, T2_S, routers=(SERVER_IP,)),)
    )
    server = make_server(srv, spec, lab.workdir)
    server.start()
    cap = Capture(srv, "eth0", lab.workdir / "server.pcapng").start()
    runs = {name: Run(cls(nss[name], lab.workdir), MACS[name]) for name, cls in CLIENTS.items()}
    threads = [threading.Thread(target=drive, args=(r,), name=n) for n, r in runs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LEASE_S * 4)
    packets = cap.stop()
    leases = server.leases()
    server.stop()
    return Result(runs, packets, leases, server, lab.workdir)


def _ack_for(pkts: list[Pkt], req: Pkt, within: float = 3.0) -> Pkt | None:
    for p in pkts:
        if (
            p.mtype == ACK
            and p.xid == req.xid
            and p.chaddr == req.chaddr
            and req.time <= p.time <= req.time + within
        ):
            return p
    return None


def _first_ack(pkts: list[Pkt]) -> Pkt:
    acks = [p for p in pkts if p.mtype == ACK]
    assert acks, "no ACK for this client in the capture"
    return acks[0]


def _renewal(pkts: list[Pkt], addr: str) -> Pkt | None:
    """First RENEWING request: ciaddr set, unicast to the server."""
    for p in pkts:
        if p.mtype == REQUEST and p.ciaddr == addr and p.ip_dst == SERVER_IP:
            return p
    return None


def _rebind(pkts: list[Pkt], addr: str, after: float) -> Pkt | None:
    """First REBINDING request after ``after``: ciaddr set, broadcast."""
    for p in pkts:
        if p.mtype == REQUEST and p.ciaddr == addr and p.ip_dst == BROADCAST_IP and p.time > after:
            return p
    return None


NAMES = list(CLIENTS)


@pytest.mark.parametrize("name", NAMES)
def test_obtains_address_from_pool(result: Result, name: str) -> None:
    run = result.runs[name]
    pkts = result.of(run.mac)
    ack = _first_ack(pkts)
    addr = ipaddress.IPv4Address(ack.yiaddr)
    lo, hi = (ipaddress.IPv4Address(a) for a in POOL)
    assert lo <= addr <= hi, result.context(name)
    assert ack.lease_time == LEASE_S, result.context(name)
    assert ack.server_id == SERVER_IP, result.context(name)
    assert run.steps and run.steps[0] == f"bound {ack.yiaddr}", result.context(name)


@pytest.mark.parametrize("name", NAMES)
def test_renews_by_unicast_at_t1(result: Result, name: str) -> None:
    run = result.runs[name]
    pkts = result.of(run.mac)
    first = _first_ack(pkts)
    req = _renewal(pkts, first.yiaddr)
    assert req is not None, "no unicast RENEWING request" + result.context(name)
    assert req.eth_dst != "ff:ff:ff:ff:ff:ff", result.context(name)
    delay = req.time - first.time
    # dhclient picks its renewal between 3/4 T1 and T1; the others renew at T1
    assert 0.75 * T1_S - 1 <= delay <= T1_S + 2, f"renewed after {delay:.1f} s" + result.context(
        name
    )
    ack = _ack_for(pkts, req)
    assert ack is not None, "renewal not ACKed" + result.context(name)
    assert ack.yiaddr == first.yiaddr and ack.lease_time == LEASE_S, result.context(name)
    # RFC 2131 §4.1: a reply to a client in RENEWING goes unicast to ciaddr
    assert ack.ip_dst == first.yiaddr, result.context(name)


@pytest.mark.parametrize("name", NAMES)
def test_rebinds_by_broadcast_when_unicast_fails(result: Result, name: str) -> None:
    run = result.runs[name]
    pkts = result.of(run.mac)
    first = _first_ack(pkts)
    assert run.blocked_at, "unicast to the server was never blocked" + result.context(name)
    # the ACK that last restarted the lease before unicast was blocked
    restart = [p for p in pkts if p.mtype == ACK and p.time < run.blocked_at][-1]
    req = _rebind(pkts, first.yiaddr, after=run.blocked_at)
    assert req is not None, "no broadcast REBINDING request" + result.context(name)
    assert 54 not in req.option_codes, "REBINDING request must not carry a server id"
    lo, hi = REBIND_WINDOW[name]
    delay = req.time - restart.time
    assert lo <= delay <= hi, f"rebound {delay:.1f} s after the lease restarted" + result.context(
        name
    )
    # the blocked unicast renewals never reached the server
    blocked = [
        p
        for p in pkts
        if p.mtype == REQUEST and p.ip_dst == SERVER_IP and run.blocked_at < p.time < req.time
    ]
    assert not blocked, result.context(name)
    ack = _ack_for(pkts, req)
    assert ack is not None, "rebind not ACKed" + result.context(name)
    assert ack.yiaddr == first.yiaddr, result.context(name)


@pytest.mark.parametrize("name", NAMES)
def test_release_leaves_lease_released_in_store(result: Result, name: str) -> None:
    run = result.runs[name]
    assert run.error is None, result.context(name)
    pkts = result.of(run.mac)
    addr = _first_ack(pkts).yiaddr
    rel = [p for p in pkts if p.mtype == RELEASE]
    assert rel, "no RELEASE on the wire" + result.context(name)
    assert rel[-1].ciaddr == addr and rel[-1].ip_dst == SERVER_IP, result.context(name)
    stored = [lease for lease in result.leases if lease.address == addr]
    assert stored, f"{addr} not in the store: {result.leases}" + result.context(name)
    assert stored[0].state == "RELEASED", f"{stored[0]}" + result.context(name)
    assert stored[0].hwaddr == run.mac, f"{stored[0]}" + result.context(name)
