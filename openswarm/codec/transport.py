"""How models travel between sites: a contract's `compression`, lossless or lossy.

- ``zstd`` (lossless): the bytes of a snapshot or merged model are zstd-compressed on the
  wire and decompressed (bounded, openswarm.node.receive) as they arrive; digests and chunk
  roots cover the uncompressed bytes.
- ``float16`` / ``bfloat16`` (lossy): float32 and float64 tensors travel as 16-bit floats
  (round to nearest even; float16 turns values beyond ±65504 into infinities, which the
  merge then refuses as non-finite: use bfloat16 for such models).
- ``int8`` (lossy): each float32/float64 tensor travels as int8 with one scale per tensor,
  ``scale = max|x| / 127`` and ``q = rint(x / scale)``, so ``|x - q * scale| <= scale / 2``
  (a tensor holding NaN or infinity travels as NaN, for the merge to refuse).
- a lossy mode plus ``+zstd`` does both.

Other tensors (integers, bools, 16-bit floats) travel as they are. A receiving site turns a
lossy model back into its own model's dtypes (`unpack`), and a leader publishes the merge in
the same lossy form and loads it back from there, so every site holds the same merged bits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from openswarm.codec.arrays import numpy_bfloat16
from openswarm.codec.decode import EncodedFile, decode
from openswarm.codec.encode import encode
from openswarm.codec.errors import CodecError
from openswarm.codec.tensors import TensorSpec
from openswarm.protocol import COMPRESSIONS

LOSSY = ("none", "float16", "bfloat16", "int8")
#: The tensor that carries the int8 scales (one per quantized tensor, in tensor order).
SCALES = "__int8_scales__"
_QUANTIZED = ("float32", "float64")
_ZSTD_LEVEL = 3


@dataclass(frozen=True)
class Transport:
    """One of COMPRESSIONS: `lossy` (a LOSSY mode) and whether the wire is zstd."""

    lossy: str = "none"
    zstd: bool = False

    @classmethod
    def parse(cls, text: str) -> Transport:
        """The transport named `text`; ValueError naming the valid ones otherwise."""
        if text not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {text!r}")
        lossy, _, wire = text.partition("+")
        if lossy == "zstd":
            return cls("none", True)
        return cls(lossy, wire == "zstd")

    @property
    def lossy_mode(self) -> bool:
        """Whether models arrive other than they were sent (quantized)."""
        return self.lossy != "none"

    def pack(self, params: Mapping[str, Any]) -> bytes:
        """The bytes that digests cover: `params` encoded, lossy tensors quantized."""
        if self.lossy == "none":
            return encode(params)
        return encode(_quantize(params, self.lossy))

    def unpack(self, data: bytes | bytearray, structure: Mapping[str, TensorSpec] | None,
               copy: bool = True) -> dict[str, Any]:  # fmt: skip
        """Decode `data` (from `pack`); lossy tensors back in `structure`'s dtypes (None:
        this site's model is not known yet, so they stay as they travelled). `copy=False`:
        tensors that travelled as they are stay views of `data` (see `decode`)."""
        params = decode(data, copy=copy)
        if self.lossy == "none" or structure is None:
            return params
        return _dequantize(params, self.lossy, structure)

    def tensor_loader(
        self, encoded: EncodedFile, structure: Mapping[str, TensorSpec]
    ) -> Callable[[int], np.ndarray]:
        """For merging layer by layer: `load(t)` reads tensor t of `structure` (in its order)
        from `encoded` (as `pack` made it) as a flat raw array in the structure's dtype, as
        `unpack` would give it. CodecError if the file's tensors do not fit `structure`."""
        specs = list(structure.values())
        entries = list(encoded.layout.entries)
        scales: list[float] = []
        if self.lossy == "int8":
            last = entries[-1] if entries else None
            if (
                last is None
                or last.name != SCALES
                or last.dtype.name != "float64"
                or len(last.shape) != 1
            ):
                raise CodecError(
                    f"the int8 scales (1-D float64 tensor {SCALES!r}, last) are missing"
                )
            scales = [float(x) for x in encoded.flat(len(entries) - 1).astype(np.float64)]
            entries.pop()
        if [e.name for e in entries] != [spec.name for spec in specs]:
            raise CodecError("tensor names differ from this site's model")
        quantized = [spec.dtype.name in _QUANTIZED and self.lossy != "none" for spec in specs]
        travelled = {"float16": "float16", "bfloat16": "bfloat16", "int8": "int8"}
        for entry, spec, lossy in zip(entries, specs, quantized, strict=True):
            wanted = travelled[self.lossy] if lossy else spec.dtype.name
            if entry.shape != spec.shape or entry.dtype.name != wanted:
                raise CodecError(
                    f"tensor {spec.name!r} is {entry.dtype.name} {list(entry.shape)}, expected "
                    f"{wanted} {list(spec.shape)}"
                )
        if self.lossy == "int8" and len(scales) != sum(quantized):
            raise CodecError(f"{len(scales)} int8 scale(s) for {sum(quantized)} tensors")
        scale_of = dict(zip([t for t, q in enumerate(quantized) if q], scales, strict=False))

        def load(t: int) -> np.ndarray:
            raw = encoded.flat(t)
            if not quantized[t]:
                return raw
            target = specs[t].dtype.storage
            if self.lossy == "int8":
                return raw.astype(target) * target.type(scale_of[t])
            if self.lossy == "bfloat16":
                raw = np.left_shift(raw.astype(np.uint32), 16).view(np.float32)
            return raw.astype(target)

        return load

    def wire(self, data: bytes) -> bytes:
        """What goes over the network for `data`."""
        if not self.zstd:
            return data
        import zstandard

        return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(data)


def _quantize(params: Mapping[str, Any], lossy: str) -> dict[str, Any]:
    if SCALES in params:
        raise CodecError(f"a tensor named {SCALES!r} cannot travel with compression {lossy}")
    out: dict[str, Any] = {}
    scales = []
    for name, value in params.items():
        array = _float_array(value)
        if array is None:
            out[name] = value
        elif lossy == "float16":
            with np.errstate(over="ignore"):
                out[name] = array.astype(np.float16)
        elif lossy == "bfloat16":
            out[name] = array.astype(numpy_bfloat16())
        else:
            out[name], scale = _to_int8(array)
            scales.append(scale)
    if lossy == "int8":
        out[SCALES] = np.array(scales, np.float64)
    return out


def _float_array(value: Any) -> np.ndarray | None:
    """`value` as a numpy array if it is a float32/float64 tensor, else None."""
    if hasattr(value, "detach"):  # torch
        if str(value.dtype) not in ("torch.float32", "torch.float64"):
            return None
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    return array if array.dtype.name in _QUANTIZED else None


def _to_int8(array: np.ndarray) -> tuple[np.ndarray, float]:
    if array.size == 0:
        return np.zeros(array.shape, np.int8), 1.0
    largest = float(np.max(np.abs(array)))
    if not np.isfinite(largest):
        return np.zeros(array.shape, np.int8), float("nan")
    scale = largest / 127.0 if largest > 0 else 1.0
    quotient = np.rint(array / array.dtype.type(scale))
    return np.clip(quotient, -127, 127).astype(np.int8), scale


def _dequantize(
    params: dict[str, Any], lossy: str, structure: Mapping[str, TensorSpec]
) -> dict[str, Any]:
    scales = []
    if lossy == "int8":
        found = np.asarray(params.get(SCALES, np.zeros((0, 0))))
        if list(params)[-1:] != [SCALES] or found.dtype != np.float64 or found.ndim != 1:
            raise CodecError(f"the int8 scales (1-D float64 tensor {SCALES!r}, last) are missing")
        scales = [float(x) for x in params.pop(SCALES)]
    travelled = {"float16": "float16", "bfloat16": "bfloat16", "int8": "int8"}[lossy]
    out: dict[str, Any] = {}
    for name, value in params.items():
        spec = structure.get(name)
        if spec is None or spec.dtype.name not in _QUANTIZED:
            out[name] = value
            continue
        target = spec.dtype.storage
        if lossy == "int8":
            if not scales or np.asarray(value).dtype != np.int8:
                raise CodecError(f"tensor {name!r} did not travel as int8 with a scale")
            out[name] = np.asarray(value).astype(target) * target.type(scales.pop(0))
        else:
            if np.asarray(value).dtype.name != travelled:
                raise CodecError(f"tensor {name!r} did not travel as {travelled}")
            out[name] = np.asarray(value).astype(target)
    if scales:
        raise CodecError(f"{len(scales)} int8 scale(s) left over: the model's tensors differ")
    return out


__all__ = ["COMPRESSIONS", "SCALES", "Transport"]
