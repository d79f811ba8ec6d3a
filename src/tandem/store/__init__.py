"""Durable lease stores behind one protocol (see :mod:`tandem.store.base`)."""
