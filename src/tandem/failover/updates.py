"""Outbound binding updates with max-unacked flow control (draft-12 §7.1, §12.14).

A :class:`BindingUpdate` is the content of one address group of a BNDUPD (draft-12 Table
7.1-1): the decoded values the peer connection sends and receives. :class:`UpdateQueue` holds
the updates this server still owes its partner:

* ``pending``: queued, not yet sent, in queue order;
* ``in flight``: sent in a BNDUPD whose BNDACK has not arrived, keyed by the BNDUPD's xid.

At most ``window`` BNDUPDs are in flight (the partner's max-unacked-bndupd from CONNECT or
CONNECTACK); the rest wait. An ACK (accepting or rejecting) frees its slot. A newer update for
an address that is still *pending* replaces the older one in place (the partner only needs the
latest binding; ISC keeps a lease on its update queue once, too); an address that is in flight
is queued again behind it, so the partner sees the updates of one address in order.

The queue outlives a TCP connection: when a link drops, :meth:`UpdateQueue.requeue_in_flight`
puts the un-ACKed updates back at the head, in their original order, so the next connection
resends them first (draft-12 §7.1.1, spec §6.7 "link flap").

Lease changes that are not durable yet are *held* (:meth:`UpdateQueue.hold`): the service
holds the addresses the DHCP engine changed right after the engine step and releases them
(:meth:`UpdateQueue.release`) once the store commit holding those changes has completed. A
pending update of a held address keeps its place and its latest state but is skipped by
:meth:`UpdateQueue.pop_next`, so no BNDUPD tells the partner about a binding this server
could still forget in a crash (ISC writes the lease before it queues the update).

Every item gets a sequence number; :meth:`UpdateQueue.barrier` and :meth:`UpdateQueue.settled`
let the connection hold back an UPDDONE until every update queued before it was ACKed
(draft-12 §7.7: UPDDONE follows the BNDACKs of all the BNDUPDs that answered the request).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from tandem.wire.failover import HardwareAddress, Option, OptionCode

_OC = OptionCode
#: Codes a BindingUpdate keeps as named fields; every other option of a group goes to ``extra``.
_NAMED = frozenset(
    (
        _OC.ASSIGNED_IP_ADDRESS,
        _OC.BINDING_STATUS,
        _OC.CLIENT_IDENTIFIER,
        _OC.CLIENT_HARDWARE_ADDRESS,
        _OC.LEASE_EXPIRATION_TIME,
        _OC.POTENTIAL_EXPIRATION_TIME,
        _OC.START_TIME_OF_STATE,
        _OC.CLIENT_LAST_TRANSACTION_TIME,
        _OC.IP_FLAGS,
    )
)
#: The same as plain ints: the options a BNDUPD may carry to take the connection's fast path
#: (:func:`tandem.wire.failover.decode_one_group`).
NAMED_CODES: frozenset[int] = frozenset(int(c) for c in _NAMED)
# The same codes as module globals (a global is cheaper to read than an enum attribute).
_ADDR = _OC.ASSIGNED_IP_ADDRESS
_STATUS = _OC.BINDING_STATUS
_CID = _OC.CLIENT_IDENTIFIER
_HW = _OC.CLIENT_HARDWARE_ADDRESS
_LEASE_END = _OC.LEASE_EXPIRATION_TIME
_PET = _OC.POTENTIAL_EXPIRATION_TIME
_STOS = _OC.START_TIME_OF_STATE
_CLTT = _OC.CLIENT_LAST_TRANSACTION_TIME
_FLAGS = _OC.IP_FLAGS
_tuple_new = tuple.__new__


@dataclass(slots=True)  # not frozen: see docs/decisions.md (hot per-binding objects)
class BindingUpdate:
    """One address group of a BNDUPD, with typed values (times are absolute epoch seconds).

    ``binding_status`` is :class:`~tandem.wire.failover.BindingStatus` in the isc dialect and
    the raw Windows byte in the windows dialect (spec §5.6); ``ip_flags`` likewise. ``extra``
    carries any other option of the group in wire order (e.g. the Windows subnet mask, 33,
    which Windows requires in every lease update, or DDNS / client request options).
    """

    address: IPv4Address
    binding_status: int
    hwaddr: HardwareAddress | None = None
    client_id: bytes | None = None
    lease_expiration: int | None = None
    potential_expiration: int | None = None
    start_time_of_state: int | None = None
    cltt: int | None = None
    ip_flags: int | None = None
    extra: tuple[Option, ...] = ()

    def to_options(self) -> list[Option]:
        """The group's options in ISC's order (spec §3.2): 2, 3, 4, 5, 13, 18, 25, 6, 12, extra."""
        # Module-level codes and tuple.__new__: the same Options, built ~2x faster (a
        # primary answering UPDREQALL builds them twice per binding; bench/scale.py).
        new = _tuple_new
        opts = [new(Option, (_ADDR, self.address)), new(Option, (_STATUS, self.binding_status))]
        append = opts.append
        if self.client_id is not None:
            append(new(Option, (_CID, self.client_id)))
        if self.hwaddr is not None:
            append(new(Option, (_HW, self.hwaddr)))
        if self.lease_expiration is not None:
            append(new(Option, (_LEASE_END, self.lease_expiration)))
        if self.potential_expiration is not None:
            append(new(Option, (_PET, self.potential_expiration)))
        if self.start_time_of_state is not None:
            append(new(Option, (_STOS, self.start_time_of_state)))
        if self.cltt is not None:
            append(new(Option, (_CLTT, self.cltt)))
        if self.ip_flags is not None:
            append(new(Option, (_FLAGS, self.ip_flags)))
        opts.extend(self.extra)
        return opts

    @classmethod
    def from_group(cls, group: Iterable[Option]) -> BindingUpdate:
        """Build from a decoded address group (first option = assigned-IP-address).

        Raises ``ValueError`` when the group lacks the address or the binding-status (the
        connection answers such a group with reject reason 3, missing binding information).
        """
        values: dict[int, object] = {}
        extra: list[Option] = []
        named = _NAMED
        for opt in group:
            code = opt[0]
            if code in named and code not in values:
                values[code] = opt[1]
            else:
                extra.append(opt)
        return cls.from_values(values, tuple(extra))

    @classmethod
    def from_values(
        cls, values: Mapping[int, object], extra: tuple[Option, ...] = ()
    ) -> BindingUpdate:
        """Build from the decoded values of the named options (code -> value), as
        :meth:`from_group` does (the fast path of the connection hands them over directly:
        :func:`tandem.wire.failover.decode_one_group`). Raises ``ValueError`` likewise."""
        get = values.get
        address = get(_ADDR)
        status = get(_STATUS)
        if not isinstance(address, IPv4Address):
            raise ValueError("address group without assigned-IP-address")
        if not isinstance(status, int):
            raise ValueError(f"{address}: binding-status missing")
        hw = get(_HW)
        cid = get(_CID)
        return cls(
            address=address,
            binding_status=int(status),
            hwaddr=hw if isinstance(hw, HardwareAddress) else None,
            client_id=cid if isinstance(cid, bytes) else None,
            lease_expiration=_int_or_none(get(_LEASE_END)),
            potential_expiration=_int_or_none(get(_PET)),
            start_time_of_state=_int_or_none(get(_STOS)),
            cltt=_int_or_none(get(_CLTT)),
            ip_flags=_int_or_none(get(_FLAGS)),
            extra=extra,
        )


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int) else None


@dataclass(slots=True)
class QueuedUpdate:
    """A queued update and its queue sequence number (increasing in queue order)."""

    seq: int
    update: BindingUpdate
    #: The BNDUPD encoded once when queued (xid and time 0; the connection patches both at
    #: send time), or ``None``: encoded at send time.
    wire: bytes | None = None


@dataclass(slots=True)
class UpdateQueue:
    """Pending and in-flight binding updates; at most ``window`` BNDUPDs in flight.

    ``window`` is 0 until a connection sets it from the partner's max-unacked-bndupd, so
    nothing leaves before the handshake.
    """

    window: int = 0
    _pending: OrderedDict[int, QueuedUpdate] = field(default_factory=OrderedDict)
    _by_address: dict[IPv4Address, int] = field(default_factory=dict)  # pending seq by address
    _in_flight: dict[int, QueuedUpdate] = field(default_factory=dict)  # xid -> item (ordered)
    _next_seq: int = 1
    _held: set[IPv4Address] = field(default_factory=set)  # not durable yet: not sent
    _held_pending: int = 0  # how many pending items have a held address
    _flying: dict[IPv4Address, int] = field(default_factory=dict)  # in-flight count by address

    # -- producer side ---------------------------------------------------------------------
    def push(self, update: BindingUpdate, wire: bytes | None = None) -> int:
        """Queue ``update`` (``wire``: its BNDUPD already encoded, see
        :attr:`QueuedUpdate.wire`); returns its sequence number.

        A pending (unsent) update for the same address is replaced in place, keeping its
        position and sequence number.
        """
        seq = self._by_address.get(update.address)
        if seq is not None:
            item = self._pending[seq]
            item.update = update
            item.wire = wire
            return seq
        seq = self._next_seq
        self._next_seq += 1
        self._pending[seq] = QueuedUpdate(seq, update, wire)
        self._by_address[update.address] = seq
        if update.address in self._held:
            self._held_pending += 1
        return seq

    def hold(self, addresses: Iterable[IPv4Address]) -> None:
        """The changes of ``addresses`` are not durable yet: their updates (pending now or
        queued later) stay pending until :meth:`release`."""
        held = self._held
        for address in addresses:
            if address not in held:
                held.add(address)
                if address in self._by_address:
                    self._held_pending += 1

    def release(self, addresses: Iterable[IPv4Address]) -> int:
        """The commit holding the changes of ``addresses`` completed: their pending updates
        may leave (in queue order). Addresses that are not held are ignored. Returns how many
        pending updates became sendable."""
        held = self._held
        freed = 0
        for address in addresses:
            if address in held:
                held.discard(address)
                if address in self._by_address:
                    freed += 1
        self._held_pending -= freed
        return freed

    def is_held(self, address: IPv4Address) -> bool:
        return address in self._held

    @property
    def held_count(self) -> int:
        """Addresses held (changes not yet durable)."""
        return len(self._held)

    # -- sender side -----------------------------------------------------------------------
    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def in_flight_count(self) -> int:
        return len(self._in_flight)

    @property
    def can_send(self) -> bool:
        """A pending update that is not held may leave (the window has room)."""
        return len(self._pending) > self._held_pending and len(self._in_flight) < self.window

    def is_pending(self, address: IPv4Address) -> bool:
        """An update for ``address`` is queued and not yet sent."""
        return address in self._by_address

    def pending(self) -> Iterator[BindingUpdate]:
        """Pending updates in send order (for inspection)."""
        return (item.update for item in self._pending.values())

    def is_in_flight(self, address: IPv4Address) -> bool:
        """An update for ``address`` was sent and its BNDACK has not arrived."""
        return address in self._flying

    def in_flight(self) -> dict[int, BindingUpdate]:
        """xid -> update of every BNDUPD awaiting its BNDACK, in send order."""
        return {xid: item.update for xid, item in self._in_flight.items()}

    def in_flight_update(self, xid: int) -> BindingUpdate | None:
        """The update sent under ``xid`` if its BNDACK has not arrived (``in_flight().get``
        without copying the whole window per BNDACK)."""
        item = self._in_flight.get(xid)
        return item.update if item is not None else None

    def pop_next(self, xid: int) -> BindingUpdate | None:
        """Take the next pending update that is not held and mark it in flight under ``xid``.

        Returns ``None`` when nothing is sendable or the window is full. This is the only
        place updates leave the queue for the wire.
        """
        item = self.pop_next_item(xid)
        return item.update if item is not None else None

    def pop_next_item(self, xid: int) -> QueuedUpdate | None:
        """:meth:`pop_next`, returning the queue item (with its pre-encoded ``wire``)."""
        if not self.can_send:
            return None
        if xid in self._in_flight:
            raise ValueError(f"xid {xid} already in flight")
        if self._held_pending:
            held = self._held
            seq = next(s for s, it in self._pending.items() if it.update.address not in held)
            item = self._pending.pop(seq)
        else:
            _, item = self._pending.popitem(last=False)
        address = item.update.address
        del self._by_address[address]
        self._in_flight[xid] = item
        self._flying[address] = self._flying.get(address, 0) + 1
        return item

    def ack(self, xid: int) -> BindingUpdate | None:
        """The BNDACK for ``xid`` arrived (accept or reject): free its slot.

        Returns the acknowledged update, or ``None`` for an xid that is not in flight.
        """
        item = self._in_flight.pop(xid, None)
        if item is None:
            return None
        address = item.update.address
        n = self._flying[address] - 1
        if n:
            self._flying[address] = n
        else:
            del self._flying[address]
        return item.update

    def requeue_in_flight(self) -> int:
        """The link dropped: put every un-ACKed update back at the head, in send order.

        If the same address was queued again meanwhile, the newer pending update wins and the
        stale in-flight copy is dropped. Returns how many updates went back.
        """
        items = sorted(self._in_flight.values(), key=lambda it: it.seq)
        self._in_flight.clear()
        self._flying.clear()
        back = [it for it in items if it.update.address not in self._by_address]
        for it in reversed(back):
            self._pending[it.seq] = it
            self._pending.move_to_end(it.seq, last=False)
            self._by_address[it.update.address] = it.seq
            if it.update.address in self._held:
                self._held_pending += 1
        return len(back)

    # -- UPDDONE barrier -------------------------------------------------------------------
    def barrier(self) -> int:
        """Sequence number of the newest item queued so far (0 if none ever was)."""
        return self._next_seq - 1

    def settled(self, barrier: int) -> bool:
        """True when no item with ``seq <= barrier`` is still pending or in flight."""
        # Pending items are kept in sequence order (FIFO pops, in-place replacement keeps the
        # seq, re-queued items are older than anything pending), so the head decides.
        if self._pending and next(iter(self._pending)) <= barrier:
            return False
        return all(it.seq > barrier for it in self._in_flight.values())
