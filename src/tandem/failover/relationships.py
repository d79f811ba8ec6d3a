"""Every failover relationship of one server, around one engine (sans-I/O).

A server may be in several relationships (``[[failover]]``): a hub that is the standby of
several sites, each site's primary its partner for that site's subnets only, plus subnets it
serves alone. :class:`FailoverSet` builds, from one config and one store:

* one :class:`~tandem.failover.peer.FailoverPeer` per relationship, built from
  :func:`~tandem.config.validate.relationship_config` (the config with that relationship
  alone), so it has its own state machine, connection, MCLT, reserve and pool: its binding
  updates and UPDREQALL answers carry only its own subnets' leases;
* one engine, whose policy is a :class:`~tandem.failover.router.PolicyRouter` sending every
  question about a subnet to that subnet's relationship (subnets in none are served alone).
  With one relationship covering every subnet (the ``[failover]`` table of old) the engine
  gets that relationship's policy directly, exactly as before;
* its own persisted state per relationship: the store meta key
  :data:`~tandem.failover.peer.META_STATE_KEY` for a server with one relationship (so an
  existing store loads unchanged), ``META_STATE_KEY + "/" + name`` with several.

Transports (``net/peer_tcp.py`` in the service, the simulator's peer links) drive each
:class:`Relationship`'s peer on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from tandem.config.schema import Config, FailoverSection
from tandem.config.validate import (
    failover_subnets,
    relationship_config,
    relationships,
    subnet_id,
)
from tandem.failover.machine import LogRecord
from tandem.failover.peer import META_STATE_KEY, BindingEngine, FailoverPeer, MetaStore
from tandem.failover.policy import Policy
from tandem.failover.router import PolicyRouter
from tandem.leases.model import Lease

__all__ = ["FailoverSet", "Relationship", "state_meta_key"]


def state_meta_key(name: str, single: bool) -> str:
    """Where a relationship's (state, start time) is stored: the historical key when the
    server has one relationship, one key per relationship name otherwise."""
    return META_STATE_KEY if single else f"{META_STATE_KEY}/{name}"


class _KeyedMeta:
    """The store's meta table with the peer's state key renamed to its relationship's."""

    def __init__(self, store: MetaStore, key: str) -> None:
        self._store = store
        self.key = key

    def _map(self, key: str) -> str:
        return self.key if key == META_STATE_KEY else key

    def get_meta(self, key: str) -> str | None:
        return self._store.get_meta(self._map(key))

    def set_meta(self, key: str, value: str) -> None:
        self._store.set_meta(self._map(key), value)


@dataclass(slots=True, eq=False)
class Relationship:
    """One relationship of this server: its settings, its config view, its peer."""

    index: int
    section: FailoverSection
    config: Config  # relationship_config(server config, section)
    peer: FailoverPeer
    meta_key: str
    subnet_ids: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.section.name


class FailoverSet:
    """Every relationship of a server and the one engine they share (module docstring).

    ``make_engine(policy)`` builds the engine with ``policy`` and the committed leases
    loaded; it is called once. ``log(name, record)`` receives each relationship's state
    records with the relationship's name.
    """

    def __init__(
        self,
        config: Config,
        store: MetaStore,
        now: float,
        make_engine: Callable[[Policy], BindingEngine],
        *,
        log: Callable[[str, LogRecord], None] | None = None,
        storage_lost_at: float | None = None,
    ) -> None:
        rels = relationships(config)
        if not rels:
            raise ValueError("FailoverSet needs at least one failover relationship")
        single = len(rels) == 1
        # One relationship over every subnet: its policy is the engine's (no router).
        direct = single and len(failover_subnets(config)) == len(config.subnets)
        self.config = config
        self.router: PolicyRouter | None = None if direct else PolicyRouter()
        self._engine: BindingEngine | None = None
        self.relationships: list[Relationship] = []
        for i, fo in enumerate(rels):
            view = relationship_config(config, fo)
            sids = tuple(subnet_id(config, k) for k in failover_subnets(view))

            def attach(policy: Policy, sids: tuple[int, ...] = sids) -> BindingEngine:
                if self.router is None:
                    self._engine = make_engine(policy)
                else:
                    self.router.route(sids, policy)
                    if self._engine is None:
                        self._engine = make_engine(self.router)
                return self._engine

            def on_record(record: LogRecord, name: str = fo.name) -> None:
                if log is not None:
                    log(name, record)

            key = state_meta_key(fo.name, single)
            peer = FailoverPeer(
                view,
                _KeyedMeta(store, key) if not single else store,
                now,
                attach,
                log=on_record if log is not None else None,
                storage_lost_at=storage_lost_at,
            )
            self.relationships.append(Relationship(i, fo, view, peer, key, sids))
        assert self._engine is not None

    @property
    def engine(self) -> BindingEngine:
        assert self._engine is not None
        return self._engine

    @property
    def peers(self) -> dict[str, FailoverPeer]:
        """Relationship name -> its peer (config order)."""
        return {r.name: r.peer for r in self.relationships}

    def relationship(self, name: str) -> Relationship:
        for r in self.relationships:
            if r.name == name:
                return r
        raise KeyError(name)

    def standalone_subnets(self) -> list[int]:
        """Ids of the subnets this server serves alone (in no relationship)."""
        shared = {sid for r in self.relationships for sid in r.subnet_ids}
        ids = [subnet_id(self.config, k) for k in range(len(self.config.subnets))]
        return [sid for sid in ids if sid not in shared]

    # ---- driving every peer at once (the simulator's hub; the service runs each alone)

    def get_timer(self) -> float | None:
        times = [t for t in (r.peer.get_timer() for r in self.relationships) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for r in self.relationships:
            t = r.peer.get_timer()
            if t is not None and t <= now:
                r.peer.handle_timer(now)

    def take_changed(self) -> list[Lease]:
        out: list[Lease] = []
        for r in self.relationships:
            out.extend(r.peer.take_changed())
        return out

    def take_lazy(self) -> list[Lease]:
        out: list[Lease] = []
        for r in self.relationships:
            out.extend(r.peer.take_lazy())
        return out

    def hold_updates(self, addresses: Iterable[IPv4Address]) -> None:
        """Hold the binding updates of ``addresses`` in every relationship (each peer keeps
        only its own subnets' addresses) until :meth:`release_updates`."""
        addresses = list(addresses)
        for r in self.relationships:
            r.peer.hold_updates(addresses)

    def release_updates(self, addresses: Iterable[IPv4Address], now: float) -> None:
        addresses = list(addresses)
        for r in self.relationships:
            r.peer.release_updates(addresses, now)
