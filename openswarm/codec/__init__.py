"""Parameter codec: safetensors encoding, decoding and canonical digests of parameter sets.

A parameter set is an ordered mapping of name -> numpy array or torch tensor. Torch is
optional and imported only when torch tensors are given or ``as_torch=True`` is asked.
``to_torch`` turns a decoded numpy array (``ml_dtypes`` bfloat16 too) into a tensor.
Pickle is never used. Bytes from outside (``decode``, ``decode_file``, ``digest_encoded``,
``digest_file``) fail only with CodecError, within the ``MAX_*`` bounds exported here.
"""

from openswarm.codec.arrays import to_torch
from openswarm.codec.decode import decode, decode_file
from openswarm.codec.digest import digest, digest_encoded, digest_file
from openswarm.codec.dtypes import SUPPORTED_NAMES as SUPPORTED_DTYPES
from openswarm.codec.encode import encode, encode_to_file, iter_encoded_chunks
from openswarm.codec.errors import CodecError
from openswarm.codec.finite import check_finite
from openswarm.codec.header import MAX_HEADER_BYTES
from openswarm.codec.limits import (
    MAX_DATA_BYTES,
    MAX_DIM,
    MAX_ELEMENTS,
    MAX_NAME_BYTES,
    MAX_RANK,
    MAX_TENSORS,
)

__all__ = [
    "MAX_DATA_BYTES",
    "MAX_DIM",
    "MAX_ELEMENTS",
    "MAX_HEADER_BYTES",
    "MAX_NAME_BYTES",
    "MAX_RANK",
    "MAX_TENSORS",
    "SUPPORTED_DTYPES",
    "CodecError",
    "check_finite",
    "decode",
    "decode_file",
    "digest",
    "digest_encoded",
    "digest_file",
    "encode",
    "encode_to_file",
    "iter_encoded_chunks",
    "to_torch",
]
