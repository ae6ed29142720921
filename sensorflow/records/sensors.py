"""Each row's sensor (device, tag) as one integer, for code that numbers sensors in bulk."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["one_chunk", "sensor_pairs"]


def one_chunk(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``column`` as one Array (a ChunkedArray's chunks joined, copied only when there are several)."""
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def sensor_pairs(device: pa.Array | pa.ChunkedArray, tag: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """``(pair, devices, tags)``: each row's sensor as ``device code * len(tags) + tag code`` (int64), and the
    two dictionaries, so pair ``p`` is ``(devices[p // len(tags)], tags[p % len(tags)])``.

    Strings are hashed per row only by Arrow's dictionary encoding of each column.
    """
    device_codes = one_chunk(device).dictionary_encode()
    tag_codes = one_chunk(tag).dictionary_encode()
    pair = device_codes.indices.to_numpy().astype(np.int64) * len(tag_codes.dictionary) + tag_codes.indices.to_numpy()
    return pair, device_codes.dictionary, tag_codes.dictionary
