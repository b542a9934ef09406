"""The one error type the codec raises."""

from __future__ import annotations


class CodecError(ValueError):
    """Raised for parameters or bytes the codec cannot encode, decode or digest."""
