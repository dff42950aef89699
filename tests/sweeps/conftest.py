"""Fixtures of the sweep tests: the real API over the real redis-server (as the job routes' tests use it) and
the simulator."""

from tests.sim_fixtures import sim  # noqa: F401 - a fixture
from tests.spine.conftest import api, clock, http, store  # noqa: F401 - fixtures
