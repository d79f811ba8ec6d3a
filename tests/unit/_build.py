"""The build of the hot modules this test run claims to test: ``make test-compiled`` sets
``TANDEM_EXPECT_COMPILED=1`` (and ``PYTHONPATH=build/compiled``); test_compiled_build checks
that the run really imports that build."""

from __future__ import annotations

import os

EXPECT_COMPILED = os.environ.get("TANDEM_EXPECT_COMPILED") == "1"
#: what ``tandem.build.build_kind()`` must say in this run
EXPECTED_BUILD = "compiled" if EXPECT_COMPILED else "pure"
