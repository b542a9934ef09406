"""The one exception type of the PKI layer."""

from __future__ import annotations


class PkiError(Exception):
    """A certificate, key or identity problem; the message names the cause."""
