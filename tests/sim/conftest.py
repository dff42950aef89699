from __future__ import annotations

from tests.sim_fixtures import sim  # noqa: F401 - the fixture, re-exported for this area
