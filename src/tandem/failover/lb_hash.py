"""RFC 3074 load balancing: the client hash, bucket shares and the hash-bucket assignment
(failover-protocol.md §8.2, §0.10; draft-12 §5.3, §12.11): pure.

* **Key (STID).** The contents of DHCP option 61 (client identifier, type byte included) when
  the client sent a non-empty one, else the client hardware address: the first ``hlen`` bytes
  of ``chaddr`` — not the 16-byte field, and no htype byte (ISC ``load_balance_mine``, Kea
  ``QueryFilter``). For a stored lease: its client identifier, else its hardware address.
* **Hash.** RFC 3074 §6 Pearson hash: seeded with the key length, run from the last key byte
  to the first over :data:`MIX_TABLE`; the result (0-255) is the client's bucket.
* **Shares.** The internal model is the set of buckets the PRIMARY serves. A primary share of
  ``p`` % is buckets ``0 .. round(256 * p / 100) - 1`` (ISC ``split``; spec §8.2's
  recommendation); the secondary serves the rest.
* **HBA on the wire** (option 11, 32 bytes): bucket ``b`` is bit ``b & 7`` (LSB = bit 0) of
  byte ``b >> 3`` in both dialects. Polarity: ``isc`` - a set bit means the primary serves the
  bucket (what ISC sends and expects); ``windows`` - draft-12 §12.11, a set bit means the
  secondary serves it. Windows ignores the HBA it receives (spec §3.3) and its own bitmap is
  unverified (spec §8.2); see docs/decisions.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from tandem.wire.dhcp import OPT_CLIENT_ID, DhcpMessage
from tandem.wire.failover import Dialect

__all__ = [
    "BUCKETS",
    "HBA_SIZE",
    "MIX_TABLE",
    "bucket_of",
    "decode_hba",
    "encode_hba",
    "hash_key",
    "lease_bucket",
    "message_bucket",
    "primary_buckets",
    "rfc3074_hash",
]

BUCKETS = 256
HBA_SIZE = 32

#: RFC 3074 §6 mixing table (a permutation of 0..255; identical in ISC and Kea).
MIX_TABLE = bytes(
    (
        251, 175, 119, 215, 81, 14, 79, 191, 103, 49, 181, 143, 186, 157, 0, 232,
        31, 32, 55, 60, 152, 58, 17, 237, 174, 70, 160, 144, 220, 90, 57, 223,
        59, 3, 18, 140, 111, 166, 203, 196, 134, 243, 124, 95, 222, 179, 197, 65,
        180, 48, 36, 15, 107, 46, 233, 130, 165, 30, 123, 161, 209, 23, 97, 16,
        40, 91, 219, 61, 100, 10, 210, 109, 250, 127, 22, 138, 29, 108, 244, 67,
        207, 9, 178, 204, 74, 98, 126, 249, 167, 116, 34, 77, 193, 200, 121, 5,
        20, 113, 71, 35, 128, 13, 182, 94, 25, 226, 227, 199, 75, 27, 41, 245,
        230, 224, 43, 225, 177, 26, 155, 150, 212, 142, 218, 115, 241, 73, 88, 105,
        39, 114, 62, 255, 192, 201, 145, 214, 168, 158, 221, 148, 154, 122, 12, 84,
        82, 163, 44, 139, 228, 236, 205, 242, 217, 11, 187, 146, 159, 64, 86, 239,
        195, 42, 106, 198, 118, 112, 184, 172, 87, 2, 173, 117, 176, 229, 247, 253,
        137, 185, 99, 164, 102, 147, 45, 66, 231, 52, 141, 211, 194, 206, 246, 238,
        56, 110, 78, 248, 63, 240, 189, 93, 92, 51, 53, 183, 19, 171, 72, 50,
        33, 104, 101, 69, 8, 252, 83, 120, 76, 135, 85, 54, 202, 125, 188, 213,
        96, 235, 136, 208, 162, 129, 190, 132, 156, 38, 47, 1, 7, 254, 24, 4,
        216, 131, 89, 21, 28, 133, 37, 153, 149, 80, 170, 68, 6, 169, 234, 151,
    )
)


def rfc3074_hash(key: bytes) -> int:
    """The RFC 3074 §6 bucket (0-255) of ``key``."""
    h = len(key) & 0xFF
    table = MIX_TABLE
    for b in reversed(key):
        h = table[h ^ b]
    return h


def hash_key(client_id: bytes | None, hwaddr: bytes) -> bytes:
    """What is hashed: the client identifier when present and non-empty, else the hardware
    address (``hlen`` bytes, without htype)."""
    return client_id if client_id else hwaddr


def bucket_of(client_id: bytes | None, hwaddr: bytes) -> int:
    return rfc3074_hash(hash_key(client_id, hwaddr))


def message_bucket(msg: DhcpMessage) -> int:
    """The bucket of a client message (option 61, else ``chaddr[:hlen]``)."""
    return bucket_of(msg.options.get(OPT_CLIENT_ID), msg.hwaddr)


def lease_bucket(client_id: bytes | None, hwaddr: bytes) -> int | None:
    """The bucket of a stored binding's last client; None when it has no client."""
    if not client_id and not hwaddr:
        return None
    return bucket_of(client_id, hwaddr)


def primary_buckets(primary_percent: float) -> frozenset[int]:
    """The buckets the primary serves for a primary share of ``primary_percent`` %: the first
    ``round(256 * p / 100)`` buckets (half-up rounding; 50 % -> 128, 70 % -> 179)."""
    if not 0 <= primary_percent <= 100:
        raise ValueError(f"primary_percent must be within 0..100, not {primary_percent}")
    n = int(BUCKETS * primary_percent / 100 + 0.5)
    return frozenset(range(n))


def encode_hba(primary: Iterable[int], dialect: Dialect) -> bytes:
    """The 32-byte HBA a primary sends in CONNECT for the set of ``primary`` buckets."""
    out = bytearray(HBA_SIZE)
    mine = set(primary)
    for b in range(BUCKETS):
        if (b in mine) == (dialect == "isc"):  # isc: set = primary; windows: set = secondary
            out[b >> 3] |= 1 << (b & 7)
    return bytes(out)


def decode_hba(data: bytes, dialect: Dialect) -> frozenset[int]:
    """The primary's buckets in a received HBA. Raises ValueError unless 32 bytes."""
    if len(data) != HBA_SIZE:
        raise ValueError(f"hash-bucket-assignment must be {HBA_SIZE} bytes, got {len(data)}")
    set_bits = {b for b in range(BUCKETS) if data[b >> 3] >> (b & 7) & 1}
    if dialect == "isc":
        return frozenset(set_bits)
    return frozenset(range(BUCKETS)) - set_bits
