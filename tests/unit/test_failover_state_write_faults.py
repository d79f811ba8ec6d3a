"""The failover state record failing (disk full, I/O error) in a real hot-standby pair on
loopback, with an injected store whose meta writes fail (the real-disk version is
tests/e2e/test_disk_full.py::test_failover_state_write_on_a_full_disk).

Draft-12: a server records its state (and start time) before acting on it. When the standby
loses the primary and cannot record COMMUNICATIONS-INTERRUPTED, it stays in NORMAL -- the
last state it recorded, in which a hot standby hands out nothing -- raises the alarm (log,
``tandem status``, counters), retries every second, and enters COMMUNICATIONS-INTERRUPTED
by itself once the store takes writes again (no restart); then it serves from its reserve.

No root needed: DHCP on an unprivileged port, the failover link on 127.0.0.x. Waits are
for real events on real sockets, each bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from tandem.api.control import ControlHandler
from tandem.config import load_text
from tandem.errors import StoreError
from tandem.failover.peer import META_STATE_KEY
from tandem.leases.model import Lease
from tandem.service import Server
from tandem.store import open_store
from tandem.store.base import LeaseStore
from tandem.wire.dhcp import (
    OPT_CLIENT_ID,
    OPT_MESSAGE_TYPE,
    OPT_REQUESTED_IP,
    OPT_SERVER_ID,
    DhcpMessage,
    MessageType,
    decode,
    encode,
)
from tandem.wire.failover import ServerState

PRIMARY, STANDBY, RELAY = "127.0.0.1", "127.0.0.6", "127.0.0.2"
MCLT = 300


def free_port(host: str, kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pair_config(role: str, me: str, partner: str, dhcp_port: int, fo_ports: dict[str, int],
                tmp: Path) -> str:
    return f"""
[server]
listen_address = "{me}"
port = {dhcp_port}
raw_replies = false
control_socket = ""
[store]
path = "{tmp / role / 'leases.db'}"
[[subnets]]
prefix = "192.0.2.0/24"
relay_addresses = ["{RELAY}"]
pools = [{{ start = "192.0.2.100", end = "192.0.2.199" }}]
lease_time_s = 600
[failover]
name = "state-write-pair"
role = "{role}"
listen_address = "{me}"
listen_port = {fo_ports[me]}
peer_address = "{partner}"
peer_port = {fo_ports[partner]}
mclt_s = {MCLT}
reserve_percent = 20
"""


class MetaFailingStore:
    """The real store, whose meta writes (the failover state record) can be made to fail."""

    def __init__(self, inner: LeaseStore) -> None:
        self.inner = inner
        self.fail_meta = False
        self.meta_failures = 0

    def load(self) -> list[Lease]:
        return self.inner.load()

    def commit(self, leases: Iterable[Lease]) -> None:
        self.inner.commit(leases)

    def get_meta(self, key: str) -> str | None:
        return self.inner.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        if self.fail_meta:
            self.meta_failures += 1
            raise StoreError("database or disk is full (test)")
        self.inner.set_meta(key, value)

    def close(self) -> None:
        self.inner.close()


class Relay:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((RELAY, port))
        self.sock.setblocking(False)

    def send(self, msg: DhcpMessage) -> None:
        msg.giaddr = IPv4Address(RELAY)
        msg.hops = 1
        for host in (PRIMARY, STANDBY):
            self.sock.sendto(encode(msg), (host, self.port))

    async def recv(self, timeout: float = 5.0) -> DhcpMessage:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        def readable() -> None:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            if not got.done():
                got.set_result(data)

        loop.add_reader(self.sock.fileno(), readable)
        try:
            return decode(await asyncio.wait_for(got, timeout))
        finally:
            loop.remove_reader(self.sock.fileno())


def client(n: int, mt: MessageType, extra: dict[int, bytes] | None = None) -> DhcpMessage:
    mac = bytes((2, 0, 0, 0, 7, n))
    opts = {OPT_MESSAGE_TYPE: bytes((mt,)), OPT_CLIENT_ID: b"\x01" + mac, **(extra or {})}
    return DhcpMessage(xid=0x7000 + n, chaddr=mac + b"\x00" * 10, options=opts)


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)  # polling state that real sockets and threads change


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_standby_that_cannot_record_its_state_does_not_act_on_it(
    tmp_path: Path, loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tandem")
    errors: list[dict[str, Any]] = []
    dhcp_port = free_port(RELAY)
    fo_ports = {PRIMARY: free_port(PRIMARY, socket.SOCK_STREAM),
                STANDBY: free_port(STANDBY, socket.SOCK_STREAM)}
    cfg_p = load_text(pair_config("primary", PRIMARY, STANDBY, dhcp_port, fo_ports, tmp_path))
    cfg_s = load_text(pair_config("secondary", STANDBY, PRIMARY, dhcp_port, fo_ports, tmp_path))

    async def body() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
        relay = Relay(dhcp_port)
        store = MetaFailingStore(open_store(cfg_s.store))
        primary, standby = Server(cfg_p), Server(cfg_s, store=store)
        await primary.start()
        await standby.start()
        try:
            s_peer = standby.failover_peer
            p_peer = primary.failover_peer
            assert s_peer is not None and p_peer is not None
            await until(lambda: p_peer.state is ServerState.NORMAL
                        and s_peer.state is ServerState.NORMAL, "both servers in NORMAL")
            await until(lambda: s_peer.reserve_counts()[1] == 20, "the standby's reserve")
            control = ControlHandler(standby)
            status = control.status(0.0)
            assert status["failover"]["state_write"]["ok"] is True

            # The disk fills (meta writes only), then the primary goes away.
            store.fail_meta = True
            await primary.stop()
            await until(lambda: s_peer.m.persist_failing_since is not None,
                        "the failed state write")
            # It did not act on COMMUNICATIONS-INTERRUPTED: still NORMAL, not serving.
            assert s_peer.state is ServerState.NORMAL and not s_peer.m.connected
            meta = json.loads(store.inner.get_meta(META_STATE_KEY) or "{}")
            assert meta["state"] == int(ServerState.NORMAL)
            status = control.status(0.0)
            sw = status["failover"]["state_write"]
            assert sw["ok"] is False and sw["alarm"] == "FAILOVER_STATE_WRITE_FAILED"
            assert "disk is full" in sw["error"]
            assert sw["pending"] == "COMMUNICATIONS-INTERRUPTED"
            assert status["failover"]["state"] == "NORMAL"
            assert status["counters"]["failover_state_write_failed"] >= 1
            relay.send(client(1, MessageType.DISCOVER))
            with pytest.raises(TimeoutError):  # nobody answers: NORMAL standby, no primary
                await relay.recv(timeout=0.5)
            # It retries about once a second (not in a tight loop).
            n = store.meta_failures
            await asyncio.sleep(2.5)
            assert n + 1 <= store.meta_failures <= n + 4
            assert s_peer.state is ServerState.NORMAL

            # Space again: by itself, without a restart, it records and enters CI.
            store.fail_meta = False
            await until(lambda: s_peer.state is ServerState.COMMUNICATIONS_INTERRUPTED,
                        "COMMUNICATIONS-INTERRUPTED after the store recovered", timeout=5)
            meta = json.loads(store.inner.get_meta(META_STATE_KEY) or "{}")
            assert meta["state"] == int(ServerState.COMMUNICATIONS_INTERRUPTED)
            status = control.status(0.0)
            assert status["failover"]["state_write"] == {
                "ok": True, "alarm": None, "failing_since": None, "error": None,
                "pending": None}
            assert status["counters"]["failover_state_write_recoveries"] == 1
            # and now serves a new client from its reserve
            relay.send(client(2, MessageType.DISCOVER))
            offer = await relay.recv()
            assert offer.message_type is MessageType.OFFER
            relay.send(client(2, MessageType.REQUEST, {
                OPT_REQUESTED_IP: offer.yiaddr.packed,
                OPT_SERVER_ID: offer.options[OPT_SERVER_ID]}))
            while True:  # the first client's DISCOVER retransmission is not sent: only ours
                ack = await relay.recv()
                if ack.xid == 0x7002:
                    break
            assert ack.message_type is MessageType.ACK and ack.yiaddr == offer.yiaddr
        finally:
            await standby.stop()
            await primary.stop()
            store.close()
            relay.sock.close()

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(asyncio.wait_for(body(), 60))
    else:
        asyncio.run(asyncio.wait_for(body(), 60))
    assert errors == [], errors
    lines = [r for r in caplog.records if r.getMessage().startswith("FAILOVER_STATE_WRITE")]
    failed = [r for r in lines if r.getMessage().startswith("FAILOVER_STATE_WRITE_FAILED ")]
    recovered = [r for r in lines if r.getMessage().startswith("FAILOVER_STATE_WRITE_RECOVERED")]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR  # at most every 10 s
    assert "to=COMMUNICATIONS_INTERRUPTED" in failed[0].getMessage()
    assert len(recovered) == 1
    assert not [r for r in caplog.records if "INTERNAL_ERROR" in r.getMessage()]
