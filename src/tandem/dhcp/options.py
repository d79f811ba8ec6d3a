"""Configured option sets as raw option values, and the few option layouts the engine reads.

``encode_option_set`` turns one :class:`~tandem.config.schema.OptionSet` into
``{code: raw value}``: the named options are encoded here (addresses packed, the domain name
as text); ``custom`` options come from their ``hex`` text or, for ``value``, from the option
registry (:func:`tandem.wire.dhcp_options.parse_config_value`, imported lazily). A custom
option overrides a named one with the same code. Levels merge by code: global < subnet <
reservation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address
from typing import Final

from tandem.config.schema import CustomOption, OptionSet
from tandem.errors import ConfigError
from tandem.wire.dhcp import (
    OPT_DNS_SERVERS,
    OPT_DOMAIN_NAME,
    OPT_NTP_SERVERS,
    OPT_ROUTER,
)

OPT_SUBNET_SELECTION: Final = 118  # RFC 3011
RAI_LINK_SELECTION: Final = 5  # RFC 3527, sub-option of option 82

__all__ = [
    "OPT_SUBNET_SELECTION",
    "RAI_LINK_SELECTION",
    "custom_value",
    "encode_option_set",
    "link_selection",
    "merge_options",
    "parse_relay_info",
]


def _pack_ips(ips: Iterable[IPv4Address]) -> bytes:
    return b"".join(ip.packed for ip in ips)


def custom_value(opt: CustomOption) -> bytes:
    """The raw bytes of one custom option (``hex`` or ``value``)."""
    if opt.hex is not None:
        text = opt.hex.strip()
        if text.lower().startswith("0x"):
            text = text[2:]
        text = text.replace(":", "").replace(" ", "").replace("-", "")
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise ConfigError([f"option {opt.code}: hex {opt.hex!r} is not hex"]) from None
    if opt.value is None:
        raise ConfigError([f"option {opt.code}: give hex or value"])
    from tandem.wire.dhcp_options import parse_config_value  # lazy: codec built separately

    try:
        return parse_config_value(opt.code, opt.value)
    except ValueError as exc:
        raise ConfigError([f"option {opt.code}: {exc}"]) from None


def encode_option_set(opts: OptionSet) -> dict[int, bytes]:
    """One option set as ``{code: raw value}`` (empty values are left out)."""
    out: dict[int, bytes] = {}
    if opts.routers:
        out[OPT_ROUTER] = _pack_ips(opts.routers)
    if opts.dns_servers:
        out[OPT_DNS_SERVERS] = _pack_ips(opts.dns_servers)
    if opts.domain_name:
        out[OPT_DOMAIN_NAME] = opts.domain_name.encode("utf-8")
    if opts.ntp_servers:
        out[OPT_NTP_SERVERS] = _pack_ips(opts.ntp_servers)
    for c in opts.custom:
        out[c.code] = custom_value(c)
    return out


def merge_options(*levels: Mapping[int, bytes]) -> dict[int, bytes]:
    """Later levels override earlier ones, code by code."""
    out: dict[int, bytes] = {}
    for level in levels:
        out.update(level)
    return out


def parse_relay_info(raw: bytes) -> dict[int, bytes]:
    """Option 82 sub-options (code, length, data)*; ``{}`` when malformed (RFC 3046)."""
    out: dict[int, bytes] = {}
    i, n = 0, len(raw)
    while i < n:
        if i + 2 > n:
            return {}
        code, length = raw[i], raw[i + 1]
        if i + 2 + length > n:
            return {}
        out.setdefault(code, raw[i + 2 : i + 2 + length])
        i += 2 + length
    return out


def link_selection(options: Mapping[int, bytes]) -> IPv4Address | None:
    """The link the client is on when a relay (RFC 3527 sub-option 82.5) or the client
    (RFC 3011 option 118) names it; the relay's word wins."""
    rai = options.get(82)
    if rai:
        sub = parse_relay_info(rai).get(RAI_LINK_SELECTION)
        if sub is not None and len(sub) == 4:
            return IPv4Address(sub)
    sel = options.get(OPT_SUBNET_SELECTION)
    if sel is not None and len(sel) == 4:
        return IPv4Address(sel)
    return None
