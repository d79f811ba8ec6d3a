"""Fast :class:`~ipaddress.IPv4Address` construction from an int already known to be in range.

``IPv4Address(a)`` re-validates its argument (type, range) and costs ~0.75 µs; building one
per binding update, per pool address scanned or per decoded address shows up in a full
partner sync of 1,000,000 bindings (bench/scale.py). :func:`ipv4` makes the same object in
~0.16 µs. CPython's ``IPv4Address`` keeps its value in the ``_ip`` slot; the module checks at
import that an address made this way equals, hashes and prints as the ordinary one, and uses
the ordinary constructor otherwise. :func:`ip_int` reads the same slot back: ``int(address)``
runs ``ipaddress``'s interpreted ``__int__`` (~10 per DORA on the DHCP path, which the
optional compiled build cannot inline; this module is part of that build).
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address

__all__ = ["ip_int", "ipv4", "ipv4_from_packed"]


def _maker() -> Callable[[int], IPv4Address]:
    new = object.__new__

    def fast(a: int) -> IPv4Address:
        ip = new(IPv4Address)
        setattr(ip, "_ip", a)  # noqa: B010 - a slot typeshed does not declare
        return ip

    try:
        probe = fast(0xC0000201)
        ref = IPv4Address("192.0.2.1")
        if probe == ref and hash(probe) == hash(ref) and str(probe) == str(ref):
            return fast
    except (AttributeError, TypeError):  # pragma: no cover - another Python
        pass
    return IPv4Address  # pragma: no cover


#: ``ipv4(a)`` == ``IPv4Address(a)`` for ``0 <= a < 2**32`` (not checked: callers know).
ipv4: Callable[[int], IPv4Address] = _maker()


def ipv4_from_packed(data: bytes) -> IPv4Address:
    """``IPv4Address(data)`` for exactly 4 bytes (the caller checked the length)."""
    return ipv4(int.from_bytes(data, "big"))


def ip_int(address: IPv4Address) -> int:
    """``int(address)``, read from the ``_ip`` slot."""
    return address._ip  # type: ignore[attr-defined,no-any-return]


if getattr(IPv4Address("192.0.2.1"), "_ip", None) != 0xC0000201:  # pragma: no cover
    raise ImportError("tandem needs CPython's ipaddress (IPv4Address keeps its value in _ip)")
