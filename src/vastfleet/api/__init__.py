"""The HTTP API for users (and, through slots in the context, agents and metrics). Holds no scheduling."""

from vastfleet.api.app import create_app
from vastfleet.api.context import ApiContext

__all__ = ["ApiContext", "create_app"]
