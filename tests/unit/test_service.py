"""The service on loopback with a real engine and a real SQLite store in tmp_path.

A UDP socket on 127.0.0.2 plays the relay agent (the subnet is selected by relay address);
every wait is for an actual datagram, with a timeout. The event loop's exception handler
fails the test if anything reaches it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from _build import EXPECTED_BUILD

from tandem.clock import FakeClock
from tandem.config import Config, Pool, ServerSection, StoreSection, Subnet
from tandem.errors import StoreError
from tandem.leases.model import BindingState, Lease
from tandem.log import RateLimit
from tandem.service import EXIT_OK, EXIT_START_FAILED, Server, serve
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

SERVER = "127.0.0.1"
RELAY = "127.0.0.2"
SUBNET = IPv4Network("192.0.2.0/24")


def run_checked(body: Callable[[], Awaitable[None]], timeout: float = 20) -> None:
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        await asyncio.wait_for(body(), timeout=timeout)

    asyncio.run(main())
    assert errors == [], errors


def make_config(tmp_path: Path, port: int, window_ms: float = 2.0) -> Config:
    return Config(
        server=ServerSection(
            listen_address=IPv4Address(SERVER), port=port, client_port=port + 1,
            raw_replies=False, control_socket=str(tmp_path / "control.sock"),
        ),
        store=StoreSection(path=str(tmp_path / "leases.db"), group_commit_window_ms=window_ms),
        subnets=[
            Subnet(
                id=1,
                prefix=SUBNET,
                pools=[Pool(start=IPv4Address("192.0.2.10"), end=IPv4Address("192.0.2.250"))],
                relay_addresses=[IPv4Address(RELAY)],
                lease_time_s=600,
            )
        ],
    )


class CountingStore:
    """Wraps the real store: records every commit, can be told to fail."""

    def __init__(self, inner: LeaseStore) -> None:
        self.inner = inner
        self.commits: list[list[Lease]] = []
        self.fail = False
        self.hold: threading.Event | None = None  # set: commits wait for it

    def load(self) -> list[Lease]:
        return self.inner.load()

    def commit(self, leases: Iterable[Lease]) -> None:
        batch = [lease.copy() for lease in leases]
        if self.hold is not None:
            assert self.hold.wait(10), "the test never released the held commit"
        if self.fail:
            raise StoreError("disk on fire (test)")
        self.inner.commit(batch)
        self.commits.append(batch)

    def get_meta(self, key: str) -> str | None:
        return self.inner.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        self.inner.set_meta(key, value)

    def close(self) -> None:
        self.inner.close()


class Relay:
    """A relay agent on 127.0.0.2 at the server's port."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((RELAY, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    def send(self, msg: DhcpMessage) -> None:
        msg.giaddr = IPv4Address(RELAY)
        msg.hops = 1
        self.sock.sendto(encode(msg), (SERVER, self.port))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, (SERVER, self.port))

    async def recv(self, timeout: float = 5.0) -> DhcpMessage:
        loop = asyncio.get_running_loop()
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 4096), timeout)
        assert addr == (SERVER, self.port)
        return decode(data)

    def close(self) -> None:
        self.sock.close()


def mac(i: int) -> bytes:
    return bytes([0x02, 0x00, 0x00, 0x00, i >> 8, i & 0xFF])


def client_msg(i: int, mtype: MessageType, extra: dict[int, bytes] | None = None) -> DhcpMessage:
    options = {OPT_MESSAGE_TYPE: bytes([mtype]), OPT_CLIENT_ID: b"\x01" + mac(i)}
    options.update(extra or {})
    return DhcpMessage(xid=0x1000 + i, chaddr=mac(i) + b"\x00" * 10, options=options)


def request_for(i: int, offer: DhcpMessage) -> DhcpMessage:
    return client_msg(
        i, MessageType.REQUEST,
        {OPT_REQUESTED_IP: offer.yiaddr.packed, OPT_SERVER_ID: offer.options[OPT_SERVER_ID]},
    )


class Harness:
    def __init__(
        self, tmp_path: Path, clock: FakeClock | None = None, window_ms: float = 2.0
    ) -> None:
        self.relay = Relay()
        self.config = make_config(tmp_path, self.relay.port, window_ms)
        self.store = CountingStore(open_store(self.config.store))
        self.server = Server(self.config, store=self.store, clock=clock)

    async def __aenter__(self) -> Harness:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()
        self.store.close()
        self.relay.close()

    def stored(self) -> dict[IPv4Address, Lease]:
        """What a fresh connection to the database sees (durability check)."""
        other = open_store(self.config.store)
        try:
            return {lease.address: lease for lease in other.load()}
        finally:
            other.close()


def test_relayed_dora_offer_then_ack_lease_durable_when_ack_arrives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tandem")

    async def body() -> None:
        async with Harness(tmp_path) as h:
            h.relay.send(client_msg(1, MessageType.DISCOVER))
            offer = await h.relay.recv()
            assert offer.message_type is MessageType.OFFER
            assert offer.xid == 0x1001
            assert offer.yiaddr in SUBNET
            # server_id is not configured: the address the request reached is used
            assert offer.options[OPT_SERVER_ID] == IPv4Address(SERVER).packed

            h.relay.send(request_for(1, offer))
            ack = await h.relay.recv()
            assert ack.message_type is MessageType.ACK
            assert ack.yiaddr == offer.yiaddr
            # the lease was committed before the ACK left: a new connection sees it now
            lease = h.stored()[ack.yiaddr]
            assert lease.state is BindingState.ACTIVE
            assert lease.hwaddr == mac(1)
            assert h.server.stats["acks_sent"] == 1
            assert h.server.stats["commits"] >= 1

    run_checked(body)
    started = [r.getMessage() for r in caplog.records if "SERVER_STARTED" in r.getMessage()]
    assert len(started) == 1 and "subnets=1" in started[0]
    assert started[0].endswith(f" build={EXPECTED_BUILD}"), started[0]
    acked = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LEASE_ACKED")]
    assert len(acked) == 1 and "mac=02:00:00:00:00:01" in acked[0]
    assert "via='relay 127.0.0.2'" in acked[0]


def test_a_burst_of_requests_is_committed_once(tmp_path: Path) -> None:
    n = 40

    async def body() -> None:
        async with Harness(tmp_path) as h:
            # all sent before the server's reader can run: one wakeup drains them all
            for i in range(n):
                h.relay.send(client_msg(i, MessageType.DISCOVER))
            offers = {}
            for _ in range(n):
                offer = await h.relay.recv()
                assert offer.message_type is MessageType.OFFER
                offers[offer.xid - 0x1000] = offer
            assert sorted(offers) == list(range(n))

            commits_before = len(h.store.commits)
            for i in range(n):
                h.relay.send(request_for(i, offers[i]))
            acks = [await h.relay.recv() for _ in range(n)]
            assert all(a.message_type is MessageType.ACK for a in acks)
            new_commits = h.store.commits[commits_before:]
            assert len(new_commits) == 1
            assert {lease.address for lease in new_commits[0]} == {a.yiaddr for a in acks}
            assert len(h.stored()) >= n

    run_checked(body)


@pytest.mark.parametrize(("window_ms", "expected_commits"), [(400.0, 2), (0.0, 3)])
def test_group_commit_window_joins_separate_bursts(
    tmp_path: Path, window_ms: float, expected_commits: int
) -> None:
    """REQUESTs arriving in separate bursts within one window share one transaction;
    with the window off, each burst gets its own. Every ACK still follows its commit."""

    async def body() -> None:
        async with Harness(tmp_path, window_ms=window_ms) as h:
            offers = {}
            for i in (1, 2, 3):
                h.relay.send(client_msg(i, MessageType.DISCOVER))
                offers[i] = await h.relay.recv()
            base = len(h.store.commits)
            h.relay.send(request_for(1, offers[1]))  # opens a window: committed at once
            assert (await h.relay.recv()).message_type is MessageType.ACK
            h.relay.send(request_for(2, offers[2]))
            # a reply to a later message proves REQUEST 2 was handled in an earlier burst
            h.relay.send(client_msg(4, MessageType.DISCOVER))
            assert (await h.relay.recv()).message_type is MessageType.OFFER
            h.relay.send(request_for(3, offers[3]))
            acks = [await h.relay.recv() for _ in range(2)]
            assert {a.message_type for a in acks} == {MessageType.ACK}
            commits = h.store.commits[base:]
            assert len(commits) == expected_commits
            stored = h.stored()
            assert all(stored[a.yiaddr].state is BindingState.ACTIVE for a in acks)

    run_checked(body)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00", b"\x01" * 100, b"\x02\x01\x06\x00" + b"\x00" * 232 + b"BAD!",
     b"\xff" * 600],
    ids=["empty", "one-byte", "short", "bad-cookie", "ones"],
)
def test_malformed_datagrams_are_counted_and_service_goes_on(
    tmp_path: Path, garbage: bytes
) -> None:
    async def body() -> None:
        async with Harness(tmp_path) as h:
            h.relay.send_raw(garbage)
            h.relay.send_raw(garbage)
            h.relay.send(client_msg(7, MessageType.DISCOVER))
            offer = await h.relay.recv()
            assert offer.message_type is MessageType.OFFER
            assert h.server.stats["rx_malformed"] == 2
            assert h.server.stats["rx"] == 3
            h.relay.send(request_for(7, offer))
            assert (await h.relay.recv()).message_type is MessageType.ACK

    run_checked(body)


def test_store_failure_withholds_ack_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with Harness(tmp_path) as h:
            h.relay.send(client_msg(1, MessageType.DISCOVER))
            offer = await h.relay.recv()
            h.store.fail = True
            h.relay.send(request_for(1, offer))
            h.relay.send(client_msg(2, MessageType.DISCOVER))
            nxt = await h.relay.recv()  # OFFERs need no durability: not held back
            assert (nxt.message_type, nxt.xid) == (MessageType.OFFER, 0x1002)
            await h.server.flush()  # the failed commit has been dealt with
            # replies leave in order: an ACK sent by now would arrive before this OFFER
            h.relay.send(client_msg(3, MessageType.DISCOVER))
            nxt = await h.relay.recv()
            assert (nxt.message_type, nxt.xid) == (MessageType.OFFER, 0x1003)
            stats = h.server.stats
            assert stats["store_write_failed"] >= 1
            assert stats["acks_withheld"] == 1
            assert stats["acks_sent"] == 0
            assert offer.yiaddr not in h.stored()

            h.store.fail = False
            h.relay.send(request_for(1, offer))  # the client retransmits
            ack = await h.relay.recv()
            assert (ack.message_type, ack.yiaddr) == (MessageType.ACK, offer.yiaddr)
            assert h.stored()[offer.yiaddr].state is BindingState.ACTIVE

    run_checked(body)
    names = [r.getMessage().split()[0] for r in caplog.records]
    assert "STORE_WRITE_FAILED" in names
    assert "STORE_WRITE_RECOVERED" in names


def test_timer_follows_the_engine(tmp_path: Path) -> None:
    async def body() -> None:
        async with Harness(tmp_path) as h:
            h.relay.send(client_msg(1, MessageType.DISCOVER))
            await h.relay.recv()
            deadline = h.server.engine.get_timer()
            assert h.server._timer_deadline == deadline
            assert (h.server._timer is None) == (deadline is None)

    run_checked(body)


def test_timer_is_kept_when_the_deadline_moves_later_and_rearmed_when_earlier(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        clock = FakeClock(time.time())
        async with Harness(tmp_path, clock) as h:
            server = h.server
            h.relay.send(client_msg(1, MessageType.DISCOVER))
            offer = await h.relay.recv()
            hold = server.engine.get_timer()
            assert hold is not None and server._timer_deadline == hold
            h.relay.send(request_for(1, offer))
            await h.relay.recv()  # ACK: the offer hold is gone, the next deadline is later
            later = server.engine.get_timer()
            assert later is not None and later > hold
            timer = server._timer
            assert timer is not None and server._timer_deadline == hold  # kept, not re-armed
            commits = len(h.store.commits)
            server._on_timer()  # the kept timer fires early: nothing is due
            await server.flush()
            assert len(h.store.commits) == commits
            assert timer.cancelled() or server._timer is not timer
            assert server._timer_deadline == later  # re-armed on the engine's deadline
            h.relay.send(client_msg(2, MessageType.DISCOVER))
            await h.relay.recv()
            earlier = server.engine.get_timer()
            assert earlier is not None and earlier < later
            assert server._timer_deadline == earlier  # an earlier deadline re-arms at once

    run_checked(body)


def test_serve_returns_0_after_stop(tmp_path: Path) -> None:
    async def body() -> None:
        relay = Relay()
        try:
            stop = asyncio.Event()
            stop.set()
            code = await serve(make_config(tmp_path, relay.port), stop)
            assert code == EXIT_OK
        finally:
            relay.close()

    run_checked(body)


def test_serve_returns_1_when_the_port_is_taken(tmp_path: Path) -> None:
    async def body() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
            holder.bind((SERVER, 0))  # no SO_REUSEADDR: nobody else may bind it
            code = await serve(make_config(tmp_path, holder.getsockname()[1]))
            assert code == EXIT_START_FAILED

    run_checked(body)


def test_stats_before_start_are_empty(tmp_path: Path) -> None:
    server = Server(make_config(tmp_path, 6767))
    assert server.stats == {}
    with pytest.raises(RuntimeError):
        _ = server.engine


def test_expiry_from_the_engine_timer_is_committed(tmp_path: Path) -> None:
    async def body() -> None:
        clock = FakeClock(time.time())
        async with Harness(tmp_path, clock) as h:
            store, server = h.store, h.server
            h.relay.send(client_msg(3, MessageType.DISCOVER))
            offer = await h.relay.recv()
            h.relay.send(request_for(3, offer))
            ack = await h.relay.recv()
            assert h.stored()[ack.yiaddr].state is BindingState.ACTIVE
            commits = len(store.commits)
            clock.advance(601)  # past the 600 s lease
            deadline = server.engine.get_timer()
            assert deadline is not None and deadline <= clock.now()
            server._on_timer()  # what the armed loop timer calls
            await server.flush()  # its changes are committed on the store thread
            assert len(store.commits) > commits
            assert h.stored()[ack.yiaddr].state is not BindingState.ACTIVE
            # re-armed on the engine's next deadline (or none)
            assert server._timer_deadline == server.engine.get_timer()

    run_checked(body)


def test_rate_limit_counts_and_summarises() -> None:
    summaries: list[tuple[int, int, float]] = []
    limit = RateLimit(3, 1.0, lambda s, t, w: summaries.append((s, t, w)))
    assert [limit.allow(0.0 + i / 100) for i in range(5)] == [True, True, True, False, False]
    assert limit.suppressing
    limit.flush(0.5)  # window still open: nothing yet
    assert summaries == []
    assert limit.allow(1.5) is True  # a new window reports the old one
    assert summaries == [(2, 5, 1.0)]
    assert not limit.suppressing


_RUN = """
import sys
from tandem.config import load
from tandem import service
sys.exit(service.run(load(sys.argv[1])))
"""


def test_run_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((SERVER, 0))
        port = probe.getsockname()[1]
    conf = tmp_path / "tandem.toml"
    conf.write_text(
        f'[server]\nlisten_address = "{SERVER}"\nport = {port}\nraw_replies = false\n'
        f'[store]\npath = "{tmp_path / "leases.db"}"\n'
        '[[subnets]]\nprefix = "192.0.2.0/24"\nrelay_addresses = ["127.0.0.2"]\n'
        'pools = [{start = "192.0.2.10", end = "192.0.2.20"}]\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN, str(conf)], stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:  # wait for the real startup line, not a fixed delay
            lines.append(line)
            if "SERVER_STARTED" in line:
                break
        assert any("SERVER_STARTED" in x for x in lines), lines
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=10) == 0
        assert "SERVER_STOPPED" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_store_thread_runs_jobs_in_order_and_reports_errors() -> None:
    from tandem.service import _StoreThread

    worker = _StoreThread()
    seen: list[object] = []
    results: list[BaseException | None] = []
    try:
        def commit(batch: list[Lease]) -> None:
            seen.append(len(batch))
            if len(batch) == 2:
                raise StoreError("disk full")

        for n in (1, 2, 3):
            batch = [Lease(IPv4Address(f"192.0.2.{i + 1}"), 1) for i in range(n)]
            worker.submit(commit, batch, results.append)

        def set_meta(key: str, value: str) -> None:
            seen.append((key, value))
            if key == "bad":
                raise StoreError("meta failed")

        worker.call(set_meta, "state", "NORMAL")  # waits: every job before it has run
        assert seen == [1, 2, 3, ("state", "NORMAL")]
        assert [type(r) for r in results] == [type(None), StoreError, type(None)]
        with pytest.raises(StoreError, match="meta failed"):
            worker.call(set_meta, "bad", "x")
    finally:
        worker.shutdown()
    assert not worker._worker_thread.is_alive()


def _peer_lease(i: int) -> Lease:
    now = time.time()
    return Lease(IPv4Address(f"192.0.2.{100 + i}"), 1, BindingState.ACTIVE, hwaddr=mac(i),
                 htype=1, start=now, end=now + 600, cltt=now)


def test_bindings_from_the_failover_peer_are_committed_at_once_or_with_the_next_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Received bindings are durable before the link may send this step's BNDACKs: with no
    commit in flight they are committed at once (None: the bytes may go); behind one in
    flight, with the next (a future that completes then); a failed commit at once gives a
    failed future (the link drops the bytes and closes) and the bindings wait for the next
    attempt. Lazy leases (raised acknowledged times) go with the next commit."""

    async def body() -> None:
        async with Harness(tmp_path) as h:
            server = h.server
            a = _peer_lease(1)
            assert server._commit_for_peer([a]) is None
            assert h.stored()[a.address].state is BindingState.ACTIVE  # durable on return

            h.store.hold = threading.Event()
            x = _peer_lease(9)
            server._waiting[x.address] = x  # (as the burst path leaves a client's lease)
            server._start_commit(force=True)  # in flight, held on the store thread
            assert server._inflight is not None
            b = _peer_lease(2)
            fut = server._commit_for_peer([b])
            assert fut is not None and not fut.done()
            assert b.address not in h.stored()
            h.store.hold.set()
            await asyncio.wait_for(fut, 5)
            assert h.stored()[b.address].state is BindingState.ACTIVE
            assert [[le.address for le in batch] for batch in h.store.commits[-2:]] == [
                [x.address], [b.address]]
            h.store.hold = None

            h.store.fail = True
            c = _peer_lease(3)
            failed = server._commit_for_peer([c])
            assert failed is not None and failed.done()
            assert isinstance(failed.exception(), StoreError)
            assert c.address not in h.stored()
            h.store.fail = False
            d = _peer_lease(4)
            server._store_lazy([d])
            assert d.address not in h.stored()  # nothing waits: stored with the next commit
            await server.flush()
            stored = h.stored()
            assert stored[c.address].state is BindingState.ACTIVE  # the failed one, retried
            assert stored[d.address].state is BindingState.ACTIVE

    run_checked(body)
    assert "STORE_WRITE_FAILED" in [r.getMessage().split()[0] for r in caplog.records]
