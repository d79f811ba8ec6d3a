"""One engine policy for a server in several failover relationships (hub and spoke).

A server may be in several relationships, each with its own partner and its own subnets,
and may serve further subnets alone. The engine has one :class:`~tandem.failover.policy.
Policy`; :class:`PolicyRouter` is that policy and hands every question to the policy of the
subnet it is about:

* ``may_allocate``, ``max_lease_time`` and ``lease_changed`` are about one lease: the
  policy of ``lease.subnet_id`` answers (a relationship's
  :class:`~tandem.failover.hot_standby.HotStandbyPolicy`, whose peer then sends the binding
  update to that relationship's partner only);
* ``may_answer`` is about a message; the engine selects the subnet first (it knows the
  receiving interface, relays, option 82) and asks :meth:`PolicyRouter.policy_for_subnet`.
  Called without a subnet, the router answers only when every policy would (the safe
  side: never answer for a partner that may be answering);
* a subnet in no relationship gets :class:`~tandem.failover.policy.StandalonePolicy`
  (answer everything, allocate anything, no MCLT cap).
"""

from __future__ import annotations

from collections.abc import Iterable

from tandem.failover.policy import Policy, RequestKind, StandalonePolicy
from tandem.leases.model import Lease
from tandem.wire.dhcp import DhcpMessage

__all__ = ["PolicyRouter"]


class PolicyRouter:
    """The engine's policy: dispatches per subnet id (see the module docstring)."""

    def __init__(self, default: Policy | None = None) -> None:
        self.default: Policy = default if default is not None else StandalonePolicy()
        self._by_subnet: dict[int, Policy] = {}
        self._policies: list[Policy] = []

    def route(self, subnet_ids: Iterable[int], policy: Policy) -> None:
        """Send every question about ``subnet_ids`` to ``policy``. A subnet belongs to at
        most one relationship (the config refuses two); routing it twice is a ValueError."""
        ids = list(subnet_ids)
        taken = [sid for sid in ids if sid in self._by_subnet]
        if taken:
            raise ValueError(f"subnet(s) {taken} already routed to another policy")
        for sid in ids:
            self._by_subnet[sid] = policy
        self._policies.append(policy)

    @property
    def routed(self) -> dict[int, Policy]:
        """subnet id -> its policy (a copy; subnets not in it are standalone)."""
        return dict(self._by_subnet)

    def policy_for_subnet(self, subnet_id: int | None) -> Policy:
        """The policy of ``subnet_id`` (``None`` or an unrouted subnet: the default)."""
        if subnet_id is None:
            return self.default
        return self._by_subnet.get(subnet_id, self.default)

    # ------------------------------------------------------------------ Policy protocol

    def may_answer(self, msg: DhcpMessage, kind: RequestKind, now: float) -> bool:
        # Without a subnet: only if nobody could object (the engine normally asks
        # policy_for_subnet once it has selected the subnet).
        return self.default.may_answer(msg, kind, now) and all(
            p.may_answer(msg, kind, now) for p in self._policies
        )

    def may_allocate(self, lease: Lease, now: float) -> bool:
        return self.policy_for_subnet(lease.subnet_id).may_allocate(lease, now)

    def max_lease_time(self, lease: Lease, desired_s: int, now: float) -> int:
        return self.policy_for_subnet(lease.subnet_id).max_lease_time(lease, desired_s, now)

    def lease_changed(self, lease: Lease, now: float) -> None:
        self.policy_for_subnet(lease.subnet_id).lease_changed(lease, now)
