"""The marketplace: the `Marketplace` protocol and its vast.ai implementation. Knows no Redis, no jobs."""

from vastfleet.market.protocol import Marketplace

__all__ = ["Marketplace"]
