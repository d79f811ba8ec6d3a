"""Binding updates wait for the store (the DST's seeds 2107/789, through the real service).

A hot-standby pair of real services on loopback (no root needed; the harness of
test_failover_pair_loopback.py). The primary's store is made to fail, or to hang, while a
client asks for a lease: the ACK is withheld and so is the BNDUPD of that lease (it stays in
the primary's update queue, held); the standby learns nothing. Once the store commits again,
the client's retransmitted REQUEST is ACKed and the BNDUPD reaches the standby.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from tandem.config import load_text
from tandem.errors import StoreError
from tandem.leases.model import BindingState, Lease
from tandem.service import Server
from tandem.store import open_store
from tandem.wire.dhcp import OPT_REQUESTED_IP, OPT_SERVER_ID, DhcpMessage, MessageType
from tandem.wire.failover import ServerState

from .test_failover_pair_loopback import (
    PRIMARY,
    STANDBY,
    Relay,
    client,
    free_port,
    pair_config,
    until,
)


class FlakyStore:
    """The real store, whose commits can be made to fail or to block (a hung disk)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()
        self.blocked = threading.Event()  # a commit is blocked at the gate

    def commit(self, leases: Iterable[Lease]) -> None:
        batch = list(leases)
        if not self.gate.is_set():
            self.blocked.set()
            self.gate.wait(30)
        if self.fail:
            raise StoreError("disk on fire (test)")
        self.inner.commit(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _request(n: int, offer: DhcpMessage) -> DhcpMessage:
    return client(n, MessageType.REQUEST, {
        OPT_REQUESTED_IP: offer.yiaddr.packed, OPT_SERVER_ID: offer.options[OPT_SERVER_ID]})


@pytest.mark.parametrize("mode", ["fail", "hang"])
def test_standby_gets_no_bndupd_before_the_primary_committed_the_lease(
    tmp_path: Path, mode: str
) -> None:
    errors: list[dict[str, Any]] = []
    dhcp_port = free_port("127.0.0.2")
    fo_ports = {PRIMARY: free_port(PRIMARY, socket.SOCK_STREAM),
                STANDBY: free_port(STANDBY, socket.SOCK_STREAM)}
    cfg_p = load_text(pair_config("primary", PRIMARY, STANDBY, dhcp_port, fo_ports, tmp_path))
    cfg_s = load_text(pair_config("secondary", STANDBY, PRIMARY, dhcp_port, fo_ports, tmp_path))
    (tmp_path / "primary").mkdir(parents=True, exist_ok=True)
    store = FlakyStore(open_store(cfg_p.store))

    async def body() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
        relay = Relay(dhcp_port)
        primary, standby = Server(cfg_p, store=store), Server(cfg_s)  # type: ignore[arg-type]
        await primary.start()
        await standby.start()
        try:
            p_peer, s_peer = primary.failover_peer, standby.failover_peer
            assert p_peer is not None and s_peer is not None
            await until(lambda: p_peer.state is ServerState.NORMAL
                        and s_peer.state is ServerState.NORMAL, "both servers in NORMAL")
            await until(lambda: s_peer.reserve_counts()[1] == 20, "the standby's reserve")
            await until(lambda: p_peer.updates.pending_count == 0
                        and p_peer.updates.in_flight_count == 0, "the reserve moves ACKed")

            relay.send(client(1, MessageType.DISCOVER))
            src, offer = await relay.recv()
            assert src == PRIMARY and offer.message_type is MessageType.OFFER
            addr: IPv4Address = offer.yiaddr
            await primary.flush()
            if mode == "fail":
                store.fail = True
            else:
                store.gate.clear()
            relay.send(_request(1, offer))
            if mode == "fail":
                await until(lambda: primary.stats["store_write_failed"] >= 1,
                            "the failed commit")
                await primary.flush()  # and its done-callback has run
            else:
                await until(store.blocked.is_set, "the commit blocked in the store")
            # The burst ran and its link flush too: the update is queued, held, not sent.
            q = p_peer.updates
            assert q.is_pending(addr) and q.is_held(addr)
            assert all(u.address != addr for u in q.in_flight().values())
            assert primary.stats["acks_sent"] == 0
            known = s_peer.engine.table.get_ip(addr)
            assert known is None or known.state is not BindingState.ACTIVE

            # The store works again: the REQUEST is ACKed, then the standby learns it.
            store.fail = False
            store.gate.set()
            if mode == "fail":
                relay.send(_request(1, offer))  # the client retransmits
            src, ack = await relay.recv()
            assert (src, ack.message_type, ack.yiaddr) == (PRIMARY, MessageType.ACK, addr)

            def standby_knows() -> bool:
                lease = s_peer.engine.table.get_ip(addr)
                return lease is not None and lease.state is BindingState.ACTIVE

            await until(standby_knows, "the binding update at the standby")
            assert not q.is_held(addr) and q.held_count == 0
        finally:
            store.gate.set()
            await standby.stop()
            await primary.stop()
            relay.sock.close()

    try:
        asyncio.run(asyncio.wait_for(body(), 60))
    finally:
        store.inner.close()
    assert errors == [], errors
