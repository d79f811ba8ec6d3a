"""Events a :class:`~tandem.failover.connection.PeerConnection` hands to its owner.

Every ``receive_data`` / ``handle_timer`` call returns a list of these, in the order things
happened. Times are epoch seconds as sent by the partner (no skew correction applied; the
connection exposes its skew estimate separately). :class:`ConnectionClosed` is always the last
event a connection emits, exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from tandem.failover.updates import BindingUpdate


@dataclass(frozen=True, slots=True)
class Connected:
    """The CONNECT/CONNECTACK handshake succeeded (communications are OK once the partner's
    STATE arrives: watch for :class:`PartnerStateChanged`)."""

    relationship: str
    partner_address: IPv4Address
    partner_max_unacked: int  # our send window
    partner_receive_timer_s: int
    mclt_s: int  # the MCLT in force for this connection
    hba: bytes  # the hash-bucket assignment in force (32 bytes)
    partner_vendor_class: str | None
    tx_interval_s: float  # how often we send CONTACT when idle
    skew_s: float  # partner clock minus ours, measured at the handshake


@dataclass(frozen=True, slots=True)
class PartnerStateChanged:
    """A STATE message arrived. ``state`` is a ServerState, or a plain int if unknown."""

    state: int
    flags: int
    start_time: int

    @property
    def startup(self) -> bool:
        return bool(self.flags & 0x01)


@dataclass(slots=True)  # not frozen: see docs/decisions.md (hot per-binding objects)
class BindingUpdateReceived:
    """One address group of a received BNDUPD; answer with ``ack_binding_update(xid, ...)``
    once the binding is committed (a batched BNDUPD yields one event per address, same xid)."""

    xid: int
    update: BindingUpdate


@dataclass(slots=True)  # not frozen: see docs/decisions.md (hot per-binding objects)
class BindingAcked:
    """The partner answered one of our BNDUPDs. ``reject_reason`` is None when accepted."""

    xid: int
    address: IPv4Address
    update: BindingUpdate
    reject_reason: int | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateRequestReceived:
    """UPDREQ (``all`` False) or UPDREQALL (``all`` True). ``scope_ids`` is the Windows scope
    filter (option 30) when present. Answer with BNDUPDs, then ``send_update_done(xid)``."""

    xid: int
    all: bool
    scope_ids: tuple[IPv4Address, ...] = ()


@dataclass(frozen=True, slots=True)
class UpdateDoneReceived:
    """The UPDDONE answering our UPDREQ/UPDREQALL ``xid``."""

    xid: int


@dataclass(frozen=True, slots=True)
class PoolRequestReceived:
    xid: int


@dataclass(frozen=True, slots=True)
class PoolResponseReceived:
    xid: int
    count: int


@dataclass(frozen=True, slots=True)
class CommunicationsLost:
    """Nothing arrived from the partner within the receive timer (tReceive)."""

    silent_for_s: float


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is over. ``by_peer``: the partner refused or disconnected us;
    otherwise we closed it (``reject_reason`` is what we sent, None for a plain close)."""

    reason: str
    reject_reason: int | None = None
    by_peer: bool = False


@dataclass(frozen=True, slots=True)
class SkewWarning:
    """The smoothed clock skew (partner minus us) crossed the warning threshold."""

    skew_s: float
    limit_s: float


Event = (
    Connected
    | PartnerStateChanged
    | BindingUpdateReceived
    | BindingAcked
    | UpdateRequestReceived
    | UpdateDoneReceived
    | PoolRequestReceived
    | PoolResponseReceived
    | CommunicationsLost
    | ConnectionClosed
    | SkewWarning
)
