"""Example configs with one setting changed, for tests that need it."""

from __future__ import annotations

import re
from pathlib import Path

from tandem.config import Config, load_text


def previous_on_startup_timeout(path: Path) -> Config:
    """The config at ``path`` with the draft-12 STARTUP timeout (resume the previous state)
    in every failover relationship instead of Tandem's default "wait": for tests that need a
    restarted peer without its partner to reach its stored state on the timer."""
    text = re.sub(r"^(\[\[?failover\]\]?)$", r'\1' + '\nstartup_timeout_action = "previous"',
                  path.read_text(), flags=re.M)
    return load_text(text, str(path))
