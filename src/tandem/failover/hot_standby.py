"""The hot-standby failover policy: what the engine may answer, allocate and grant.

Implements :class:`tandem.failover.policy.Policy` for a hot-standby pair (hot-standby.md;
failover-protocol.md §8.3, draft-12 matrix with the Windows hot-standby rows):

* **Answer matrix** (:data:`ANSWERS`): the standby is silent in NORMAL; in
  COMMUNICATIONS-INTERRUPTED (and RESOLUTION-INTERRUPTED) it answers broadcast traffic only —
  never a unicast RENEWING; both answer everything in PARTNER-DOWN; RECOVER-DONE answers only
  RENEWING/REBINDING; STARTUP, RECOVER, RECOVER-WAIT, POTENTIAL-CONFLICT, PAUSED, SHUTDOWN
  answer nothing.
* **Allocation** per ownership (:func:`tandem.failover.bindings.may_allocate`): the standby
  only from its BACKUP reserve until MCLT after entering PARTNER-DOWN. ``usable_states``
  tells the engine which pool queues that leaves, so the primary never pops the standby's
  reserve (:func:`tandem.failover.bindings.usable_states`).
* **Lease time** per :func:`tandem.failover.mclt.lease_time`.
* **lease_changed** queues a :class:`LeaseChange` (lease snapshot + potential expiration)
  for the peer to send; the integration drains them with :meth:`HotStandbyPolicy.drain_updates`
  and reports BNDACKs with :meth:`HotStandbyPolicy.acknowledged`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from tandem.failover import bindings, mclt
from tandem.failover.bindings import Role
from tandem.failover.policy import RequestKind
from tandem.leases.model import BindingState, Lease
from tandem.wire.dhcp import DhcpMessage
from tandem.wire.failover import ServerState


@dataclass(frozen=True, slots=True)
class StateView:
    """What the policy needs from the failover state machine."""

    state: ServerState
    since: float  # start time of ``state`` (draft STOS), epoch seconds
    previous: ServerState | None = None  # the state before ``state`` (None: not known)


@dataclass(frozen=True, slots=True)
class LeaseChange:
    """A lease change the peer must send in a BNDUPD (it builds a
    :class:`tandem.failover.updates.BindingUpdate` from it)."""

    lease: Lease  # snapshot after the change
    pet: float | None  # potential expiration to send (option 18); None when not ACTIVE
    queued_at: float


_ALL = frozenset(RequestKind)
_NONE: frozenset[RequestKind] = frozenset()
_BROADCAST_ONLY = _ALL - {RequestKind.RENEWING}
_RENEW_REBIND = frozenset({RequestKind.RENEWING, RequestKind.REBINDING})

_P, _S = Role.PRIMARY, Role.SECONDARY
_St = ServerState

#: (my state, my role) -> the request kinds I answer. Absent pairs answer nothing.
ANSWERS: dict[tuple[ServerState, Role], frozenset[RequestKind]] = {
    (_St.NORMAL, _P): _ALL,
    (_St.NORMAL, _S): _NONE,  # hot standby: HBA gives every bucket to the primary
    (_St.COMMUNICATIONS_INTERRUPTED, _P): _ALL,
    (_St.COMMUNICATIONS_INTERRUPTED, _S): _BROADCAST_ONLY,  # hot-standby.md 2.4
    (_St.PARTNER_DOWN, _P): _ALL,
    (_St.PARTNER_DOWN, _S): _ALL,
    (_St.RESOLUTION_INTERRUPTED, _P): _ALL,
    (_St.RESOLUTION_INTERRUPTED, _S): _BROADCAST_ONLY,  # Windows: "per COMM-INT"
    (_St.CONFLICT_DONE, _P): _ALL,
    (_St.CONFLICT_DONE, _S): _NONE,  # a primary-only state
    (_St.RECOVER_DONE, _P): _RENEW_REBIND,
    (_St.RECOVER_DONE, _S): _RENEW_REBIND,
}


def answers(state: ServerState, role: Role, kind: RequestKind) -> bool:
    """The answer matrix as a function (see :data:`ANSWERS`)."""
    return kind in ANSWERS.get((state, role), _NONE)


class HotStandbyPolicy:
    """The engine's failover policy for one hot-standby relationship (see module docstring).

    ``state_provider`` returns this server's current state, either as a bare
    :class:`ServerState` or as a :class:`StateView` (with start time and previous state).
    With a bare state the policy notes the time it first *sees* each new state, which is
    later than the real change: the PARTNER-DOWN wait and the post-recovery MCLT caution
    then last longer (safe side)."""

    def __init__(
        self,
        role: Role | str,
        mclt_s: int,
        state_provider: Callable[[], ServerState | StateView],
    ) -> None:
        if mclt_s < 1:
            raise ValueError("mclt_s must be at least 1 second")
        self.role = Role(role)
        self.mclt_s = mclt_s
        self._provider = state_provider
        self._seen: StateView | None = None  # tracking for bare-state providers
        self._desired: dict[IPv4Address, int] = {}  # last desired lease time per address
        self._tstp: dict[IPv4Address, float] = {}  # PET last sent (queued) per address
        self._tsfp: dict[IPv4Address, float] = {}  # PET the partner acknowledged / sent
        self.outbound: list[LeaseChange] = []

    # ------------------------------------------------------------------ state

    def view(self, now: float) -> StateView:
        """The current state, with its start time and predecessor."""
        got = self._provider()
        if isinstance(got, StateView):
            return got
        seen = self._seen
        if seen is None:
            seen = StateView(got, now, None)
        elif seen.state is not got:
            seen = StateView(got, now, seen.state)
        self._seen = seen
        return seen

    # ------------------------------------------------------------------ Policy protocol

    def may_answer(self, msg: DhcpMessage, kind: RequestKind, now: float) -> bool:
        return answers(self.view(now).state, self.role, kind)

    def may_allocate(self, lease: Lease, now: float) -> bool:
        v = self.view(now)
        pd_since = v.since if v.state is ServerState.PARTNER_DOWN else None
        return bindings.may_allocate(
            self._with_tsfp(lease),
            self.role,
            v.state,
            now,
            self.mclt_s,
            partner_down_since=pd_since,
        )

    def usable_states(self, now: float) -> tuple[BindingState, ...]:
        """Which pool queues the engine may take addresses from now: the own state only,
        except in PARTNER-DOWN after the MCLT (see :func:`bindings.usable_states`)."""
        v = self.view(now)
        pd_since = v.since if v.state is ServerState.PARTNER_DOWN else None
        return bindings.usable_states(
            self.role, v.state, now, self.mclt_s, partner_down_since=pd_since
        )

    def max_lease_time(self, lease: Lease, desired_s: int, now: float) -> int:
        v = self.view(now)
        self._desired[lease.address] = desired_s
        # The acknowledged PET belongs to the binding it was sent for: only a lease still
        # bound (ACTIVE, unexpired) may build on it. An address freed by one client and now
        # given to another keeps its old tsfp (PARTNER-DOWN reuse needs it), but the partner
        # knows nothing of the new client: MCLT, as for any new lease.
        bound = lease.state is BindingState.ACTIVE and lease.end > now
        return mclt.lease_time(
            desired_s,
            now,
            self.mclt_s,
            self.base(lease) if bound else 0.0,
            v.state,
            state_since=v.since,
            previous=v.previous,
        )

    def lease_changed(self, lease: Lease, now: float) -> None:
        addr = lease.address
        pet: float | None = None
        if lease.state is BindingState.ACTIVE:
            granted = max(0, round(lease.end - now))
            desired = max(self._desired.pop(addr, granted), granted)
            pet = mclt.potential_expiration(now, desired, granted)
            self._tstp[addr] = pet
        snap = lease.copy()
        snap.tstp = self._tstp.get(addr, lease.tstp)
        snap.tsfp = self.base(lease)
        # ``lease`` is the snapshot the engine hands out to be committed: give it the same
        # times, so that the store records what the partner has not acknowledged yet
        # (tstp > tsfp) -- the update backlog survives a restart without a RAM queue.
        lease.tstp = snap.tstp
        lease.tsfp = snap.tsfp
        self.outbound.append(LeaseChange(snap, pet, now))

    # ------------------------------------------------------------------ peer side

    def base(self, lease: Lease) -> float:
        """max(acknowledged PET, received PET) for ``lease`` (the §7.2 base)."""
        return max(lease.tsfp, self._tsfp.get(lease.address, 0.0))

    def drain_updates(self) -> list[LeaseChange]:
        """The queued binding updates, oldest first; the queue is emptied."""
        out, self.outbound = self.outbound, []
        return out

    def acknowledged(self, address: IPv4Address, pet: float | None = None) -> None:
        """The partner ACKed our BNDUPD for ``address`` (carrying ``pet``; default: the last
        PET queued for it): it becomes the acknowledged base."""
        value = pet if pet is not None else self._tstp.get(address)
        if value is not None:
            self._tsfp[address] = value

    def received(self, address: IPv4Address, pet: float) -> None:
        """We ACKed a partner's BNDUPD carrying ``pet`` for ``address``. As ISC does, the
        received PET replaces the base even when it is lower."""
        self._tsfp[address] = pet

    def _with_tsfp(self, lease: Lease) -> Lease:
        known = self._tsfp.get(lease.address)
        tstp = self._tstp.get(lease.address)
        if (known is None or known <= lease.tsfp) and (tstp is None or tstp <= lease.tstp):
            return lease
        out = lease.copy()
        out.tsfp = max(lease.tsfp, known or 0.0)
        out.tstp = max(lease.tstp, tstp or 0.0)
        return out
