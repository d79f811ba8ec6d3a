"""Child process for tests/unit/test_store_crash.py (not a test module).

``python _store_writer.py DB SEED FIRST_BATCH`` opens the store and commits batch FIRST_BATCH,
FIRST_BATCH+1, ... forever, printing each batch id on stdout right after ``commit()`` returns.
The parent kills it with SIGKILL. :func:`make_batch` is shared with the parent, which rebuilds
the expected leases from (seed, batch id).
"""

from __future__ import annotations

import random
import sys
from ipaddress import IPv4Address

from tandem.leases.model import BindingState, Lease

# 512 addresses (192.0.2.0/24 + 198.51.100.0/24) so batches overwrite each other often.
ADDRESSES = [IPv4Address(0xC0000200 + i) for i in range(256)] + [
    IPv4Address(0xC6336400 + i) for i in range(256)
]


def make_batch(seed: int, batch_id: int) -> list[Lease]:
    """1..60 leases with distinct addresses; every field depends on (seed, batch_id)."""
    rng = random.Random(seed * 1_000_003 + batch_id)
    addrs = rng.sample(ADDRESSES, rng.randint(1, 60))
    out = []
    for n, addr in enumerate(addrs):
        start = 1.7e9 + batch_id + rng.random()
        out.append(
            Lease(
                address=addr,
                subnet_id=rng.randint(1, 2**40),
                state=rng.choice(list(BindingState)),
                hwaddr=rng.randbytes(rng.randint(0, 16)),
                htype=rng.randint(0, 255),
                client_id=rng.choice([None, rng.randbytes(rng.randint(0, 20))]),
                hostname=rng.choice([None, f"b{batch_id}-{n}-\u00e9"]),
                start=start,
                end=start + rng.uniform(0, 86400),
                cltt=start,
                tstp=rng.uniform(0, 2e9),
                tsfp=float(batch_id),
                relay_info=rng.choice([None, rng.randbytes(rng.randint(0, 300))]),
            )
        )
    return out


def main() -> None:
    from tandem.store.sqlite import SqliteLeaseStore

    path, seed, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = SqliteLeaseStore(path)
    batch_id = first
    while True:
        store.commit(make_batch(seed, batch_id))
        sys.stdout.write(f"{batch_id}\n")
        sys.stdout.flush()
        batch_id += 1


if __name__ == "__main__":
    main()
