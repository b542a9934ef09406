"""The exception type of the network layer."""

from __future__ import annotations


class NetError(Exception):
    """A network set-up problem (e.g. a port that cannot be bound); the message names it."""
