"""Sans-I/O failover peer connection (draft-ietf-dhc-failover-12 §7-§8; spec §2-§4, §6.5, §6.8).

One :class:`PeerConnection` is one TCP link to the failover partner, in the aioquic/h11
shape: it never touches a socket or a clock. The net layer feeds it received bytes and the
current time, sends what :meth:`PeerConnection.data_to_send` returns, arms one timer at
:meth:`PeerConnection.get_timer` and calls :meth:`PeerConnection.handle_timer` when it fires.
The failover state machine reads the returned :mod:`~tandem.failover.events` and calls the
``send_*`` methods.

Lifecycle::

    AWAITING_CONNECT (secondary) / AWAITING_CONNECTACK (primary, after initiate)
        -> ESTABLISHED (Connected event; our STATE goes out right away if one was given)
        -> CLOSED     (ConnectionClosed event, exactly once, always the last event)

Peer input never raises. A protocol breach (bad CONNECT, malformed bytes, a digest that does
not verify, a message that is not allowed now...) queues a CONNECTACK with a reject reason
(when refusing a CONNECT) or a DISCONNECT with the reject reason, closes the connection and
emits :class:`~tandem.failover.events.ConnectionClosed`. The caller drains
:meth:`data_to_send` one last time and closes the socket when :attr:`closed` is true.

Methods that the *caller* misuses (sending before the handshake, acking an unknown xid) raise
``ValueError``; after the connection closed they are silent no-ops, because the owner may
still be reacting to events from the same batch.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address
from typing import Literal, TypeAlias

from tandem.errors import ConfigError, DecodeError
from tandem.failover.events import (
    BindingAcked,
    BindingUpdateReceived,
    CommunicationsLost,
    Connected,
    ConnectionClosed,
    Event,
    PartnerStateChanged,
    PoolRequestReceived,
    PoolResponseReceived,
    SkewWarning,
    UpdateDoneReceived,
    UpdateRequestReceived,
)
from tandem.failover.updates import NAMED_CODES, BindingUpdate, UpdateQueue
from tandem.wire.failover import (
    DIALECTS,
    Dialect,
    DigestCheck,
    DigestType,
    FailoverMessage,
    MessageType,
    Option,
    OptionCode,
    RejectReason,
    ServerFlags,
    batch_violation,
    decode,
    decode_one_group,
    encode,
    verify_digest,
)
from tandem.wire.framing import FrameBuffer

_pack_time_xid = struct.Struct("!II").pack  # the header's time and xid (bytes 4-11)
_BNDUPD = int(MessageType.BNDUPD)
_ADDRESS = int(OptionCode.ASSIGNED_IP_ADDRESS)
#: An unsigned BNDACK for one accepted address, as encode() writes it with xid 0, time 0
#: and address 0.0.0.0 (the address option is last): _send_bndack patches in the time, xid
#: and address.
_BNDACK_TEMPLATE: dict[Dialect, bytes] = {
    d: encode(
        FailoverMessage(MessageType.BNDACK, 0, 0, [Option(_ADDRESS, IPv4Address(0))]), d
    )
    for d in DIALECTS
}
#: The fast path's message types and the options each may carry (decode_one_group).
_FAST_CODES: dict[int, frozenset[int]] = {
    _BNDUPD: NAMED_CODES,
    int(MessageType.BNDACK): frozenset(
        (_ADDRESS, int(OptionCode.REJECT_REASON), int(OptionCode.MESSAGE))
    ),
}

Role: TypeAlias = Literal["primary", "secondary"]
Mode: TypeAlias = Literal["hot-standby", "load-balance"]

PROTOCOL_VERSION = 1
VENDOR_CLASS = "tandem-0.1"
HBA_SIZE = 32
#: Default HBAs in ISC polarity (bit set = primary serves the bucket): all buckets to the
#: primary for hot standby, ISC's ``split 128`` for load balance.
HBA_HOT_STANDBY = b"\xff" * HBA_SIZE
HBA_LOAD_BALANCE = b"\xff" * (HBA_SIZE // 2) + b"\x00" * (HBA_SIZE // 2)

#: Our tReceive (advertised as receive-timer) when the config leaves it open (spec §6.8): 60 s
#: for ISC (its man-page sample; ISC then sends CONTACT every 20 s), 180 s for Windows (which
#: runs its own 3 min / 1 min timers whatever we advertise).
DEFAULT_RECEIVE_TIMER_S: dict[Dialect, int] = {"isc": 60, "windows": 180}
#: Windows sends CONTACT every 60 s and expects the same of us (spec §0.8).
WINDOWS_MAX_TX_INTERVAL_S = 60.0
MIN_TX_INTERVAL_S = 1.0
#: Weight of a new sample in the smoothed clock skew (exponential moving average).
SKEW_ALPHA = 0.125

_OC = OptionCode
_RR = RejectReason
_MT = MessageType
#: Messages the partner originates (their xids must increase when a secret is set, D12 11.1);
#: the others copy one of our xids.
_PEER_ORIGINATED = frozenset(
    (
        _MT.POOLREQ,
        _MT.BNDUPD,
        _MT.CONNECT,
        _MT.UPDREQALL,
        _MT.UPDREQ,
        _MT.STATE,
        _MT.CONTACT,
        _MT.DISCONNECT,
    )
)


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """What one failover link needs to know (a slice of the relationship's config).

    Units: seconds. ``receive_timer_s`` is our tReceive, advertised to the partner in
    CONNECT/CONNECTACK (None: 60 isc / 180 windows). ``keepalive_s`` is tSend (None: a third
    of the partner's advertised receive-timer, at most 60 s in the windows dialect).
    ``hba``: primary - the 32-byte hash-bucket assignment sent in CONNECT (None: from
    ``mode``); secondary - the HBA the primary must send (None: adopt whatever it sends).
    ``check_skew_every_message`` (None: windows yes, isc no) applies ``max_skew_s`` to every
    message, like Windows; otherwise only at CONNECT/CONNECTACK, like ISC. With a
    ``shared_secret`` it applies to every message whatever this says (replay protection).
    """

    relationship: str
    role: Role
    mode: Mode
    dialect: Dialect
    my_address: IPv4Address
    partner_address: IPv4Address
    mclt_s: int
    max_unacked: int = 100
    receive_timer_s: int | None = None
    keepalive_s: float | None = None
    connect_timeout_s: float = 15.0
    max_skew_s: float = 60.0
    skew_warning_s: float | None = None
    check_skew_every_message: bool | None = None
    shared_secret: bytes | None = None
    digest_type: int = DigestType.HMAC_SHA256
    require_increasing_xid: bool = True
    hba: bytes | None = None
    adopt_partner_mclt: bool = False
    vendor_class: str = VENDOR_CLASS

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.relationship:
            problems.append("relationship: must not be empty")
        if self.role not in ("primary", "secondary"):
            problems.append(f"role: {self.role!r} is not primary or secondary")
        if self.mode not in ("hot-standby", "load-balance"):
            problems.append(f"mode: {self.mode!r} is not hot-standby or load-balance")
        if self.dialect not in DIALECTS:
            problems.append(f"dialect: {self.dialect!r} is not one of {DIALECTS}")
        if not 1 <= self.mclt_s <= 0xFFFFFFFF:
            problems.append("mclt_s: must be a positive 32-bit number of seconds")
        if not 1 <= self.max_unacked <= 0xFFFFFFFF:
            problems.append("max_unacked: must be at least 1")
        if self.receive_timer_s is not None and not 1 <= self.receive_timer_s <= 0xFFFFFFFF:
            problems.append("receive_timer_s: must be at least 1")
        if self.keepalive_s is not None and self.keepalive_s <= 0:
            problems.append("keepalive_s: must be positive")
        if self.connect_timeout_s <= 0:
            problems.append("connect_timeout_s: must be positive")
        if self.max_skew_s <= 0:
            problems.append("max_skew_s: must be positive")
        if self.skew_warning_s is not None and self.skew_warning_s <= 0:
            problems.append("skew_warning_s: must be positive")
        if self.hba is not None and len(self.hba) != HBA_SIZE:
            problems.append(f"hba: must be {HBA_SIZE} bytes, got {len(self.hba)}")
        if self.shared_secret is not None and not self.shared_secret:
            problems.append("shared_secret: must not be empty (use None for no secret)")
        if self.digest_type not in (DigestType.HMAC_MD5, DigestType.HMAC_SHA256):
            problems.append(f"digest_type: unsupported {self.digest_type}")
        if problems:
            raise ConfigError(problems)

    @property
    def receive_timer(self) -> int:
        if self.receive_timer_s is not None:
            return self.receive_timer_s
        return DEFAULT_RECEIVE_TIMER_S[self.dialect]

    @property
    def skew_warning(self) -> float:
        return self.skew_warning_s if self.skew_warning_s is not None else self.max_skew_s / 2

    @property
    def skew_every_message(self) -> bool:
        if self.check_skew_every_message is not None:
            return self.check_skew_every_message
        return self.dialect == "windows"

    @property
    def connect_hba(self) -> bytes:
        """The HBA a primary sends in CONNECT."""
        if self.hba is not None:
            return self.hba
        return HBA_HOT_STANDBY if self.mode == "hot-standby" else HBA_LOAD_BALANCE


class LinkState(Enum):
    AWAITING_CONNECT = "awaiting-connect"  # secondary, before a CONNECT arrived
    AWAITING_CONNECTACK = "awaiting-connectack"  # primary (CONNECT sent once initiated)
    ESTABLISHED = "established"
    CLOSED = "closed"


class _Breach(Exception):
    """Internal: the partner broke the protocol (never leaves this module)."""

    def __init__(self, reason: int, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text


@dataclass(slots=True)
class _InboundUpdate:
    """A received BNDUPD awaiting our BNDACK: addresses in order and each one's answer."""

    addresses: list[IPv4Address]
    answers: list[tuple[int, str | None] | None]  # None = undecided; (0, _) = accepted


class PeerConnection:
    """The failover protocol on one TCP link, without I/O. See the module docstring."""

    def __init__(
        self, config: ConnectionConfig, now: float, updates: UpdateQueue | None = None
    ) -> None:
        self.config = config
        self.updates = updates if updates is not None else UpdateQueue()
        self.updates.window = 0
        self._dialect: Dialect = config.dialect
        self._framer = FrameBuffer()
        self._out = bytearray()
        # Unsigned: the BNDUPD/BNDACK fast path and the BNDACK template apply.
        self._fast = config.shared_secret is None
        primary = config.role == "primary"
        self._link = LinkState.AWAITING_CONNECTACK if primary else LinkState.AWAITING_CONNECT
        self._initiated = False
        self._next_xid = 1
        self._connect_xid: int | None = None
        self._handshake_deadline = now + config.connect_timeout_s
        self._now = now
        self._last_rx = now
        self._last_tx = now
        self._tx_interval = max(MIN_TX_INTERVAL_S, config.receive_timer / 3)
        self._skew: float | None = None
        self._skew_warned = False
        self._last_peer_xid: int | None = None
        self._mclt = config.mclt_s
        self._hba = config.connect_hba if config.role == "primary" else (config.hba or b"")
        self._partner_max_unacked = 0
        self._partner_receive_timer = 0
        self._partner_vendor: str | None = None
        self._partner_state: PartnerStateChanged | None = None
        self._my_state: tuple[int, int, int] | None = None  # (state, start_time, flags)
        self._inbound: dict[int, _InboundUpdate] = {}
        self._peer_update_requests: deque[int] = deque()
        self._deferred_done: list[tuple[int, int]] = []  # (xid, queue barrier)
        self._our_update_requests: set[int] = set()
        self._peer_pool_requests: deque[int] = deque()
        self._close_reason: ConnectionClosed | None = None

    # ------------------------------------------------------------------ properties
    @property
    def link_state(self) -> LinkState:
        return self._link

    @property
    def established(self) -> bool:
        return self._link is LinkState.ESTABLISHED

    @property
    def closed(self) -> bool:
        return self._link is LinkState.CLOSED

    @property
    def communications_ok(self) -> bool:
        """Handshake done and the partner's STATE has arrived (draft-12 §8.3)."""
        return self.established and self._partner_state is not None

    @property
    def partner_state(self) -> PartnerStateChanged | None:
        return self._partner_state

    @property
    def clock_skew_s(self) -> float | None:
        """Smoothed partner-clock-minus-ours (seconds), None before the first message."""
        return self._skew

    @property
    def mclt_s(self) -> int:
        return self._mclt

    @property
    def hba(self) -> bytes:
        return self._hba

    @property
    def tx_interval_s(self) -> float:
        return self._tx_interval

    @property
    def close_reason(self) -> ConnectionClosed | None:
        return self._close_reason

    # ------------------------------------------------------------------ I/O surface
    def initiate(self, now: float) -> None:
        """The TCP link is up. A primary sends CONNECT (spec §2.1: only the primary does);
        a secondary waits ``connect_timeout_s`` for one."""
        self._now = now
        if self._link is LinkState.CLOSED or self._initiated:
            return
        self._initiated = True
        self._handshake_deadline = now + self.config.connect_timeout_s
        if self.config.role != "primary" or self._link is not LinkState.AWAITING_CONNECTACK:
            return
        cfg = self.config
        msg = FailoverMessage(MessageType.CONNECT, self._new_xid())
        msg.add(_OC.RELATIONSHIP_NAME, cfg.relationship)
        msg.add(_OC.MAX_UNACKED_BNDUPD, cfg.max_unacked)
        msg.add(_OC.RECEIVE_TIMER, cfg.receive_timer)
        msg.add(_OC.VENDOR_CLASS_IDENTIFIER, cfg.vendor_class)
        msg.add(_OC.PROTOCOL_VERSION, PROTOCOL_VERSION)
        if self._dialect == "isc":  # Windows never sends TLS-request (MS-DHCPF 3.2.7.1)
            msg.add(_OC.TLS_REQUEST, 0)
        msg.add(_OC.MCLT, cfg.mclt_s)
        msg.add(_OC.HASH_BUCKET_ASSIGNMENT, self._hba)
        self._connect_xid = msg.xid
        self._send(msg, now)

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the TCP stream (any chunking); returns the resulting events."""
        self._now = now
        events: list[Event] = []
        if self._link is LinkState.CLOSED:
            return events
        try:
            frames = self._framer.feed(data)
        except DecodeError as exc:
            self._breach(events, now, _Breach(_RR.UNKNOWN_REASON, f"framing lost: {exc}"))
            return events
        for frame in frames:
            if self.closed:  # an earlier frame of this chunk ended the connection
                break
            try:
                self._handle_frame(frame, now, events)
            except _Breach as breach:
                self._breach(events, now, breach, self._refusing)
            except Exception as exc:  # a bug of ours on peer input: still never raise
                text = f"internal error on a {len(frame)}-byte message: {exc!r}"
                self._breach(events, now, _Breach(_RR.UNKNOWN_ERROR, text))
            finally:
                self._refusing = None
        return events

    def data_to_send(self) -> bytes:
        """Drain the bytes queued for the partner."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def get_timer(self) -> float | None:
        """The next deadline (epoch seconds), or None when closed."""
        if self._link is LinkState.CLOSED:
            return None
        if self._link is not LinkState.ESTABLISHED:
            return self._handshake_deadline
        due = min(self._last_rx + self.config.receive_timer, self._last_tx + self._tx_interval)
        if self._partner_state is None:
            due = min(due, self._handshake_deadline)
        return due

    def handle_timer(self, now: float) -> list[Event]:
        """Run whatever deadline has passed: handshake timeout, tReceive expiry, CONTACT."""
        self._now = now
        events: list[Event] = []
        if self._link is LinkState.CLOSED:
            return events
        if self._link is not LinkState.ESTABLISHED:
            if now >= self._handshake_deadline:
                waited = "CONNECT" if self.config.role == "secondary" else "CONNECTACK"
                self._close(events, f"no {waited} within {self.config.connect_timeout_s:g} s")
            return events
        if self._partner_state is None and now >= self._handshake_deadline:
            why = f"no STATE within {self.config.connect_timeout_s:g} s of the handshake"
            self._send_disconnect(_RR.NO_TRAFFIC, why, now)
            self._close(events, why, _RR.NO_TRAFFIC)
            return events
        silent = now - self._last_rx
        if silent >= self.config.receive_timer:
            self._send_disconnect(_RR.NO_TRAFFIC, f"nothing received for {silent:g} s", now)
            events.append(CommunicationsLost(silent))
            self._close(events, "receive timer expired", _RR.NO_TRAFFIC)
            return events
        if now - self._last_tx >= self._tx_interval:
            self._send(FailoverMessage(MessageType.CONTACT, self._new_xid()), now)
        return events

    def connection_lost(self, now: float) -> list[Event]:
        """The transport closed or failed underneath us."""
        self._now = now
        events: list[Event] = []
        if self._link is not LinkState.CLOSED:
            self._close(events, "transport closed", by_peer=True)
        return events

    def disconnect(self, reason: int, now: float, message: str | None = None) -> list[Event]:
        """Close on our own initiative: send DISCONNECT(``reason``) and close."""
        self._now = now
        events: list[Event] = []
        if self._link is LinkState.CLOSED:
            return events
        text = message or f"disconnect ({_reason_name(reason)})"
        self._send_disconnect(reason, text, now)
        self._close(events, text, reason)
        return events

    # ------------------------------------------------------------------ sending API
    def send_state(self, state: int, start_time: int, now: float, flags: int = 0) -> None:
        """Announce our server state (draft-12 §9.2). Before the handshake it is remembered
        and sent right after CONNECTACK; afterwards it is sent at once."""
        self._now = now
        if self._link is LinkState.CLOSED:
            return
        self._my_state = (int(state), int(start_time), int(flags))
        if self._link is LinkState.ESTABLISHED:
            self._send_my_state(now)

    def queue_binding_update(self, update: BindingUpdate, now: float | None = None) -> int:
        """Queue a BNDUPD for ``update``; it leaves as soon as the window allows.

        Returns the queue sequence number. Works in any link state: the queue outlives the
        connection. Raises ``ValueError``/``TypeError`` if the update cannot be encoded in
        this dialect (a bug on our side, reported to the caller rather than mid-flush).
        """
        now = self._tick(now)
        # Encoded once, here (the validation), and kept: the send patches in the xid and
        # time, or, with a shared secret, encodes again to sign (docs/performance.md).
        wire = encode(FailoverMessage(MessageType.BNDUPD, 0, 0, update.to_options()),
                      self._dialect)
        seq = self.updates.push(update, wire)
        self._flush(now)
        return seq

    def flush_updates(self, now: float | None = None) -> None:
        """Send the queued BNDUPDs the window allows (e.g. after held updates were released)."""
        self._flush(self._tick(now))

    def ack_binding_update(
        self,
        xid: int,
        reject_reason: int | None = None,
        *,
        address: IPv4Address | None = None,
        message: str | None = None,
        now: float | None = None,
    ) -> None:
        """Answer the partner's BNDUPD ``xid`` once its bindings are committed.

        Without ``address`` the answer applies to every address of the BNDUPD not yet
        answered; with it, to that address only (batched Windows updates). The BNDACK goes
        out when every address of the BNDUPD has an answer, listing them in the BNDUPD's
        order (Windows requires that). After the link closed, nothing is sent (draft-12: a
        BNDACK goes only on the connection its BNDUPD came in on).
        """
        now = self._tick(now)
        if self._link is LinkState.CLOSED:
            return
        pending = self._inbound.get(xid)
        if pending is None:
            raise ValueError(f"no BNDUPD with xid {xid} awaits an answer")
        answer = (int(reject_reason) if reject_reason else 0, message)
        matched = False
        for i, addr in enumerate(pending.addresses):
            if pending.answers[i] is None and (address is None or addr == address):
                pending.answers[i] = answer
                matched = True
        if not matched and address is not None:
            raise ValueError(f"BNDUPD {xid} has no unanswered address {address}")
        if all(a is not None for a in pending.answers):
            self._send_bndack(xid, pending, now)

    def request_updates(self, all: bool, now: float | None = None) -> int | None:
        """Send UPDREQALL (``all``) or UPDREQ; returns its xid (None if closed)."""
        now = self._tick(now)
        if not self._ready_to_send():
            return None
        msg = FailoverMessage(MessageType.UPDREQALL if all else MessageType.UPDREQ, self._new_xid())
        self._our_update_requests.add(msg.xid)
        self._send(msg, now)
        return msg.xid

    def send_update_done(self, xid: int | None = None, now: float | None = None) -> None:
        """Answer the partner's UPDREQ/UPDREQALL ``xid`` (default: the oldest unanswered).

        The UPDDONE is held back until every binding update queued so far has been ACKed
        (draft-12 §7.7), then sent automatically.
        """
        now = self._tick(now)
        if not self._ready_to_send():
            return
        if xid is None:
            if not self._peer_update_requests:
                raise ValueError("no update request awaits an UPDDONE")
            xid = self._peer_update_requests.popleft()
        else:
            try:
                self._peer_update_requests.remove(xid)
            except ValueError:
                raise ValueError(f"no update request with xid {xid} awaits an UPDDONE") from None
        self._deferred_done.append((xid, self.updates.barrier()))
        self._flush_done(now)

    def send_pool_request(self, now: float | None = None) -> int | None:
        """Send POOLREQ (isc dialect only: Windows never uses it). Returns its xid."""
        now = self._tick(now)
        if self._dialect == "windows":
            raise ValueError("POOLREQ is not used with Windows (spec §10)")
        if not self._ready_to_send():
            return None
        msg = FailoverMessage(MessageType.POOLREQ, self._new_xid())
        self._send(msg, now)
        return msg.xid

    def send_pool_response(
        self, count: int, xid: int | None = None, now: float | None = None
    ) -> None:
        """Answer the partner's POOLREQ ``xid`` (default: the oldest unanswered)."""
        now = self._tick(now)
        if not self._ready_to_send():
            return
        if xid is None:
            if not self._peer_pool_requests:
                raise ValueError("no POOLREQ awaits a POOLRESP")
            xid = self._peer_pool_requests.popleft()
        else:
            try:
                self._peer_pool_requests.remove(xid)
            except ValueError:
                raise ValueError(f"no POOLREQ with xid {xid} awaits a POOLRESP") from None
        msg = FailoverMessage(MessageType.POOLRESP, xid)
        msg.add(_OC.ADDRESSES_TRANSFERRED, count)
        self._send(msg, now)

    # ------------------------------------------------------------------ receive path
    _refusing: FailoverMessage | None = None  # a CONNECT being refused (answer: CONNECTACK)

    def _handle_frame(self, frame: bytes, now: float, events: list[Event]) -> None:
        if self._fast and self._link is LinkState.ESTABLISHED and self._fast_frame(
            frame, now, events
        ):
            return
        try:
            msg = decode(frame, self._dialect)
        except DecodeError as exc:
            raise _Breach(_RR.UNKNOWN_REASON, f"malformed message: {exc}") from None
        if msg.msg_type == MessageType.CONNECT:
            self._refusing = msg
        secret = self.config.shared_secret
        if secret is not None:
            check = verify_digest(frame, secret)
            if check is not DigestCheck.OK:
                raise _Breach(int(check), f"message digest check failed: {check.name.lower()}")
        elif msg.has(_OC.MESSAGE_DIGEST):
            raise _Breach(_RR.DIGEST_NOT_CONFIGURED, "message digest received, none configured")
        mtype = msg.msg_type
        if not isinstance(mtype, MessageType):
            if mtype >= 128:  # draft-12 §6.1: SHOULD ignore
                self._last_rx = now
                return
            raise _Breach(_RR.UNKNOWN_REASON, f"unknown message type {mtype}")
        problem = batch_violation(msg, self._dialect)
        if problem is not None:
            raise _Breach(_RR.UNKNOWN_REASON, f"{mtype.name}: {problem}")
        if secret is not None and self.config.require_increasing_xid and mtype in _PEER_ORIGINATED:
            if self._last_peer_xid is not None and msg.xid <= self._last_peer_xid:
                raise _Breach(
                    _RR.DIGEST_MISMATCH,
                    f"xid {msg.xid} not above {self._last_peer_xid} (replay?)",
                )
            self._last_peer_xid = msg.xid
        self._last_rx = now
        sample = msg.time - now
        if self._link is not LinkState.ESTABLISHED:
            self._handshake(msg, sample, now, events)
            return
        self._check_time(sample, secret is not None, events)
        handler = self._HANDLERS.get(mtype)
        if handler is None:  # CONNECT or CONNECTACK again
            if mtype == MessageType.CONNECT:
                raise _Breach(_RR.DUPLICATE_CONNECTION, "CONNECT on an established connection")
            raise _Breach(_RR.UNKNOWN_REASON, f"{mtype.name} on an established connection")
        handler(self, msg, now, events)

    def _fast_frame(self, frame: bytes, now: float, events: list[Event]) -> bool:
        """The common BNDUPD / BNDACK (one address, the usual options, unsigned) decoded
        straight to its values. False for anything else: the general path then handles it,
        with the same result for what this takes (tests/unit/test_failover_fast_path.py)."""
        kind = frame[2] if len(frame) > 2 else -1
        codes = _FAST_CODES.get(kind)
        got = decode_one_group(frame, self._dialect, codes) if codes is not None else None
        if got is None:
            return False
        _t, time_, xid, values = got
        self._last_rx = now
        self._check_time(time_ - now, False, events)
        address = values[_ADDRESS]
        assert isinstance(address, IPv4Address)  # assigned-IP-address decodes as IPv4
        if kind == _BNDUPD:
            try:
                item: BindingUpdate | str = BindingUpdate.from_values(values)
            except ValueError as exc:
                item = str(exc)
            self._take_bndupd(xid, [(address, item)], now, events)
            return True
        update = self.updates.in_flight_update(xid)
        if update is not None:
            reject = values.get(_OC.REJECT_REASON)
            text = values.get(_OC.MESSAGE)
            self._settle_bndack(
                xid,
                update,
                address,
                reject if isinstance(reject, int) else None,
                text.rstrip("\x00") if isinstance(text, str) else None,
                now,
                events,
            )
        return True

    def _check_time(self, sample: float, signed: bool, events: list[Event]) -> None:
        """The skew of a message on an established link (``sample`` = its time - ours)."""
        # With a secret every message's time must be fresh too: a signed message replayed
        # later (e.g. into another connection, whose xids start again) is refused.
        if (self.config.skew_every_message or signed) and abs(sample) > self.config.max_skew_s:
            raise _Breach(_RR.TIME_MISMATCH, f"clock skew {sample:+.0f} s beyond limit")
        self._note_skew(sample, events)

    # handshake ------------------------------------------------------------------------
    def _handshake(
        self, msg: FailoverMessage, sample: float, now: float, events: list[Event]
    ) -> None:
        mtype = msg.msg_type
        if mtype == MessageType.DISCONNECT:
            self._on_disconnect(msg, now, events)
            return
        if self.config.role == "secondary":
            if mtype != MessageType.CONNECT:
                raise _Breach(_RR.UNKNOWN_REASON, f"expected CONNECT, got {_type_name(mtype)}")
            self._on_connect(msg, sample, now, events)
            return
        if mtype == MessageType.CONNECT:
            raise _Breach(_RR.INVALID_PARTNER, "CONNECT from a partner that also claims primary")
        if mtype != MessageType.CONNECTACK:
            raise _Breach(_RR.UNKNOWN_REASON, f"expected CONNECTACK, got {_type_name(mtype)}")
        if self._connect_xid is None or msg.xid != self._connect_xid:
            return  # draft-12 §7.9.2: a CONNECTACK for another CONNECT is ignored
        self._on_connectack(msg, sample, now, events)

    def _check_common(self, msg: FailoverMessage, sample: float) -> tuple[int, int]:
        """Checks CONNECT and CONNECTACK share; returns (max-unacked, receive-timer)."""
        name = msg.text(_OC.RELATIONSHIP_NAME)
        if name is None:
            raise _Breach(_RR.INVALID_PARTNER, "relationship-name missing")
        if name != self.config.relationship:
            raise _Breach(_RR.INVALID_PARTNER, f"unknown relationship {name!r}")
        version = msg.get_int(_OC.PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION:
            raise _Breach(_RR.PROTOCOL_VERSION_MISMATCH, f"protocol version {version}")
        if abs(sample) > self.config.max_skew_s:
            raise _Breach(
                _RR.TIME_MISMATCH,
                f"clock skew {sample:+.0f} s exceeds {self.config.max_skew_s:g} s",
            )
        max_unacked = msg.get_int(_OC.MAX_UNACKED_BNDUPD)
        if not max_unacked:
            raise _Breach(_RR.UNKNOWN_REASON, "max-unacked-bndupd missing or zero")
        receive_timer = msg.get_int(_OC.RECEIVE_TIMER)
        if not receive_timer:
            raise _Breach(_RR.UNKNOWN_REASON, "receive-timer missing or zero")
        return max_unacked, receive_timer

    def _on_connect(
        self, msg: FailoverMessage, sample: float, now: float, events: list[Event]
    ) -> None:
        cfg = self.config
        max_unacked, receive_timer = self._check_common(msg, sample)
        tls = msg.get_int(_OC.TLS_REQUEST)
        if tls is not None and tls >= 2:
            raise _Breach(_RR.TLS_NOT_SUPPORTED, "partner requires TLS; not supported")
        mclt = msg.get_int(_OC.MCLT)
        if not mclt:
            raise _Breach(_RR.INVALID_MCLT, "MCLT missing or zero")
        if mclt != cfg.mclt_s and not cfg.adopt_partner_mclt:
            raise _Breach(_RR.INVALID_MCLT, f"MCLT {mclt} s differs from ours ({cfg.mclt_s} s)")
        hba = msg.get(_OC.HASH_BUCKET_ASSIGNMENT)
        if not isinstance(hba, bytes) or len(hba) != HBA_SIZE:
            raise _Breach(_RR.HBA_CONFLICT, "hash-bucket-assignment missing or not 32 bytes")
        if self._dialect == "isc":  # Windows ignores the received HBA's value (spec §3.3)
            if cfg.hba is not None and hba != cfg.hba:
                raise _Breach(_RR.HBA_CONFLICT, "hash-bucket-assignment differs from ours")
            uniform = hba in (b"\x00" * HBA_SIZE, b"\xff" * HBA_SIZE)
            if cfg.hba is not None:
                pass  # the exact comparison above decided (a 100/0 load balance is uniform)
            elif cfg.mode == "hot-standby" and not uniform:
                raise _Breach(_RR.HBA_CONFLICT, "mode mismatch: load-balance HBA, hot-standby here")
            elif cfg.mode == "load-balance" and uniform:
                raise _Breach(_RR.HBA_CONFLICT, "mode mismatch: hot-standby HBA, load-balance here")
        self._mclt = mclt
        self._hba = hba
        ack = FailoverMessage(MessageType.CONNECTACK, msg.xid)
        ack.add(_OC.RELATIONSHIP_NAME, cfg.relationship)
        ack.add(_OC.MAX_UNACKED_BNDUPD, cfg.max_unacked)
        ack.add(_OC.RECEIVE_TIMER, cfg.receive_timer)
        ack.add(_OC.VENDOR_CLASS_IDENTIFIER, cfg.vendor_class)
        ack.add(_OC.PROTOCOL_VERSION, PROTOCOL_VERSION)
        if tls is not None:
            ack.add(_OC.TLS_REPLY, 0)
        self._send(ack, now)
        self._establish(msg, sample, max_unacked, receive_timer, now, events)

    def _on_connectack(
        self, msg: FailoverMessage, sample: float, now: float, events: list[Event]
    ) -> None:
        reject = msg.get_int(_OC.REJECT_REASON)
        if reject is not None:
            text = msg.text(_OC.MESSAGE) or _reason_name(reject)
            self._close(events, f"CONNECT refused: {text}", reject, by_peer=True)
            return
        max_unacked, receive_timer = self._check_common(msg, sample)
        if msg.get_int(_OC.TLS_REPLY) == 1:
            raise _Breach(_RR.TLS_NOT_SUPPORTED, "partner requires TLS; not supported")
        self._establish(msg, sample, max_unacked, receive_timer, now, events)

    def _establish(
        self,
        msg: FailoverMessage,
        sample: float,
        max_unacked: int,
        receive_timer: int,
        now: float,
        events: list[Event],
    ) -> None:
        cfg = self.config
        self._link = LinkState.ESTABLISHED
        # The partner's STATE is due right after the handshake (draft-12 §8.3); without it
        # neither side can leave its state, so a link where it never comes is closed and
        # re-established (``handle_timer``).
        self._handshake_deadline = now + cfg.connect_timeout_s
        self._partner_max_unacked = max_unacked
        self._partner_receive_timer = receive_timer
        self._partner_vendor = msg.text(_OC.VENDOR_CLASS_IDENTIFIER)
        if cfg.keepalive_s is not None:
            tx = cfg.keepalive_s
        else:
            tx = receive_timer / 3
            if self._dialect == "windows":
                tx = min(tx, WINDOWS_MAX_TX_INTERVAL_S)
        self._tx_interval = max(MIN_TX_INTERVAL_S, tx)
        self.updates.window = max_unacked
        events.append(
            Connected(
                relationship=cfg.relationship,
                partner_address=cfg.partner_address,
                partner_max_unacked=max_unacked,
                partner_receive_timer_s=receive_timer,
                mclt_s=self._mclt,
                hba=self._hba,
                partner_vendor_class=self._partner_vendor,
                tx_interval_s=self._tx_interval,
                skew_s=sample,
            )
        )
        self._note_skew(sample, events)
        if self._my_state is not None:
            self._send_my_state(now)

    # established ----------------------------------------------------------------------
    def _on_state(self, msg: FailoverMessage, now: float, events: list[Event]) -> None:
        state = msg.get_int(_OC.SERVER_STATE)
        stos = msg.get_int(_OC.START_TIME_OF_STATE)
        if state is None or stos is None:
            raise _Breach(_RR.UNKNOWN_REASON, "STATE without server-state or start-time-of-state")
        flags = msg.get_int(_OC.SERVER_FLAGS) or 0
        first = self._partner_state is None
        self._partner_state = PartnerStateChanged(state, flags, stos)
        events.append(self._partner_state)
        if first:
            self._flush(now)

    def _on_bndupd(self, msg: FailoverMessage, now: float, events: list[Event]) -> None:
        _, groups = msg.address_groups()
        if not groups:
            raise _Breach(_RR.MISSING_BINDING_INFO, "BNDUPD without assigned-IP-address")
        items: list[tuple[IPv4Address, BindingUpdate | str]] = []
        for group in groups:
            address = group[0].value
            assert isinstance(address, IPv4Address)  # assigned-IP-address decodes as IPv4
            try:
                items.append((address, BindingUpdate.from_group(group)))
            except ValueError as exc:
                items.append((address, str(exc)))
        self._take_bndupd(msg.xid, items, now, events)

    def _take_bndupd(
        self,
        xid: int,
        items: list[tuple[IPv4Address, BindingUpdate | str]],
        now: float,
        events: list[Event],
    ) -> None:
        """A received BNDUPD's groups: each address with its update, or why it has none."""
        if xid in self._inbound:
            raise _Breach(_RR.UNKNOWN_REASON, f"BNDUPD xid {xid} reused before its BNDACK")
        if len(self._inbound) >= self.config.max_unacked:
            raise _Breach(
                _RR.UNKNOWN_REASON, f"more than max-unacked ({self.config.max_unacked}) BNDUPDs"
            )
        pending = _InboundUpdate([], [])
        received: list[BindingUpdateReceived] = []
        for address, item in items:
            pending.addresses.append(address)
            if isinstance(item, str):
                pending.answers.append((_RR.MISSING_BINDING_INFO, item))
                continue
            pending.answers.append(None)
            received.append(BindingUpdateReceived(xid, item))
        self._inbound[xid] = pending
        events.extend(received)
        if not received:
            self._send_bndack(xid, pending, now)

    def _on_bndack(self, msg: FailoverMessage, now: float, events: list[Event]) -> None:
        update = self.updates.in_flight_update(msg.xid)
        if update is None:
            return  # stale or unknown xid: nothing of ours to settle (ISC logs and ignores)
        head, groups = msg.address_groups()
        opts: list[Option] = head
        if groups:
            match = [g for g in groups if g[0].value == update.address]
            if not match:
                problem = f"BNDACK {msg.xid} does not name {update.address}"
                raise _Breach(_RR.UNKNOWN_REASON, problem)
            opts = match[0]
        reject: int | None = None
        text: str | None = None
        for code, value in opts:
            if code == _OC.REJECT_REASON and isinstance(value, int):
                reject = value
            elif code == _OC.MESSAGE and isinstance(value, str):
                text = value.rstrip("\x00")
        self._settle_bndack(msg.xid, update, None, reject, text, now, events)

    def _settle_bndack(
        self,
        xid: int,
        update: BindingUpdate,
        named: IPv4Address | None,
        reject: int | None,
        text: str | None,
        now: float,
        events: list[Event],
    ) -> None:
        """The BNDACK of our in-flight ``update``; ``named``: the one address it lists, to
        check (None: checked already)."""
        if named is not None and named != update.address:
            raise _Breach(_RR.UNKNOWN_REASON, f"BNDACK {xid} does not name {update.address}")
        self.updates.ack(xid)
        events.append(BindingAcked(xid, update.address, update, reject, text))
        self._flush(now)
        self._flush_done(now)

    def _on_updreq(self, msg: FailoverMessage, now: float, events: list[Event]) -> None:
        scopes = msg.get(_OC.MS_SCOPE_ID_LIST) if self._dialect == "windows" else None
        scope_ids = scopes if isinstance(scopes, tuple) else ()
        self._peer_update_requests.append(msg.xid)
        events.append(
            UpdateRequestReceived(msg.xid, msg.msg_type == MessageType.UPDREQALL, scope_ids)
        )

    def _on_upddone(self, msg: FailoverMessage, now: float, events: list[Event]) -> None:
        if msg.xid in self._our_update_requests:
            self._our_update_requests.discard(msg.xid)
            events.append(UpdateDoneReceived(msg.xid))

    def _on_poolreq(self, msg: FailoverMessage, now: float, events: list[Event]) -> None:
        if self._dialect == "windows":
            return  # Windows drops POOLREQ; so do we on a Windows relationship
        self._peer_pool_requests.append(msg.xid)
        events.append(PoolRequestReceived(msg.xid))

    def _on_poolresp(self, msg: FailoverMessage, now: float, events: list[Event]) -> None:
        if self._dialect == "windows":
            return
        events.append(PoolResponseReceived(msg.xid, msg.get_int(_OC.ADDRESSES_TRANSFERRED) or 0))

    def _on_contact(self, msg: FailoverMessage, now: float, events: list[Event]) -> None:
        return None  # receiving it already reset tReceive

    def _on_disconnect(self, msg: FailoverMessage, now: float, events: list[Event]) -> None:
        reason = msg.get_int(_OC.REJECT_REASON)
        text = msg.text(_OC.MESSAGE) or (_reason_name(reason) if reason is not None else "")
        self._close(events, f"partner disconnected: {text}".rstrip(": "), reason, by_peer=True)

    # ------------------------------------------------------------------ internals
    def _tick(self, now: float | None) -> float:
        if now is not None:
            self._now = now
        return self._now

    def _ready_to_send(self) -> bool:
        if self._link is LinkState.CLOSED:
            return False
        if self._link is not LinkState.ESTABLISHED:
            raise ValueError("the failover connection is not established yet")
        return True

    def _new_xid(self) -> int:
        xid = self._next_xid
        self._next_xid = xid % 0xFFFFFFFF + 1  # 1 .. 2**32-1; 0 is never used
        return xid

    def _send(self, msg: FailoverMessage, now: float) -> None:
        msg.time = int(now) & 0xFFFFFFFF
        self._out += encode(
            msg,
            self._dialect,
            secret=self.config.shared_secret,
            digest_type=self.config.digest_type,
        )
        self._last_tx = now

    def _send_my_state(self, now: float) -> None:
        assert self._my_state is not None
        state, stos, flags = self._my_state
        msg = FailoverMessage(MessageType.STATE, self._new_xid())
        msg.add(_OC.SERVER_STATE, state)
        msg.add(_OC.SERVER_FLAGS, flags & ServerFlags.STARTUP)
        msg.add(_OC.START_TIME_OF_STATE, stos)
        self._send(msg, now)

    def _send_disconnect(self, reason: int, text: str, now: float) -> None:
        msg = FailoverMessage(MessageType.DISCONNECT, self._new_xid())
        msg.add(_OC.REJECT_REASON, reason)
        msg.add(_OC.MESSAGE, text[:200])
        self._send(msg, now)

    def _send_bndack(self, xid: int, pending: _InboundUpdate, now: float) -> None:
        del self._inbound[xid]
        answers = pending.answers
        if len(answers) == 1 and self._fast:
            answer = answers[0]
            if answer is None or not answer[0]:
                # The common case (one accepted address, unsigned): the bytes encode() would
                # produce, from a template (a full sync sends one per binding).
                tpl = _BNDACK_TEMPLATE[self._dialect]
                out = self._out
                out += tpl[:4]
                out += _pack_time_xid(int(now) & 0xFFFFFFFF, xid)
                out += tpl[12:-4]
                out += pending.addresses[0].packed
                self._last_tx = now
                return
        msg = FailoverMessage(MessageType.BNDACK, xid)
        for address, answer in zip(pending.addresses, pending.answers, strict=True):
            msg.add(_OC.ASSIGNED_IP_ADDRESS, address)
            if answer is not None and answer[0]:
                msg.add(_OC.REJECT_REASON, answer[0])
                if answer[1]:
                    msg.add(_OC.MESSAGE, answer[1][:200])
        self._send(msg, now)

    def _flush(self, now: float) -> None:
        """Send queued BNDUPDs while the window allows (only once communications are OK)."""
        if not self.communications_ok:
            return
        queue = self.updates
        signed = self.config.shared_secret is not None
        while queue.can_send:
            xid = self._new_xid()
            item = queue.pop_next_item(xid)
            if item is None:  # pragma: no cover - can_send said otherwise
                break
            wire = item.wire
            if wire is None or signed:
                msg = FailoverMessage(MessageType.BNDUPD, xid, 0, item.update.to_options())
                self._send(msg, now)
            else:
                # Byte-identical to encode() with this xid and time (only those differ).
                out = self._out
                out += wire[:4]
                out += _pack_time_xid(int(now) & 0xFFFFFFFF, xid)
                out += memoryview(wire)[12:]
                self._last_tx = now

    def _flush_done(self, now: float) -> None:
        if not self._deferred_done or self._link is not LinkState.ESTABLISHED:
            return
        still: list[tuple[int, int]] = []
        for xid, barrier in self._deferred_done:
            if self.updates.settled(barrier):
                self._send(FailoverMessage(MessageType.UPDDONE, xid), now)
            else:
                still.append((xid, barrier))
        self._deferred_done = still

    def _note_skew(self, sample: float, events: list[Event]) -> None:
        skew = sample if self._skew is None else self._skew + SKEW_ALPHA * (sample - self._skew)
        self._skew = skew
        limit = self.config.skew_warning
        if abs(skew) >= limit:
            if not self._skew_warned:
                self._skew_warned = True
                events.append(SkewWarning(skew, limit))
        elif abs(skew) < 0.9 * limit:
            self._skew_warned = False

    def _breach(
        self,
        events: list[Event],
        now: float,
        breach: _Breach,
        refusing: FailoverMessage | None = None,
    ) -> None:
        """The partner broke the protocol: refuse its CONNECT or DISCONNECT, then close."""
        if self._link is LinkState.CLOSED:
            return
        if refusing is not None and self._link is not LinkState.ESTABLISHED:
            ack = FailoverMessage(MessageType.CONNECTACK, refusing.xid)
            ack.add(_OC.RELATIONSHIP_NAME, self.config.relationship)
            ack.add(_OC.PROTOCOL_VERSION, PROTOCOL_VERSION)
            ack.add(_OC.REJECT_REASON, breach.reason)
            ack.add(_OC.MESSAGE, breach.text[:200])
            if refusing.has(_OC.TLS_REQUEST):
                ack.add(_OC.TLS_REPLY, 0)
            self._send(ack, now)
        else:
            self._send_disconnect(breach.reason, breach.text, now)
        self._close(events, breach.text, breach.reason)

    def _close(
        self,
        events: list[Event],
        reason: str,
        reject_reason: int | None = None,
        *,
        by_peer: bool = False,
    ) -> None:
        self._link = LinkState.CLOSED
        self.updates.requeue_in_flight()
        self.updates.window = 0
        self._inbound.clear()
        self._deferred_done.clear()
        self._close_reason = ConnectionClosed(reason, reject_reason, by_peer)
        events.append(self._close_reason)

    _HANDLERS = {
        MessageType.STATE: _on_state,
        MessageType.BNDUPD: _on_bndupd,
        MessageType.BNDACK: _on_bndack,
        MessageType.UPDREQ: _on_updreq,
        MessageType.UPDREQALL: _on_updreq,
        MessageType.UPDDONE: _on_upddone,
        MessageType.POOLREQ: _on_poolreq,
        MessageType.POOLRESP: _on_poolresp,
        MessageType.CONTACT: _on_contact,
        MessageType.DISCONNECT: _on_disconnect,
    }


def _reason_name(reason: int | None) -> str:
    if reason is None:
        return "no reason given"
    try:
        return RejectReason(reason).name.lower().replace("_", " ")
    except ValueError:
        return f"reject reason {reason}"


def _type_name(mtype: int) -> str:
    return mtype.name if isinstance(mtype, MessageType) else f"type {mtype}"
