"""The error merge methods raise for bad inputs."""

from __future__ import annotations


class MergeInputError(ValueError):
    """Raised, before any result is returned, for parameter sets or options a merge refuses."""
