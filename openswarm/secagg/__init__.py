"""Pure cryptography for serverless secure aggregation (Bonawitz-style pairwise masking).

Fixed-point encoding into Z_{2^64}, ChaCha20 masks, Shamir sharing of seeds and keys, X25519
pair seeds, commitments and sealed shares: enough to mask updates so only their sum is learnt.
No I/O and no protocol here: the rounds that use these live in openswarm/node.
"""

from openswarm.secagg.agreement import (
    commitment,
    new_mask_key,
    open_sealed,
    pair_seed,
    public_of,
    seal_for,
)
from openswarm.secagg.errors import SecAggError
from openswarm.secagg.fixed_point import (
    FRACTION_BITS,
    MAX_BOUND,
    MAX_PARTIES,
    clipped_count,
    decode,
    encode,
    max_error,
    wrapping_add,
    wrapping_sub,
)
from openswarm.secagg.masks import add_mask, expand, pair_sign
from openswarm.secagg.shamir import combine, combine_checked, split

__all__ = [
    "FRACTION_BITS",
    "MAX_BOUND",
    "MAX_PARTIES",
    "SecAggError",
    "add_mask",
    "clipped_count",
    "combine",
    "combine_checked",
    "commitment",
    "decode",
    "encode",
    "expand",
    "max_error",
    "new_mask_key",
    "open_sealed",
    "pair_seed",
    "pair_sign",
    "public_of",
    "seal_for",
    "split",
    "wrapping_add",
    "wrapping_sub",
]
