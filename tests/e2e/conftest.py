"""Fixtures for the end-to-end tests (root, network namespaces, real clients).

Server under test: Tandem (``.venv/bin/tandem serve``) by default; ``TANDEM_E2E_SERVER=kea``
runs the same tests against kea-dhcp4 (how the harness itself was proven).
Artifacts (configs, logs, captures) stay in pytest's tmp dir; ``TANDEM_E2E_KEEP=DIR``
copies them to DIR when a module ends.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netns import Lab
from .servers import TANDEM, server_kind

BASE_TOOLS = ("ip", "tshark", "ss", "unshare", "nsenter")


def _skip(reason: str) -> None:
    """Skip with ``reason`` -- or fail, where the end-to-end tests must run (CI sets
    TANDEM_REQUIRE_E2E=1: a CI run that silently skipped them would prove nothing)."""
    if os.environ.get("TANDEM_REQUIRE_E2E") == "1":
        pytest.fail(f"end-to-end tests are required here but cannot run: {reason}")
    pytest.skip(reason)


def require(*tools: str) -> None:
    """Skip (clearly) unless we are root with every tool on PATH."""
    if os.geteuid() != 0:
        _skip("end-to-end tests need root (network namespaces, raw sockets)")
    missing = [t for t in (*BASE_TOOLS, *tools) if shutil.which(t) is None]
    if server_kind() == "kea" and shutil.which("kea-dhcp4") is None:
        missing.append("kea-dhcp4")
    if server_kind() == "tandem" and not TANDEM.exists():
        missing.append(str(TANDEM))
    if missing:
        _skip(f"missing tools for end-to-end tests: {', '.join(missing)} (as root: make sysdeps)")


def make_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    name = request.node.name.replace("[", "-").replace("]", "")
    lab = Lab(tmp_path_factory.mktemp(f"e2e-{name}"))

    def finish() -> None:
        lab.close()
        keep = os.environ.get("TANDEM_E2E_KEEP")
        if keep:
            shutil.copytree(lab.workdir, Path(keep) / lab.workdir.name, dirs_exist_ok=True)

    request.addfinalizer(finish)
    return lab


@pytest.fixture(scope="module")
def module_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    yield make_lab(request, tmp_path_factory)


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return make_lab(request, tmp_path_factory)
