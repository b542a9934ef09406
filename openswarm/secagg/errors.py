"""The one error type of the secure-aggregation core."""

from __future__ import annotations


class SecAggError(ValueError):
    """A secure-aggregation input or result was refused; the message names the cause and fix."""
