"""The house rules that a test can check: cores do no I/O and read no clock;
imports point one way (wire <- leases <- failover <- dhcp <- {net, api, sim} <- service <- cli)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tandem"
CORES = ("wire", "leases", "failover", "dhcp")
FORBIDDEN_IN_CORES = {"asyncio", "socket", "time", "select", "selectors", "threading"}
# package -> tandem packages it must not import
LAYERS = {
    "wire": {"leases", "failover", "dhcp", "net", "api", "sim", "service", "cli", "store"},
    "leases": {"failover", "dhcp", "net", "api", "sim", "service", "cli", "store"},
    "failover": {"dhcp", "net", "api", "sim", "service", "cli", "store"},
    "dhcp": {"net", "api", "sim", "service", "cli", "store"},
    "store": {"dhcp", "failover", "net", "api", "sim", "service", "cli"},
    "net": {"service", "cli"},
    "sim": {"net", "api", "service", "cli", "store"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("package", CORES)
def test_cores_do_no_io_and_read_no_clock(package: str) -> None:
    offenders = []
    for path in _modules(package):
        for name in _imports(path):
            if name.split(".")[0] in FORBIDDEN_IN_CORES:
                offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert offenders == []


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_point_one_way(package: str) -> None:
    offenders = []
    for path in _modules(package):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "tandem" and len(parts) > 1 and parts[1] in LAYERS[package]:
                offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert offenders == []


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import time\nfrom asyncio import sleep\nfrom tandem.net import udp\n")
    assert _imports(probe) == {"time", "asyncio", "tandem.net"}
