"""Assembling a model as its chunks arrive: bounded, decompressed, checked chunk by chunk.

A `Receiver` takes the messages of one fetch and writes the model's bytes into one buffer,
allocated once at the size the ledger recorded (so a model is held once, not grown and
copied). With the snapshot's leaves (see openswarm.codec.chunks) every chunk is checked
the moment it is complete; a wire compressed with zstd is decompressed as it comes, never
past the cap. Everything that goes wrong raises ReceiveError naming what.
"""

from __future__ import annotations

import mmap
from typing import BinaryIO

from openswarm.codec.chunks import CHUNK_BYTES, LEAF_BYTES, chunk_count, leaf, root_of


class ReceiveError(RuntimeError):
    """The bytes arriving are not the model the ledger recorded."""


class _Plain:
    """The decompressed (or plain) bytes: written into the buffer, checked per chunk."""

    def __init__(self, size: int | None, cap: int, leaves: bytes | None,
                 target: memoryview | None = None) -> None:  # fmt: skip
        # Memory mapped for it, touched only as bytes arrive (a bytearray of the size would
        # be committed at once, whether or not the peer ever sends anything).
        self.buffer: bytearray | memoryview = (
            target if target is not None
            else bytearray() if not size else memoryview(mmap.mmap(-1, size))
        )  # fmt: skip
        self.size, self.cap, self.leaves = size, cap, leaves
        self.filled = 0
        self._checked = 0  # chunks checked against their leaves

    def write(self, data: bytes | memoryview) -> int:
        count = len(data)
        end = self.filled + count
        limit = self.cap if self.size is None else self.size
        if end > limit:
            raise ReceiveError(f"the peer sent more than the {limit} bytes expected")
        if isinstance(self.buffer, bytearray):
            self.buffer += data
        else:
            self.buffer[self.filled : end] = data
        self.filled = end
        self._check(complete_only=True)
        return count

    def _check(self, complete_only: bool) -> None:
        if self.leaves is None:
            return
        view = memoryview(self.buffer)
        while True:
            start = self._checked * CHUNK_BYTES
            stop = min(start + CHUNK_BYTES, self.filled)
            if stop <= start or (complete_only and stop - start < CHUNK_BYTES):
                return
            wanted = self.leaves[self._checked * LEAF_BYTES : (self._checked + 1) * LEAF_BYTES]
            if leaf(view[start:stop]) != wanted:
                raise ReceiveError(
                    f"chunk {self._checked} (bytes {start}-{stop}) does not match its digest"
                )
            self._checked += 1

    def finish(self) -> bytearray | memoryview:
        if self.size is not None and self.filled != self.size:
            raise ReceiveError(f"{self.filled} bytes arrived, the ledger recorded {self.size}")
        self._check(complete_only=False)
        return self.buffer


class _FileSink:
    """The plain bytes written to a file instead, each chunk checked before it is written
    (so memory holds one chunk, whatever the model's size)."""

    def __init__(self, size: int | None, cap: int, leaves: bytes | None, into: BinaryIO) -> None:
        self.size, self.cap, self.leaves, self.into = size, cap, leaves, into
        self.filled = 0
        self._pending = bytearray()
        self._written = 0  # chunks written

    def write(self, data: bytes | memoryview) -> int:
        count = len(data)
        limit = self.cap if self.size is None else self.size
        if self.filled + count > limit:
            raise ReceiveError(f"the peer sent more than the {limit} bytes expected")
        self.filled += count
        if self.leaves is None:
            self.into.write(data)
            return count
        self._pending += data
        while len(self._pending) >= CHUNK_BYTES:
            self._flush(CHUNK_BYTES)
        return count

    def _flush(self, length: int) -> None:
        chunk = memoryview(self._pending)[:length]
        assert self.leaves is not None
        wanted = self.leaves[self._written * LEAF_BYTES : (self._written + 1) * LEAF_BYTES]
        if leaf(chunk) != wanted:
            start = self._written * CHUNK_BYTES
            raise ReceiveError(
                f"chunk {self._written} (bytes {start}-{start + length}) does not match its digest"
            )
        self.into.write(chunk)
        chunk.release()
        del self._pending[:length]
        self._written += 1

    def finish(self) -> None:
        if self.size is not None and self.filled != self.size:
            raise ReceiveError(f"{self.filled} bytes arrived, the ledger recorded {self.size}")
        if self._pending:
            self._flush(len(self._pending))
        self.into.flush()


class Receiver:
    """One fetch's bytes. `size`: the exact size expected (the buffer is allocated at it);
    `cap`: the most decompressed bytes accepted without a size; `root`: the Merkle root the
    first message's leaves must give (then every chunk is checked against them);
    `zstd`: the wire is zstd-compressed; `into`: a file to write the bytes to (checked
    chunk by chunk first) instead of a buffer; `chunks`: (first, stop), only those chunks
    of the model come (after all of its leaves), and the buffer holds just them; `target`:
    the buffer to write them into (of exactly `size` bytes) instead of a new one."""

    def __init__(self, size: int | None, cap: int, root: str | None, zstd: bool,
                 into: BinaryIO | None = None, chunks: tuple[int, int] | None = None,
                 target: memoryview | None = None) -> None:  # fmt: skip
        if root is not None and size is None:
            raise ValueError("checking chunks against a root needs the model's size")
        self._model_size = size
        self._chunks = chunks
        if chunks is not None:
            first, stop = chunks
            if root is None or size is None or zstd or into is not None:
                raise ValueError("a range of chunks comes plain, checked against a root")
            if not 0 <= first <= stop <= chunk_count(size):
                raise ValueError(f"chunks {first}-{stop} are not chunks of {size} bytes")
            size = max(0, min(stop * CHUNK_BYTES, size) - first * CHUNK_BYTES)
            cap = size
        if target is not None and (size is None or len(target) != size or into is not None):
            raise ValueError("a target buffer must be of the size expected")
        self._target = target
        self.wire_bytes = 0
        most = cap if size is None else size
        # zstd may add a little to incompressible bytes, never more (and nothing else may
        # ride the wire: a stream of empty frames must end too)
        self._wire_cap = most + (most >> 7) + 4096 if zstd else most
        if root is not None:
            self._wire_cap += chunk_count(self._model_size or 0) * LEAF_BYTES
        self._root = root
        self._size, self._cap = size, cap
        self._into = into
        self._plain: _Plain | _FileSink | None = None
        if root is None:
            self._plain = self._sink(None)
        self._zstd = zstd
        self._writer: object | None = None

    def add(self, message: bytes) -> None:
        """Take the next message of the stream."""
        self.wire_bytes += len(message)
        if self.wire_bytes > self._wire_cap:
            raise ReceiveError(
                f"the peer sent {self.wire_bytes} bytes, more than the {self._wire_cap} expected"
            )
        if self._plain is None:  # the first message: the leaves
            self._plain = self._sink(self._checked_leaves(message))
            return
        if not self._zstd:
            self._plain.write(message)
            return
        import zstandard

        try:
            self._decompressor().write(message)  # type: ignore[attr-defined]
        except zstandard.ZstdError as exc:
            raise ReceiveError(f"not a zstd stream: {exc}") from None

    def _sink(self, leaves: bytes | None) -> _Plain | _FileSink:
        if self._into is None:
            return _Plain(self._size, self._cap, leaves, self._target)
        return _FileSink(self._size, self._cap, leaves, self._into)

    def finish(self) -> bytearray | memoryview | None:
        """The model's bytes (None: they went to the file), all arrived and checked;
        ReceiveError otherwise."""
        if self._plain is None:
            raise ReceiveError("the stream ended before the chunk digests came")
        if self._writer is not None:
            import zstandard

            try:
                self._writer.flush()  # type: ignore[attr-defined]
            except zstandard.ZstdError as exc:
                raise ReceiveError(f"not a zstd stream: {exc}") from None
        return self._plain.finish()

    def _checked_leaves(self, message: bytes) -> bytes:
        """The leaves of the chunks that come next (all, or those of `chunks`)."""
        assert self._model_size is not None and self._root is not None
        expected = chunk_count(self._model_size) * LEAF_BYTES
        if len(message) != expected:
            raise ReceiveError(
                f"sent {len(message)} bytes of chunk digests, {expected} expected for "
                f"{self._model_size} bytes"
            )
        if root_of(message) != self._root:
            raise ReceiveError("its chunk digests do not give the root the ledger recorded")
        if self._chunks is None:
            return bytes(message)
        first, stop = self._chunks
        return bytes(message[first * LEAF_BYTES : stop * LEAF_BYTES])

    def _decompressor(self) -> object:
        if self._writer is None:
            import zstandard

            assert self._plain is not None
            self._writer = zstandard.ZstdDecompressor().stream_writer(
                self._plain, write_size=CHUNK_BYTES, write_return_read=True
            )
        return self._writer


__all__ = ["ReceiveError", "Receiver"]
