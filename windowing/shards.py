"""Routing readings to window shards by a stable hash of the sensor id."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["ShardMessage", "shard_of", "split_by_shard"]


@dataclass(frozen=True, eq=False)
class ShardMessage:
    """Readings of one input partition for one shard, with the partition's watermark after them.

    Every input batch sends one message to EVERY shard (possibly with no
    readings), so each shard always knows every partition's watermark.
    """

    partition: str
    readings: pa.Table
    watermark: int


def shard_of(device: str, tag: str, shards: int) -> int:
    """Stable across processes and runs (unlike Python's ``hash``)."""
    return zlib.crc32(f"{device}\x1f{tag}".encode()) % shards


def split_by_shard(readings: pa.Table, shards: int) -> list[pa.Table]:
    """``readings`` split into ``shards`` tables, order kept within each."""
    if shards == 1:
        return [readings]
    if readings.num_rows == 0:
        return [readings] * shards
    key = pc.binary_join_element_wise(readings["device"], readings["tag"], "\x1f").combine_chunks()
    encoded = key.dictionary_encode()
    per_key = np.array([zlib.crc32(k.encode()) % shards for k in encoded.dictionary.to_pylist()], dtype=np.int64)
    shard = per_key[encoded.indices.to_numpy(zero_copy_only=False)]
    return [readings.filter(pa.array(shard == s)) for s in range(shards)]
