"""Chunk roots and the receiving end of a fetch: every chunk is checked as it arrives, the
wire is bounded, and a stream that stops short or runs long is refused."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import zstandard

from openswarm.codec.chunks import CHUNK_BYTES, LEAF_BYTES, chunk_root, leaf, leaves, root_of
from openswarm.node.receive import ReceiveError, Receiver

DATA = np.random.default_rng(3).bytes(5 * CHUNK_BYTES + 12_345)  # six chunks


def _messages(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def test_the_root_is_the_merkle_tree_over_the_chunks() -> None:
    chunks = _messages(DATA)
    hashed = [hashlib.sha256(b"\x00" + c).digest() for c in chunks]

    def node(a: bytes, b: bytes) -> bytes:
        return hashlib.sha256(b"\x01" + a + b).digest()

    # six leaves: three pairs, then (01, 23) and 45 moving up, then the top
    pairs = [node(hashed[i], hashed[i + 1]) for i in (0, 2, 4)]
    top = node(node(pairs[0], pairs[1]), pairs[2])
    assert leaves(DATA) == b"".join(hashed) and len(leaves(DATA)) == 6 * LEAF_BYTES
    assert chunk_root(DATA) == top.hex()
    assert chunk_root(b"x") == leaf(b"x").hex()
    assert chunk_root(b"") == hashlib.sha256(b"").hexdigest()
    flipped = bytearray(DATA)
    flipped[-1] ^= 1
    assert chunk_root(bytes(flipped)) != chunk_root(DATA)


@pytest.mark.parametrize("zstd", [False, True])
def test_a_whole_stream_arrives_as_it_was_sent(zstd: bool) -> None:
    wire = zstandard.ZstdCompressor().compress(DATA) if zstd else DATA
    receiver = Receiver(len(DATA), len(DATA), chunk_root(DATA), zstd)
    receiver.add(leaves(DATA))
    for message in _messages(wire, 300_000):  # message borders need not be chunk borders
        receiver.add(message)
    assert receiver.finish() == DATA


@pytest.mark.parametrize("zstd", [False, True])
def test_a_bad_chunk_is_refused_as_soon_as_it_is_complete(zstd: bool) -> None:
    spoiled = bytearray(DATA)
    spoiled[3 * CHUNK_BYTES + 5] ^= 0x01  # the fourth chunk
    wire = zstandard.ZstdCompressor().compress(bytes(spoiled)) if zstd else bytes(spoiled)
    receiver = Receiver(len(DATA), len(DATA), chunk_root(DATA), zstd)
    receiver.add(leaves(DATA))
    taken = 0
    with pytest.raises(ReceiveError, match=r"chunk 3 \(bytes 3145728-4194304\) does not match"):
        for message in _messages(wire, 65_536):
            receiver.add(message)
            taken += len(message)
    if not zstd:  # the fourth chunk's last message was the one refused
        assert taken == 4 * CHUNK_BYTES - 65_536


def test_leaves_that_do_not_give_the_root_are_refused_first() -> None:
    receiver = Receiver(len(DATA), len(DATA), chunk_root(DATA), False)
    forged = bytearray(leaves(DATA))
    forged[0] ^= 1
    with pytest.raises(ReceiveError, match="do not give the root the ledger recorded"):
        receiver.add(bytes(forged))
    with pytest.raises(ReceiveError, match="192 expected"):
        Receiver(len(DATA), len(DATA), chunk_root(DATA), False).add(leaves(DATA)[:-32])
    with pytest.raises(ReceiveError, match="before the chunk digests came"):
        Receiver(len(DATA), len(DATA), chunk_root(DATA), False).finish()
    with pytest.raises(ValueError, match="needs the model's size"):
        Receiver(None, len(DATA), chunk_root(DATA), False)
    assert root_of(leaves(DATA)) == chunk_root(DATA)


@pytest.mark.parametrize("zstd", [False, True])
def test_a_stream_longer_or_shorter_than_recorded_is_refused(zstd: bool) -> None:
    def receive(data: bytes) -> bytearray:
        wire = zstandard.ZstdCompressor().compress(data) if zstd else data
        receiver = Receiver(len(DATA), len(DATA), chunk_root(DATA), zstd)
        receiver.add(leaves(DATA))
        for message in _messages(wire):
            receiver.add(message)
        return receiver.finish()

    with pytest.raises(ReceiveError, match="more than the"):
        receive(DATA + b"\0" * 100)
    with pytest.raises(ReceiveError, match="the ledger recorded"):
        receive(DATA[:-100])


def test_the_wire_is_bounded_even_when_it_decompresses_to_nothing() -> None:
    empty = zstandard.ZstdCompressor().compress(b"")  # a valid frame holding no bytes
    receiver = Receiver(1000, 1000, None, True)
    with pytest.raises(ReceiveError, match=r"the peer sent \d+ bytes, more than the 5103 expected"):
        for _ in range(10_000):
            receiver.add(empty * 10)
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (1 << 30))  # 1 GiB of zeros, ~30 kB
    receiver = Receiver(None, 1 << 20, None, True)
    with pytest.raises(ReceiveError, match="more than the 1048576 bytes"):
        receiver.add(bomb)


def test_into_a_file_each_chunk_is_checked_before_it_is_written(tmp_path) -> None:
    with open(tmp_path / "whole", "w+b") as handle:
        receiver = Receiver(len(DATA), len(DATA), chunk_root(DATA), True, into=handle)
        receiver.add(leaves(DATA))
        for message in _messages(zstandard.ZstdCompressor().compress(DATA), 300_000):
            receiver.add(message)
        assert receiver.finish() is None
    assert (tmp_path / "whole").read_bytes() == DATA
    spoiled = bytearray(DATA)
    spoiled[3 * CHUNK_BYTES + 5] ^= 0x01  # the fourth chunk
    with open(tmp_path / "spoiled", "w+b") as handle:
        receiver = Receiver(len(DATA), len(DATA), chunk_root(DATA), False, into=handle)
        receiver.add(leaves(DATA))
        with pytest.raises(ReceiveError, match="chunk 3 "):
            for message in _messages(bytes(spoiled), 65_536):
                receiver.add(message)
    assert (tmp_path / "spoiled").read_bytes() == DATA[: 3 * CHUNK_BYTES]  # the good ones only


def test_a_size_claimed_but_never_sent_commits_no_memory() -> None:
    def resident() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096

    before = resident()
    receiver = Receiver(400 << 20, 400 << 20, None, False)  # a leader claims 400 MiB ...
    receiver.add(b"\1" * 1000)  # ... and sends a little
    assert resident() - before < 64 << 20  # the buffer's pages are taken only as bytes come
    with pytest.raises(ReceiveError, match="the ledger recorded"):
        receiver.finish()


def test_a_range_of_chunks_is_checked_against_the_whole_models_root() -> None:
    receiver = Receiver(len(DATA), len(DATA), chunk_root(DATA), False, chunks=(2, 6))
    receiver.add(leaves(DATA))  # all of them: only together do they give the root
    for message in _messages(DATA[2 * CHUNK_BYTES :], 300_000):
        receiver.add(message)
    assert receiver.finish() == DATA[2 * CHUNK_BYTES :]
    spoiled = bytearray(DATA)
    spoiled[4 * CHUNK_BYTES] ^= 1
    receiver = Receiver(len(DATA), len(DATA), chunk_root(DATA), False, chunks=(3, 5))
    receiver.add(leaves(DATA))
    with pytest.raises(ReceiveError, match=r"chunk 1 .* does not match its digest"):
        for message in _messages(bytes(spoiled[3 * CHUNK_BYTES : 5 * CHUNK_BYTES])):
            receiver.add(message)
    receiver = Receiver(len(DATA), len(DATA), chunk_root(DATA), False, chunks=(3, 4))
    receiver.add(leaves(DATA))
    with pytest.raises(ReceiveError, match=r"more than the .* expected"):
        receiver.add(DATA[3 * CHUNK_BYTES : 5 * CHUNK_BYTES])  # a chunk past the range
    with pytest.raises(ValueError, match="not chunks of"):
        Receiver(len(DATA), len(DATA), chunk_root(DATA), False, chunks=(5, 7))


def test_a_target_buffer_takes_the_bytes_in_place() -> None:
    target = bytearray(len(DATA) + 10)
    window = memoryview(target)[5 : 5 + len(DATA)]
    receiver = Receiver(len(DATA), len(DATA), chunk_root(DATA), True, target=window)
    receiver.add(leaves(DATA))
    receiver.add(zstandard.ZstdCompressor().compress(DATA))
    receiver.finish()
    assert bytes(target[5:-5]) == DATA and target[:5] == target[-5:] == b"\0" * 5
    with pytest.raises(ValueError, match="of the size expected"):
        Receiver(len(DATA) - 1, len(DATA), chunk_root(DATA), False, target=window)
