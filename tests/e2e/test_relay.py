"""A client behind ISC dhcrelay (with option 82) gets an address from the relayed subnet.

  [srv 192.0.2.1] --br0-- [relay up0 192.0.2.2 | down0 198.51.100.1] --br1-- [client]

dhcrelay runs with ``-a``: it adds the relay agent information option (82, circuit id =
the downstream interface name) and, as RFC 3046 §2.2 requires, expects the server to echo
it (it strips it before the reply reaches the client). The server's subnet 198.51.100.0/24
is selected by giaddr 198.51.100.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass

import pytest

from .capture import ACK, DISCOVER, OFFER, REQUEST, Capture, Pkt
from .clients import Dhclient
from .conftest import require
from .netns import Lab
from .servers import Server, ServerSpec, StoredLease, SubnetSpec, make_server

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

SERVER_IP = "192.0.2.1"
RELAY_UP = "192.0.2.2"
RELAY_DOWN = "198.51.100.1"
REMOTE_NET = ipaddress.ip_network("198.51.100.0/24")
CLIENT_MAC = "02:00:5e:e2:e0:21"
CIRCUIT = "down0"


@dataclass
class RelayResult:
    packets: list[Pkt]
    client_addresses: list[str]
    leases: list[StoredLease]
    server: Server
    relay_log: str
    client_log: str

    def context(self) -> str:
        pk = "\n".join(p.short() + f" ci82={p.circuit_id!r}" for p in self.packets)
        return (
            f"\n--- packets (server side):\n{pk}\n--- relay:\n{self.relay_log}"
            f"\n--- client:\n{self.client_log}\n--- server:\n{self.server.log_tail(20)}"
        )


def _circuit_is(value: str, expected: str) -> bool:
    # tshark shows the circuit id as text or as hex bytes depending on its content
    return value in (
        expected,
        expected.encode().hex(),
        ":".join(f"{b:02x}" for b in expected.encode()),
    )


@pytest.fixture(scope="module")
def relayed(module_lab: Lab) -> RelayResult:
    require("dhcrelay", "dhclient")
    lab = module_lab
    lan = lab.netns("lan")
    lab.bridge(lan, "br0")
    lab.bridge(lan, "br1")
    srv = lab.netns("srv")
    lab.plug(lan, "br0", srv, address=f"{SERVER_IP}/24")
    srv.ip("route", "add", str(REMOTE_NET), "via", RELAY_UP)
    relay = lab.netns("relay")
    lab.plug(lan, "br0", relay, "up0", address=f"{RELAY_UP}/24")
    lab.plug(lan, "br1", relay, "down0", address=f"{RELAY_DOWN}/24")
    cns = lab.netns("client")
    lab.plug(lan, "br1", cns, mac=CLIENT_MAC)

    spec = ServerSpec(
        SERVER_IP,
        "eth0",
        (
            SubnetSpec("192.0.2.0/24", ("192.0.2.100", "192.0.2.199"), 600),
            SubnetSpec(
                str(REMOTE_NET), ("198.51.100.100", "198.51.100.199"), 600, routers=(RELAY_DOWN,)
            ),
        ),
    )
    server = make_server(srv, spec, lab.workdir)
    server.start()
    cap = Capture(srv, "eth0", lab.workdir / "server.pcapng").start()
    relay_proc = relay.spawn(
        "dhcrelay",
        "dhcrelay",
        "-4",
        "-d",
        "-a",
        "-pf",
        str(lab.workdir / "dhcrelay.pid"),
        "-id",
        "down0",
        "-iu",
        "up0",
        SERVER_IP,
    )
    client = Dhclient(cns, lab.workdir)
    client.start()
    with contextlib.suppress(TimeoutError, RuntimeError):  # the tests report it
        client.wait_event({"BOUND", "REBOOT"}, timeout=30)
    addresses = cns.addresses("eth0")
    packets = cap.stop()
    leases = server.leases()
    client.stop()
    return RelayResult(packets, addresses, leases, server, relay_proc.tail(20), client.log_tail())


def test_client_gets_address_from_relayed_subnet(relayed: RelayResult) -> None:
    assert relayed.client_addresses, "client got no address" + relayed.context()
    addr = ipaddress.ip_interface(relayed.client_addresses[0])
    assert addr.ip in REMOTE_NET and addr.network == REMOTE_NET, relayed.context()
    stored = [lease for lease in relayed.leases if lease.address == str(addr.ip)]
    assert stored and stored[0].state == "ACTIVE", relayed.context()
    assert stored[0].hwaddr == CLIENT_MAC, relayed.context()


def test_requests_arrive_relayed_with_option_82(relayed: RelayResult) -> None:
    mine = [p for p in relayed.packets if p.chaddr == CLIENT_MAC]
    requests = [p for p in mine if p.mtype in (DISCOVER, REQUEST)]
    assert requests, "no client message reached the server" + relayed.context()
    for p in requests:
        assert p.ip_src == RELAY_UP and p.giaddr == RELAY_DOWN, relayed.context()
        assert p.sport == 67 and p.dport == 67, relayed.context()
        assert p.has_agent_info and _circuit_is(p.circuit_id, CIRCUIT), relayed.context()


def test_replies_go_to_relay_and_echo_option_82(relayed: RelayResult) -> None:
    mine = [p for p in relayed.packets if p.chaddr == CLIENT_MAC]
    replies = [p for p in mine if p.mtype in (OFFER, ACK)]
    assert any(p.mtype == OFFER for p in replies), "no OFFER" + relayed.context()
    acks = [p for p in replies if p.mtype == ACK]
    assert acks, "no ACK" + relayed.context()
    for p in replies:
        # RFC 2131 §4.1: replies to a relayed message go to giaddr, server port 67
        assert p.ip_dst == RELAY_DOWN and p.dport == 67, relayed.context()
        assert p.giaddr == RELAY_DOWN, relayed.context()
        # RFC 3046 §2.2: the server copies option 82 into its reply
        assert p.has_agent_info and _circuit_is(p.circuit_id, CIRCUIT), relayed.context()
    assert ipaddress.ip_address(acks[-1].yiaddr) in REMOTE_NET, relayed.context()
