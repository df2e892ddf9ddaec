"""Money kept as integer cents (exact on every warehouse and engine), turned into Arrow's
decimals without a float or a Python loop."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def decimals(cents: np.ndarray, precision: int = 18) -> pa.Array:
    """decimal(precision, 2) from int64 cents: the decimal's unscaled value is the cents, as
    two 64-bit words (the high one the sign)."""
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    words[:, 1] = np.where(cents < 0, -1, 0)
    return pa.Array.from_buffers(
        pa.decimal128(precision, 2), len(cents), [None, pa.py_buffer(words.tobytes())]
    )
