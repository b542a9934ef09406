"""The errors merge methods raise for bad inputs."""

from __future__ import annotations


class MergeInputError(ValueError):
    """Raised, before any result is returned, for parameter sets or options a merge refuses."""


class NonFiniteInput(MergeInputError):
    """Parameter set `peer` (its index in the inputs) holds NaN or infinity in `tensor`."""

    def __init__(self, peer: int, tensor: str) -> None:
        super().__init__(f"peer {peer}, tensor {tensor!r}: contains NaN or infinity")
        self.peer = peer
        self.tensor = tensor
