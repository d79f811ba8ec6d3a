"""Which build of the hot modules this test run imports.

`make test` runs the tests against the pure-Python package (src/), then `make test-compiled`
runs the unit and simulation tests again with ``PYTHONPATH=build/compiled`` (the optional
mypyc build, `make compiled`) and ``TANDEM_EXPECT_COMPILED=1``. Each run checks here that it
imports what it claims to test: every module of the Makefile's ``MYPYC_MODULES`` as a C
extension in the compiled run, as Python source otherwise (a stale or missing build, or a
wrong path, would otherwise test the same package twice).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from _build import EXPECT_COMPILED, EXPECTED_BUILD

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def compiled_modules() -> list[str]:
    text = MAKEFILE.read_text().replace("\\\n", " ")
    m = re.search(r"^MYPYC_MODULES\s*:=\s*(.+)$", text, re.MULTILINE)
    assert m is not None, "MYPYC_MODULES not found in the Makefile"
    paths = m.group(1).split()
    assert paths and all(p.startswith("tandem/") and p.endswith(".py") for p in paths)
    return [p[: -len(".py")].replace("/", ".") for p in paths]


def test_the_run_imports_the_build_it_claims_to_test() -> None:
    kinds = {}
    for name in compiled_modules():
        path = str(importlib.import_module(name).__file__)
        kinds[name] = "extension" if path.endswith(".so") else "source"
    wanted = "extension" if EXPECT_COMPILED else "source"
    assert {n: k for n, k in kinds.items() if k != wanted} == {}
    assert len(kinds) >= 5


def test_the_build_module_names_the_makefile_modules() -> None:
    from tandem.build import HOT_MODULES

    assert list(HOT_MODULES) == compiled_modules()


def test_the_process_reports_the_build_it_runs() -> None:
    from tandem.build import build_kind, describe

    assert build_kind() == EXPECTED_BUILD
    assert describe() == (f"compiled with mypyc: {len(compiled_modules())} hot modules"
                          if EXPECT_COMPILED else "pure Python")


@pytest.mark.skipif(EXPECT_COMPILED, reason="the pure-Python run checks this")
def test_a_partial_build_is_reported_as_mixed(monkeypatch: pytest.MonkeyPatch) -> None:
    import tandem.build as build

    real = importlib.import_module

    class Fake:
        __file__ = "/x/tandem/dhcp/engine.cpython-311-x86_64-linux-gnu.so"

    def fake_import(name: str) -> object:
        # one module from an extension, the rest from source: a stale or partial build
        return Fake() if name == "tandem.dhcp.engine" else real(name)

    monkeypatch.setattr(build.importlib, "import_module", fake_import)
    assert build.build_kind() == "mixed"
    assert build.describe().startswith("mixed build")
