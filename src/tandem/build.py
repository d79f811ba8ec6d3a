"""Which build of Tandem's hot modules this process runs: the pure-Python package (what
``pip install`` gives) or the optional compiled build (``make compiled``: the same sources
compiled with mypyc into ``build/compiled``, run with ``PYTHONPATH=build/compiled``).

Shown by ``tandem --version``, in the ``SERVER_STARTED`` log line and in the control
socket's ``status``, so that an operator can tell which one a server runs.
"""

from __future__ import annotations

import importlib

#: The modules ``make compiled`` compiles (the Makefile's ``MYPYC_MODULES``; a unit test keeps
#: the two lists equal).
HOT_MODULES = (
    "tandem.wire.dhcp",
    "tandem.wire.addr",
    "tandem.dhcp.engine",
    "tandem.dhcp.types",
    "tandem.dhcp.ratelimit",
    "tandem.dhcp.subnets",
    "tandem.dhcp.options",
    "tandem.leases.table",
    "tandem.leases.model",
    "tandem.net.udp",
    "tandem.store.sqlite",
    "tandem.service",
)


def build_kind() -> str:
    """``"compiled"`` when every hot module is a C extension, ``"pure"`` when none is,
    ``"mixed"`` otherwise (a partial or stale build on the path)."""
    compiled = 0
    for name in HOT_MODULES:
        path = str(getattr(importlib.import_module(name), "__file__", "") or "")
        compiled += not path.endswith(".py")
    if compiled == 0:
        return "pure"
    return "compiled" if compiled == len(HOT_MODULES) else "mixed"


def describe() -> str:
    """One phrase for ``--version``."""
    kind = build_kind()
    if kind == "pure":
        return "pure Python"
    if kind == "compiled":
        return f"compiled with mypyc: {len(HOT_MODULES)} hot modules"
    return "mixed build: some hot modules compiled, some not"
