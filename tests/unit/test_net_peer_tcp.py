"""The failover TCP link on loopback: real asyncio sockets, toy sans-I/O peers (a line
protocol defined here) and the real PeerConnection on both ends.

Every wait is for an event the test can name (a line received, a connection made or lost),
bounded by a timeout; nothing sleeps to wait for state."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address
from typing import Any

from tandem.clock import SystemClock
from tandem.failover.connection import ConnectionConfig, PeerConnection
from tandem.failover.events import Connected, Event
from tandem.leases.model import Lease
from tandem.net.peer_tcp import PeerLink

PRIMARY = "127.0.0.1"
SECONDARY = "127.0.0.2"
STRANGER = "127.0.0.3"
WAIT_S = 5.0
FAST = (0.02, 0.1)  # reconnect backoff for tests


def run_checked(body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` on a fresh loop whose exception handler fails the test."""
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        await asyncio.wait_for(body(), timeout=15)

    asyncio.run(main())
    assert errors == [], errors


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class Signal:
    """Something happened somewhere: waiters re-check their condition."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.event.set()

    async def until(self, cond: Callable[[], bool], what: str = "") -> None:
        async def loop() -> None:
            while not cond():
                self.event.clear()
                await self.event.wait()

        try:
            await asyncio.wait_for(loop(), timeout=WAIT_S)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what or cond}") from None


class SignalCounter(Counter[str]):
    """Stats that wake the waiters when they change (for counters no peer sees)."""

    def __init__(self, signal: Signal) -> None:
        super().__init__()
        self.signal = signal

    def __setitem__(self, key: str, value: int) -> None:
        super().__setitem__(key, value)
        self.signal()


class LinePeer:
    """A toy sans-I/O peer speaking lines: "ping N" -> "pong N"; "update A" -> a Lease to
    commit and "ack A"; "bye" -> "ok" and a close request; "boom" raises."""

    def __init__(self, signal: Signal, name: str = "") -> None:
        self.signal = signal
        self.name = name
        self.buf = b""
        self.lines: list[str] = []
        self.out = bytearray()
        self.made: list[float] = []
        self.lost: list[float] = []
        self.changed: list[Lease] = []
        self.want_close = False
        self.timers: list[float] = []  # deadlines still to come
        self.fired: list[tuple[float, float]] = []  # (deadline, now)
        self.log: list[str] | None = None

    def send(self, line: str) -> None:
        self.out += line.encode() + b"\n"

    # sans-I/O surface
    def connection_made(self, now: float) -> None:
        self.made.append(now)
        self.want_close = False
        self.buf = b""
        self.signal()

    def connection_lost(self, now: float) -> None:
        self.lost.append(now)
        self.signal()

    def receive_data(self, data: bytes, now: float) -> None:
        self.buf += data
        while b"\n" in self.buf:
            raw, self.buf = self.buf.split(b"\n", 1)
            line = raw.decode()
            self.lines.append(line)
            if self.log is not None:
                self.log.append(f"{self.name} got {line}")
            cmd, _, arg = line.partition(" ")
            if cmd == "ping":
                self.send(f"pong {arg}")
            elif cmd == "update":
                self.changed.append(Lease(IPv4Address(arg), 1))
                self.send(f"ack {arg}")
            elif cmd == "bye":
                self.send("ok")
                self.want_close = True
            elif cmd == "big":
                self.out += b"x" * int(arg) + b"\n"
            elif cmd == "boom":
                raise RuntimeError("peer bug on purpose")
        self.signal()

    def data_to_send(self) -> bytes:
        out = bytes(self.out)
        self.out.clear()
        return out

    def take_changed(self) -> list[Lease]:
        out, self.changed = self.changed, []
        return out

    def close_requested(self) -> bool:
        return self.want_close

    def get_timer(self) -> float | None:
        return self.timers[0] if self.timers else None

    def handle_timer(self, now: float) -> None:
        while self.timers and self.timers[0] <= now:
            self.fired.append((self.timers.pop(0), now))
        self.signal()


def make_link(peer: Any, role: str, port: int, partner_port: int, **kw: Any) -> PeerLink:
    me, partner = (PRIMARY, SECONDARY) if role == "primary" else (SECONDARY, PRIMARY)
    return PeerLink(
        peer,
        role=role,  # type: ignore[arg-type]
        listen=(me, port),
        connect_to=(partner, partner_port),
        allowed_peer=partner,
        reconnect_s=kw.pop("reconnect_s", FAST),
        **kw,
    )


class Pair:
    def __init__(self, **kw: Any) -> None:
        self.signal = Signal()
        self.p_port = free_port(PRIMARY)
        self.s_port = free_port(SECONDARY)
        self.pp = LinePeer(self.signal, "primary")
        self.sp = LinePeer(self.signal, "secondary")
        self.primary = make_link(self.pp, "primary", self.p_port, self.s_port)
        self.secondary = make_link(self.sp, "secondary", self.s_port, self.p_port, **kw)

    async def start(self) -> None:
        await self.secondary.start()
        await self.primary.start()
        await self.signal.until(lambda: bool(self.pp.made and self.sp.made), "connected")

    async def close(self) -> None:
        await self.primary.close()
        await self.secondary.close()


def test_primary_dials_and_bytes_flow_both_ways() -> None:
    async def body() -> None:
        pair = Pair()
        await pair.start()
        try:
            assert pair.primary.connected and pair.secondary.connected
            assert pair.primary.stats["connections"] == 1
            assert pair.secondary.stats["connections"] == 1
            pair.pp.send("ping 1")
            pair.primary.flush()
            await pair.signal.until(lambda: "pong 1" in pair.pp.lines, "pong 1")
            assert pair.sp.lines == ["ping 1"]
            # the secondary never dials: its only connection is the accepted one
            assert pair.secondary.stats["connect_attempts"] == 0
            assert pair.primary.stats["connect_attempts"] >= 1
        finally:
            await pair.close()
        assert pair.pp.lost and pair.sp.lost

    run_checked(body)


def test_primary_reconnects_after_the_secondary_restarts() -> None:
    async def body() -> None:
        pair = Pair()
        await pair.start()
        try:
            await pair.secondary.close()
            await pair.signal.until(lambda: len(pair.pp.lost) == 1, "primary sees the loss")
            assert not pair.primary.connected
            sp2 = LinePeer(pair.signal, "secondary-2")
            pair.secondary = make_link(sp2, "secondary", pair.s_port, pair.p_port)
            await pair.secondary.start()
            await pair.signal.until(lambda: len(pair.pp.made) == 2 and bool(sp2.made), "again")
            pair.pp.send("ping 2")
            pair.primary.flush()
            await pair.signal.until(lambda: "pong 2" in pair.pp.lines, "pong 2")
            assert sp2.lines == ["ping 2"]
        finally:
            await pair.close()

    run_checked(body)


def test_the_primary_keeps_dialling_until_the_secondary_appears() -> None:
    async def body() -> None:
        pair = Pair()
        pair.primary.stats = SignalCounter(pair.signal)
        await pair.primary.start()
        try:
            await pair.signal.until(
                lambda: pair.primary.stats["connect_failures"] >= 3, "failed attempts"
            )
            assert not pair.pp.made
            await pair.secondary.start()
            await pair.signal.until(lambda: bool(pair.pp.made and pair.sp.made), "connected")
        finally:
            await pair.close()

    run_checked(body)


def _refused(host: str, port: int, source: str) -> Callable[[], Awaitable[bytes]]:
    async def attempt() -> bytes:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        try:
            writer.write(b"ping 9\n")
            return await asyncio.wait_for(reader.read(100), timeout=WAIT_S)
        except ConnectionResetError:
            return b""
        finally:
            writer.close()

    return attempt


def test_connection_from_a_stranger_is_refused() -> None:
    async def body() -> None:
        signal = Signal()
        peer = LinePeer(signal)
        port = free_port(SECONDARY)
        link = make_link(peer, "secondary", port, 1)
        await link.start()
        try:
            got = await _refused(SECONDARY, port, STRANGER)()
            assert got == b""  # closed without a byte
            got = await _refused(SECONDARY, port, STRANGER)()
            assert got == b""
            assert link.stats["refused_not_partner"] == 2
            assert peer.made == [] and peer.lines == []
            assert not link.connected
            # the partner's address is still welcome
            reader, writer = await asyncio.open_connection(
                SECONDARY, port, local_addr=(PRIMARY, 0)
            )
            writer.write(b"ping 3\n")
            assert await asyncio.wait_for(reader.readline(), WAIT_S) == b"pong 3\n"
            assert link.connected and len(peer.made) == 1
            writer.close()
        finally:
            await link.close()

    run_checked(body)


def test_a_second_connection_is_refused_while_one_is_live() -> None:
    async def body() -> None:
        pair = Pair()
        await pair.start()
        try:
            got = await _refused(SECONDARY, pair.s_port, PRIMARY)()
            assert got == b""
            assert pair.secondary.stats["refused_busy"] == 1
            assert len(pair.sp.made) == 1 and pair.sp.lines == []  # "ping 9" never reached it
            pair.pp.send("ping 4")
            pair.primary.flush()
            await pair.signal.until(lambda: "pong 4" in pair.pp.lines, "pong 4")
        finally:
            await pair.close()

    run_checked(body)


class OffsetClock(SystemClock):
    """Epoch time far from the loop's clock: the timer must translate, not compare."""

    def now(self) -> float:
        return time.time() + 1_000_000.0


def test_timers_fire_at_the_peers_deadlines_and_are_rearmed() -> None:
    async def body() -> None:
        signal = Signal()
        peer = LinePeer(signal)
        clock = OffsetClock()
        t0 = clock.now()
        peer.timers = [t0 + 0.01, t0 + 0.03, t0 + 0.05]
        link = make_link(peer, "secondary", free_port(SECONDARY), 1, clock=clock)
        await link.start()
        try:
            await signal.until(lambda: len(peer.fired) == 3, "three timers")
            for deadline, now in peer.fired:
                assert now >= deadline
            assert link.stats["timers"] == 3  # one call per deadline, none wasted
            # a new deadline set from outside is picked up by flush()
            peer.timers = [clock.now() + 0.01]
            link.flush()
            await signal.until(lambda: len(peer.fired) == 4, "the fourth timer")
        finally:
            await link.close()

    run_checked(body)


def test_close_requested_closes_after_the_last_bytes_left() -> None:
    async def body() -> None:
        pair = Pair()
        await pair.start()
        try:
            pair.pp.send("bye")
            pair.primary.flush()
            await pair.signal.until(lambda: bool(pair.pp.lost and pair.sp.lost), "closed")
            assert "ok" in pair.pp.lines  # the reply went out before the close
            assert not pair.secondary.connected
        finally:
            await pair.close()

    run_checked(body)


def test_changed_leases_are_committed_before_the_ack_leaves() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        commits: list[tuple[list[Lease], asyncio.Future[None]]] = []
        log: list[str] = []

        def on_changed(leases: list[Lease]) -> asyncio.Future[None]:
            fut: asyncio.Future[None] = loop.create_future()
            commits.append((leases, fut))
            log.append("commit started")
            pair.signal()
            return fut

        pair = Pair(on_changed=on_changed)
        pair.pp.log = log
        await pair.start()
        try:
            pair.pp.send("update 192.0.2.10")
            pair.pp.send("ping 5")  # its pong is held too: bytes keep their order
            pair.primary.flush()
            await pair.signal.until(lambda: bool(commits), "on_changed")
            assert [le.address for le in commits[0][0]] == [IPv4Address("192.0.2.10")]
            # Bytes written straight to the socket now overtake nothing if the ack was held;
            # had the ack left already, TCP would deliver it before the marker.
            live = pair.secondary._live
            assert live is not None
            live.write(b"marker\n")
            await pair.signal.until(lambda: "marker" in pair.pp.lines, "marker")
            assert pair.pp.lines == ["marker"]
            log.append("commit done")
            commits[0][1].set_result(None)
            await pair.signal.until(lambda: "pong 5" in pair.pp.lines, "pong 5")
            assert log == [
                "commit started",
                "primary got marker",
                "commit done",
                "primary got ack 192.0.2.10",
                "primary got pong 5",
            ]
        finally:
            await pair.close()

    run_checked(body)


def test_a_synchronous_commit_lets_the_ack_go_at_once() -> None:
    async def body() -> None:
        seen: list[tuple[str, list[str]]] = []

        def on_changed(leases: list[Lease]) -> None:
            seen.append((str(leases[0].address), list(pair.pp.lines)))

        pair = Pair(on_changed=on_changed)
        await pair.start()
        try:
            pair.pp.send("update 192.0.2.11")
            pair.primary.flush()
            await pair.signal.until(lambda: "ack 192.0.2.11" in pair.pp.lines, "ack")
            assert seen == [("192.0.2.11", [])]
            assert pair.secondary.stats["tx_held"] == 0
        finally:
            await pair.close()

    run_checked(body)


def test_a_failed_commit_drops_the_ack_and_closes() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[None]] = []

        def on_changed(leases: list[Lease]) -> asyncio.Future[None]:
            fut: asyncio.Future[None] = loop.create_future()
            futs.append(fut)
            pair.signal()
            return fut

        pair = Pair(on_changed=on_changed)
        await pair.start()
        try:
            pair.pp.send("update 192.0.2.12")
            pair.primary.flush()
            await pair.signal.until(lambda: bool(futs), "on_changed")
            futs[0].set_exception(OSError("disk full"))
            await pair.signal.until(lambda: bool(pair.sp.lost and pair.pp.lost), "closed")
            assert pair.secondary.stats["commit_failures"] == 1
            assert not any(line.startswith("ack") for line in pair.pp.lines)
        finally:
            await pair.close()

    run_checked(body)


def test_a_peer_exception_closes_the_connection_and_stays_off_the_loop() -> None:
    async def body() -> None:
        pair = Pair()
        await pair.start()
        try:
            pair.pp.send("boom")
            pair.primary.flush()
            await pair.signal.until(lambda: bool(pair.sp.lost and pair.pp.lost), "closed")
            assert pair.secondary.stats["internal_errors"] == 1
            # and the primary comes back
            await pair.signal.until(lambda: len(pair.pp.made) == 2, "reconnected")
        finally:
            await pair.close()

    run_checked(body)


def test_backpressure_stops_reading_until_the_write_buffer_drains() -> None:
    async def body() -> None:
        signal = Signal()
        peer = LinePeer(signal)
        port = free_port(SECONDARY)
        link = make_link(peer, "secondary", port, 1, max_write_buffer=1024)
        link.stats = SignalCounter(signal)
        await link.start()
        size = 32 * 1024 * 1024  # more than loopback socket buffers hold
        try:
            reader, writer = await asyncio.open_connection(
                SECONDARY, port, local_addr=(PRIMARY, 0)
            )
            writer.write(b"big %d\n" % size)
            await signal.until(lambda: link.stats["backpressure_pauses"] == 1, "paused")
            live = link._live
            assert live is not None and live.transport is not None
            assert not live.transport.is_reading()
            writer.write(b"ping 6\n")
            data = await asyncio.wait_for(reader.readexactly(size + 1), WAIT_S)
            assert data == b"x" * size + b"\n"
            assert await asyncio.wait_for(reader.readline(), WAIT_S) == b"pong 6\n"
            assert live.transport.is_reading()
            writer.close()
        finally:
            await link.close()

    run_checked(body)


def test_a_large_read_is_fed_in_slices_whose_commits_and_acks_overlap() -> None:
    """A read larger than ``rx_slice`` reaches the peer slice by slice, one per turn of the
    loop: each slice's commit starts before the next slice is worked on, and its acks leave
    as soon as that commit is durable, ahead of the later slices' (which stay held)."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        commits: list[tuple[list[Lease], asyncio.Future[None]]] = []

        def on_changed(leases: list[Lease]) -> asyncio.Future[None]:
            fut: asyncio.Future[None] = loop.create_future()
            commits.append((leases, fut))
            pair.signal()
            return fut

        line = b"update 192.0.2.%d\n"
        pair = Pair(on_changed=on_changed, rx_slice=len(line % 100) * 5)  # 5 lines a slice
        await pair.start()
        try:
            for i in range(100, 130):
                pair.pp.send(f"update 192.0.2.{i}")
            pair.primary.flush()  # 30 lines in one write
            await pair.signal.until(lambda: len(pair.sp.lines) == 30, "all lines")
            # every slice was worked on while the first commit is still running
            assert [len(leases) for leases, _ in commits] == [5] * 6
            assert pair.secondary.stats["rx_slices_deferred"] >= 1
            assert pair.pp.lines == []  # nothing acknowledged before it is durable
            commits[0][1].set_result(None)
            first = [f"ack 192.0.2.{i}" for i in range(100, 105)]
            await pair.signal.until(lambda: pair.pp.lines == first, "the first slice's acks")
            for _, fut in commits[1:]:
                fut.set_result(None)
            everything = [f"ack 192.0.2.{i}" for i in range(100, 130)]
            await pair.signal.until(lambda: pair.pp.lines == everything, "every ack, in order")
        finally:
            await pair.close()

    run_checked(body)


def test_a_receive_backlog_beyond_the_limit_stops_reading_and_loses_nothing() -> None:
    async def body() -> None:
        signal = Signal()
        peer = LinePeer(signal)
        port = free_port(SECONDARY)
        link = make_link(peer, "secondary", port, 1, max_write_buffer=1024, rx_slice=64)
        link.stats = SignalCounter(signal)
        await link.start()
        count = 20_000  # ~200 KB: reads run ahead of 64-byte slices
        try:
            reader, writer = await asyncio.open_connection(
                SECONDARY, port, local_addr=(PRIMARY, 0)
            )
            writer.write(b"".join(b"ping %d\n" % i for i in range(count)))
            await signal.until(lambda: len(peer.lines) == count, "every ping")
            assert peer.lines == [f"ping {i}" for i in range(count)]
            assert link.stats["rx_backlog_pauses"] >= 1
            live = link._live
            assert live is not None and live.transport is not None
            assert live.transport.is_reading()  # reading again once the backlog drained
            for i in range(count):
                assert await asyncio.wait_for(reader.readline(), WAIT_S) == b"pong %d\n" % i
            writer.close()
        finally:
            await link.close()

    run_checked(body)


def test_lazy_leases_are_stored_apart_and_hold_no_bytes() -> None:
    """``take_lazy`` leases go to ``store_lazy``, not ``on_changed``: the step's bytes leave
    at once, waiting for no commit."""

    class LazyPeer(LinePeer):
        def __init__(self, signal: Signal, name: str = "") -> None:
            super().__init__(signal, name)
            self.lazy: list[Lease] = []

        def receive_data(self, data: bytes, now: float) -> None:
            self.lazy += [Lease(IPv4Address("192.0.2.99"), 1)] if b"ping" in data else []
            super().receive_data(data, now)

        def take_lazy(self) -> list[Lease]:
            out, self.lazy = self.lazy, []
            return out

    async def body() -> None:
        loop = asyncio.get_running_loop()
        lazy: list[Lease] = []
        pending: list[asyncio.Future[None]] = []

        def on_changed(leases: list[Lease]) -> asyncio.Future[None]:
            fut: asyncio.Future[None] = loop.create_future()
            pending.append(fut)
            return fut

        signal = Signal()
        sp = LazyPeer(signal, "secondary")
        port, partner = free_port(SECONDARY), free_port(PRIMARY)
        pp = LinePeer(signal, "primary")
        primary = make_link(pp, "primary", partner, port)
        secondary = make_link(sp, "secondary", port, partner, on_changed=on_changed,
                              store_lazy=lazy.extend)
        await secondary.start()
        await primary.start()
        try:
            await signal.until(lambda: bool(pp.made and sp.made), "connected")
            pp.send("ping 1")
            primary.flush()
            await signal.until(lambda: "pong 1" in pp.lines, "pong")
            assert [le.address for le in lazy] == [IPv4Address("192.0.2.99")]
            assert pending == []
        finally:
            await primary.close()
            await secondary.close()

    run_checked(body)


# --------------------------------------------------------------------- real PeerConnection


class RealPeer:
    """PeerConnection behind the link: a fresh one per TCP connection."""

    def __init__(self, config: ConnectionConfig, signal: Signal) -> None:
        self.config = config
        self.signal = signal
        self.conn: PeerConnection | None = None
        self.events: list[Event] = []

    def connection_made(self, now: float) -> None:
        self.conn = PeerConnection(self.config, now)
        self.conn.send_state(1, int(now), now)  # any state; it goes out once established
        self.conn.initiate(now)

    def connection_lost(self, now: float) -> None:
        if self.conn is not None:
            self.events += self.conn.connection_lost(now)
        self.signal()

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        assert self.conn is not None
        ev = self.conn.receive_data(data, now)
        self.events += ev
        self.signal()
        return ev

    def data_to_send(self) -> bytes:
        return self.conn.data_to_send() if self.conn is not None else b""

    def get_timer(self) -> float | None:
        return self.conn.get_timer() if self.conn is not None else None

    def handle_timer(self, now: float) -> list[Event]:
        ev = self.conn.handle_timer(now) if self.conn is not None else []
        self.events += ev
        self.signal()
        return ev

    def close_requested(self) -> bool:
        return self.conn is not None and self.conn.closed


def _config(role: str, me: str, partner: str) -> ConnectionConfig:
    return ConnectionConfig(
        relationship="tdm-test",
        role=role,  # type: ignore[arg-type]
        mode="hot-standby",
        dialect="isc",
        my_address=IPv4Address(me),
        partner_address=IPv4Address(partner),
        mclt_s=3600,
        shared_secret=b"s3cret",
    )


def test_real_peer_connections_handshake_over_tcp() -> None:
    async def body() -> None:
        signal = Signal()
        p = RealPeer(_config("primary", PRIMARY, SECONDARY), signal)
        s = RealPeer(_config("secondary", SECONDARY, PRIMARY), signal)
        p_port, s_port = free_port(PRIMARY), free_port(SECONDARY)
        primary = make_link(p, "primary", p_port, s_port)
        secondary = make_link(s, "secondary", s_port, p_port)
        await secondary.start()
        await primary.start()
        try:
            def both_ok() -> bool:
                return all(
                    x.conn is not None and x.conn.communications_ok for x in (p, s)
                )

            await signal.until(both_ok, "handshake and STATE both ways")
            assert any(isinstance(e, Connected) for e in p.events)
            assert any(isinstance(e, Connected) for e in s.events)
            assert p.conn is not None and s.conn is not None
            assert p.conn.partner_state is not None and s.conn.partner_state is not None
        finally:
            await primary.close()
            await secondary.close()

    run_checked(body)
