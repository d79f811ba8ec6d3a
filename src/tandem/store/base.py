"""The one protocol every durable lease store implements."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from tandem.leases.model import Lease


class LeaseStore(Protocol):
    """A durable home for leases.

    ``commit`` is the durability point: when it returns, every lease passed to it survives
    ``kill -9`` and power loss (as far as fsync is honoured). Callers group a burst of
    changes into one commit; a store must never fsync per lease.
    Errors are raised as :class:`tandem.errors.StoreError`.
    """

    def load(self) -> list[Lease]:
        """Every lease in the store (latest version of each address)."""
        ...

    def commit(self, leases: Iterable[Lease]) -> None:
        """Insert or replace these leases (keyed by address), durably, in one transaction."""
        ...

    def get_meta(self, key: str) -> str | None:
        """Small durable key/value state (e.g. failover state and its start time)."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Durably set one meta value (its own commit)."""
        ...

    def close(self) -> None: ...
