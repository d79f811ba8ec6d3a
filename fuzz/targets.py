"""The fuzz targets and their oracles, shared by the atheris harnesses (``fuzz/fuzz_*.py``)
and the bounded hypothesis tests (``tests/unit/test_fuzz_*.py``).

Each ``check_*`` function takes arbitrary bytes and raises ``AssertionError`` (or lets an
unexpected exception escape) when the code under test does anything but its documented
behaviour on hostile input:

* DHCP decoder: ``DecodeError`` or a message; a decoded message encodes again (in the
  largest datagram) and decodes to the same type, xid and chaddr.
* Engine: never raises; every reply is a BOOTREPLY with the request's xid that encodes in
  576 bytes (unless the echoed client id + relay agent information exceed 400 octets); a
  valid DISCOVER from a reserved client is still answered with its OFFER afterwards.
* Failover decoder / framing: ``DecodeError`` or a message / frames; a frame buffer fed any
  chunking gives the same frames as one feed; a decoded message re-encodes and decodes to
  the same message.
* Peer connection / FailoverPeer: never raises; a breach closes the connection with a
  reject reason and a DISCONNECT (or refusing CONNECTACK) carrying it; no breach is an
  "internal error" (the connection turns our own exceptions into reason 254: that would be
  a bug, so the oracle fails on it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from tandem.config.schema import (
    Config,
    FailoverSection,
    LeaseTimes,
    Pool,
    Reservation,
    ServerSection,
    Subnet,
)
from tandem.dhcp.engine import Engine
from tandem.dhcp.types import RxInfo
from tandem.errors import DecodeError
from tandem.failover.connection import HBA_HOT_STANDBY, ConnectionConfig, PeerConnection
from tandem.failover.events import ConnectionClosed
from tandem.failover.hot_standby import HotStandbyPolicy
from tandem.failover.peer import FailoverPeer
from tandem.sim import MemoryStore, build_engine
from tandem.wire import dhcp as wdhcp
from tandem.wire import failover as wfo
from tandem.wire.failover import FailoverMessage, MessageType, Option, OptionCode, ServerState
from tandem.wire.framing import FrameBuffer

IP = IPv4Address
SID = IP("192.0.2.1")
T0 = 1_795_627_400.0  # about when the captures were taken (their messages carry that time)
PROBE_MAC = bytes.fromhex("02000000aa01")
PROBE_IP = IP("192.0.2.77")
SECRET = b"fuzz shared secret"
OC = OptionCode


# --------------------------------------------------------------------------- DHCP decoder


def check_dhcp_decode(data: bytes) -> wdhcp.DhcpMessage | None:
    try:
        msg = wdhcp.decode(data)
    except DecodeError:
        return None
    # encode documents a ValueError when the options do not fit max_size; with the largest
    # datagram anything that was decoded fits, so here any exception is a finding
    again = wdhcp.decode(wdhcp.encode(msg, 0xFFFF))
    assert again.options.get(53) == msg.options.get(53), (msg, again)
    assert again.xid == msg.xid and again.chaddr == msg.chaddr, (msg, again)
    return msg


# --------------------------------------------------------------------------- engine


def engine_config() -> Config:
    return Config(
        server=ServerSection(server_id=SID),
        lease=LeaseTimes(default_lease_time_s=600, min_lease_time_s=10, max_lease_time_s=1200,
                         decline_probation_s=300, offer_hold_s=30),
        subnets=[
            Subnet(
                prefix=IPv4Network("192.0.2.0/24"),
                pools=[Pool(start=IP("192.0.2.10"), end=IP("192.0.2.40"))],
                exclusions=[Pool(start=IP("192.0.2.15"), end=IP("192.0.2.16"))],
                reservations=[
                    Reservation(ip_address=PROBE_IP, hw_address=PROBE_MAC.hex(":")),
                    Reservation(ip_address=IP("192.0.2.12"), client_id="01:02:00:00:00:00:bb"),
                ],
            ),
            Subnet(
                prefix=IPv4Network("198.51.100.0/24"),
                pools=[Pool(start=IP("198.51.100.10"), end=IP("198.51.100.12"))],
                relay_addresses=[IP("203.0.113.1")],
            ),
        ],
    )


def probe_discover(xid: int) -> wdhcp.DhcpMessage:
    return wdhcp.DhcpMessage(xid=xid, chaddr=PROBE_MAC + bytes(10),
                             flags=wdhcp.FLAG_BROADCAST, options={53: b"\x01"})


RX = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, interface="eth0", local_ip=SID)


class EngineTarget:
    """One engine that lives across inputs (state builds up, like a real server)."""

    def __init__(self) -> None:
        self.engine = Engine(engine_config())
        self.now = T0
        self.handled = 0

    def check(self, data: bytes, step_s: float = 1.0, rx: RxInfo = RX) -> None:
        try:
            msg = wdhcp.decode(data)
        except DecodeError:
            return
        if msg.chaddr[:6] == PROBE_MAC:  # the probe's identity is ours: keep it unspoiled
            msg.chaddr = b"\x02\xff" + msg.chaddr[2:]
        self.now += step_s
        self.engine.handle_timer(self.now)
        out = self.engine.handle(msg, rx, self.now)
        self.handled += 1
        echoed = sum(len(msg.options.get(c, b"")) for c in (61, 82))
        for reply in out.replies:
            try:
                _check_reply(reply.msg, msg.xid)
            except ValueError:
                # both echoed options near their 255-octet limit cannot fit 576 bytes: the
                # service counts an encode error and sends nothing; anything else is a bug
                if echoed <= 400:
                    raise
        self.probe()

    def probe(self) -> None:
        xid = (self.handled * 2654435761) & 0xFFFFFFFF
        out = self.engine.handle(probe_discover(xid), RX, self.now)
        offers = [r.msg for r in out.replies if r.msg.message_type == wdhcp.MessageType.OFFER]
        assert len(offers) == 1, f"probe DISCOVER not answered: {out}"
        assert offers[0].yiaddr == PROBE_IP, offers[0]
        _check_reply(offers[0], xid)


def _check_reply(reply: wdhcp.DhcpMessage, xid: int) -> None:
    assert reply.op == wdhcp.BOOTREPLY, reply
    assert reply.xid == xid, (reply.xid, xid)
    assert reply.message_type is not None, reply
    encoded = wdhcp.encode(reply, 576)
    assert wdhcp.decode(encoded).xid == xid


# --------------------------------------------------------------------------- failover wire


def check_failover_decode(data: bytes) -> None:
    for dialect in wfo.DIALECTS:
        try:
            msg = wfo.decode(data, dialect)
        except DecodeError:
            continue
        try:
            again = wfo.encode(msg, dialect)
        except (ValueError, TypeError, OverflowError, DecodeError):
            # encode refuses values it could not have produced itself (e.g. an option
            # longer than the message limit); the decoder's output is still well-formed
            continue
        back = wfo.decode(again, dialect)
        assert back.msg_type == msg.msg_type and back.xid == msg.xid, (msg, back)
        assert back.options == msg.options, (msg.options, back.options)
    if len(data) >= 2:
        wfo.verify_digest(data, SECRET)


def check_framing(data: bytes, cuts: list[int]) -> None:
    whole = FrameBuffer()
    try:
        expected: list[bytes] | None = whole.feed(data)
        assert whole.pending < whole.max_size
    except DecodeError:
        expected = None
    parts = FrameBuffer()
    got: list[bytes] = []
    pos = 0
    try:
        for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
            got += parts.feed(data[pos:cut] if cut >= pos else b"")
            pos = max(pos, cut)
            assert parts.pending < parts.max_size
    except DecodeError:
        assert expected is None or parts.broken, "chunked feed failed where one feed did not"
        assert parts.broken
        return
    assert expected is not None, "one feed failed where the chunked feed did not"
    assert got == expected
    assert b"".join(got) == data[: len(data) - parts.pending]


# --------------------------------------------------------------------------- connection


def conn_config(dialect: wfo.Dialect, secret: bytes | None) -> ConnectionConfig:
    return ConnectionConfig(
        relationship="fuzz", role="secondary", mode="hot-standby", dialect=dialect,
        my_address=IP("192.0.2.2"), partner_address=IP("192.0.2.1"), mclt_s=300,
        shared_secret=secret, max_unacked=20,
    )


def connect_frame(relationship: str, mclt: int, now: float, dialect: wfo.Dialect,
                  secret: bytes | None, xid: int = 1) -> bytes:
    msg = FailoverMessage(MessageType.CONNECT, xid, int(now), [
        Option(OC.RELATIONSHIP_NAME, relationship),
        Option(OC.MAX_UNACKED_BNDUPD, 20),
        Option(OC.RECEIVE_TIMER, 60),
        Option(OC.VENDOR_CLASS_IDENTIFIER, "fuzz"),
        Option(OC.PROTOCOL_VERSION, 1),
        Option(OC.TLS_REQUEST, 0),
        Option(OC.MCLT, mclt),
        Option(OC.HASH_BUCKET_ASSIGNMENT, HBA_HOT_STANDBY),
    ])
    return wfo.encode(msg, dialect, secret=secret)


def state_frame(now: float, dialect: wfo.Dialect, secret: bytes | None, xid: int = 2) -> bytes:
    msg = FailoverMessage(MessageType.STATE, xid, int(now), [
        Option(OC.SERVER_STATE, ServerState.NORMAL),
        Option(OC.SERVER_FLAGS, 0),
        Option(OC.START_TIME_OF_STATE, int(now) - 100),
    ])
    return wfo.encode(msg, dialect, secret=secret)


@dataclass(frozen=True, slots=True)
class Mode:
    """How a fuzz input is played: bit 0 windows dialect, bit 1 shared secret (the input's
    decodable frames are re-signed), bit 2 handshake first (CONNECT + STATE)."""

    dialect: wfo.Dialect
    secret: bytes | None
    established: bool

    @classmethod
    def of(cls, bits: int) -> Mode:
        return cls("windows" if bits & 1 else "isc", SECRET if bits & 2 else None,
                   bool(bits & 4))


def prepare(data: bytes, mode: Mode) -> bytes:
    """With a secret, sign every frame of ``data`` that decodes (else the digest check
    stops everything at the first frame); the rest is left as it is."""
    if mode.secret is None:
        return data
    fb = FrameBuffer()
    try:
        frames = fb.feed(data)
    except DecodeError:
        return data
    out = bytearray()
    for frame in frames:
        try:
            msg = wfo.decode(frame, mode.dialect)
            msg.options = [o for o in msg.options if o.code != OC.MESSAGE_DIGEST]
            out += wfo.encode(msg, mode.dialect, secret=mode.secret)
        except (DecodeError, ValueError, TypeError, OverflowError):
            out += frame
    return bytes(out) + data[len(data) - fb.pending :]


def _check_breach(closed: ConnectionClosed, sent: bytes, dialect: wfo.Dialect) -> None:
    assert "internal error" not in closed.reason, closed
    if closed.by_peer:
        return
    if closed.reject_reason is None:
        return  # a timer (handshake/tReceive) ended it, not input
    frames = FrameBuffer().feed(sent)
    assert frames, f"closed for {closed} without telling the partner"
    last = wfo.decode(frames[-1], dialect)
    assert last.msg_type in (MessageType.DISCONNECT, MessageType.CONNECTACK), last
    assert last.get_int(OC.REJECT_REASON) == closed.reject_reason, (last, closed)


def check_connection(data: bytes, bits: int, cuts: list[int] | None = None) -> PeerConnection:
    mode = Mode.of(bits)
    now = T0
    conn = PeerConnection(conn_config(mode.dialect, mode.secret), now)
    conn.send_state(ServerState.NORMAL, int(now) - 50, now)
    conn.initiate(now)
    sent = bytearray()
    if mode.established:
        hello = connect_frame("fuzz", 300, now, mode.dialect, mode.secret)
        conn.receive_data(hello + state_frame(now, mode.dialect, mode.secret), now)
        assert conn.communications_ok, conn.close_reason
        sent += conn.data_to_send()
    data = prepare(data, mode)
    events: list[Any] = []
    pos = 0
    for cut in [*sorted(c % (len(data) + 1) for c in (cuts or [])), len(data)]:
        if cut <= pos:
            continue
        now += 0.5
        events += conn.receive_data(data[pos:cut], now)
        sent += conn.data_to_send()
        pos = cut
    closes = [e for e in events if isinstance(e, ConnectionClosed)]
    assert len(closes) <= 1, closes
    if closes:
        assert events[-1] is closes[0], "ConnectionClosed is not the last event"
        assert conn.closed
        _check_breach(closes[0], bytes(sent), mode.dialect)
    # answering our own calls after a breach stays silent, and timers still work
    conn.handle_timer(now + 3600)
    return conn


# --------------------------------------------------------------------------- FailoverPeer


def peer_config(secret: str | None) -> Config:
    base = engine_config()
    fo = FailoverSection(
        name="fuzz", role="secondary", peer_address=IP("192.0.2.1"),
        listen_address=IP("192.0.2.2"), mclt_s=300,
        shared_secret=secret,  # type: ignore[arg-type]  # pydantic converts to SecretStr
    )
    return base.model_copy(update={"failover": fo})


class PeerTarget:
    """A FailoverPeer (standby, with engine and memory store) that a fuzz input talks to
    after a valid handshake."""

    def __init__(self, secret: bool) -> None:
        self.secret = SECRET if secret else None
        self.config = peer_config(SECRET.decode() if secret else None)

    def check(self, data: bytes, cuts: list[int] | None = None) -> FailoverPeer:
        now = T0
        store = MemoryStore()

        def make_engine(policy: HotStandbyPolicy) -> Engine:
            return build_engine(self.config, policy, store, now)

        peer = FailoverPeer(self.config, store, now, make_engine)
        peer.connection_made(now)
        mode = Mode("isc", self.secret, True)
        hello = connect_frame("fuzz", 300, now, "isc", self.secret)
        peer.receive_data(hello + state_frame(now, "isc", self.secret), now)
        assert peer.conn is not None and peer.conn.communications_ok, peer.events
        peer.data_to_send()
        store.commit(peer.take_changed())
        data = prepare(data, mode)
        pos = 0
        sent = bytearray()
        for cut in [*sorted(c % (len(data) + 1) for c in (cuts or [])), len(data)]:
            if cut <= pos:
                continue
            now += 0.5
            peer.receive_data(data[pos:cut], now)
            store.commit(peer.take_changed())
            sent += peer.data_to_send()
            if peer.close_requested():
                closed = peer.conn.close_reason if peer.conn is not None else None
                assert closed is not None
                _check_breach(closed, bytes(sent), "isc")
                break
            t = peer.get_timer()
            if t is not None and t <= now:
                peer.handle_timer(now)
        # the engine behind the peer still answers a DISCOVER the standby may answer
        peer.handle_timer(now + 1)
        store.commit(peer.take_changed())
        for lease in peer.engine.table:  # nothing committed violates the table's own rules
            assert peer.engine.table.get_ip(lease.address) is lease
        return peer


def u32(n: int) -> bytes:
    return struct.pack("!I", n & 0xFFFFFFFF)
