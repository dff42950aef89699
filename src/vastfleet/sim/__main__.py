"""`python -m vastfleet.sim serve ...`: the simulator without the vastfleet CLI around it."""

from vastfleet.sim.cli import app

app(prog_name="vastfleet sim")
