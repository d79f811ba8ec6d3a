"""Durable lease stores behind one protocol (see :mod:`tandem.store.base`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tandem.errors import StoreError
from tandem.store.base import LeaseStore
from tandem.store.sqlite import SqliteLeaseStore

if TYPE_CHECKING:  # keeps pydantic out of processes that only need a store
    from tandem.config.schema import StoreSection

__all__ = ["LeaseStore", "SqliteLeaseStore", "open_store"]


def open_store(section: StoreSection) -> LeaseStore:
    """Open the store the configuration names. Raises :class:`StoreError`."""
    if section.backend == "sqlite":
        return SqliteLeaseStore(section.path)
    raise StoreError(f"unknown store backend {section.backend!r}")  # pragma: no cover
