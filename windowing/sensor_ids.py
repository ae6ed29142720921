"""Dense integer ids for sensors, so that open windows are keyed by numbers, not strings."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["SensorIds"]


class SensorIds:
    """Gives each sensor (device, tag) the next integer id (0, 1, ...) the first time it is seen; ids map back.

    Ids last as long as the object: a caller may key state by them and turn them back into
    strings with :meth:`devices` and :meth:`tags`. A sensor's key is one string (the device's
    length, the device and the tag, joined: no characters in the ids can make two sensors one
    key). Known keys are found by their 64-bit hash in a sorted array (16 bytes per sensor; a
    dict of the keys took ~120) and every match is checked against the stored strings, so
    two keys of one hash are told apart (such keys keep their ids in a small dict).
    """

    def __init__(self, hash_key: Callable[[str], int] = hash) -> None:
        """``hash_key``: any function from key to int64; tests pass a poor one to exercise collisions."""
        self._hash_key = hash_key
        self._hashes = np.empty(0, np.int64)  # sorted
        self._hash_ids = np.empty(0, np.int64)  # the id of each of ``_hashes``
        self._collided: dict[str, int] = {}  # keys whose hash another key had first
        self._count = 0
        self._devices: list[pa.Array] = []  # chunks, in id order; joined when read
        self._tags: list[pa.Array] = []

    def __len__(self) -> int:
        return self._count

    def ids(self, device: pa.Array | pa.ChunkedArray, tag: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The id (int64) of each row's sensor; sensors not seen before get new ids, in row order."""
        device, tag = _one_chunk(device), _one_chunk(tag)
        keys = _keys(device, tag)
        key_list = keys.to_pylist()
        hashes = np.fromiter(map(self._hash_key, key_list), np.int64, len(key_list))
        found = np.full(len(key_list), -1, np.int64)
        hit = np.zeros(len(key_list), bool)  # the hash is known (maybe another sensor's)
        if len(self._hashes):
            at = np.minimum(np.searchsorted(self._hashes, hashes), len(self._hashes) - 1)
            hit = self._hashes[at] == hashes
            found[hit] = self._hash_ids[at[hit]]
            if hit.any():  # a hash match is the sensor only if its strings are
                rows = np.flatnonzero(hit)
                same = pc.equal(_keys(self._column(self._devices, found[rows]), self._column(self._tags, found[rows])),
                                keys.take(pa.array(rows))).to_numpy(zero_copy_only=False)
                found[rows[~same]] = -1
        missing = np.flatnonzero(found < 0)
        if len(missing):
            self._add(key_list, hashes, hit, missing, found, device, tag)
        return found

    def devices(self, ids: np.ndarray) -> pa.Array:
        """The device of each id."""
        return self._column(self._devices, ids)

    def tags(self, ids: np.ndarray) -> pa.Array:
        """The tag of each id."""
        return self._column(self._tags, ids)

    def _add(self, key_list: list, hashes: np.ndarray, hit: np.ndarray, missing: np.ndarray, found: np.ndarray,
             device: pa.Array, tag: pa.Array) -> None:
        """Ids for the ``missing`` rows: a collided key's, or new ones in row order."""
        new_ids: dict[str, int] = {}
        new_rows: list[int] = []  # the row that introduces each new sensor
        new_hashes: dict[int, int] = {}  # hash -> id, for hashes not yet in the array
        for row in missing.tolist():
            key = key_list[row]
            sensor = self._collided.get(key)
            if sensor is None:
                sensor = new_ids.get(key)
            if sensor is None:
                sensor = new_ids[key] = self._count
                self._count += 1
                new_rows.append(row)
                h = int(hashes[row])
                if hit[row] or h in new_hashes:
                    self._collided[key] = sensor  # its hash belongs to another sensor
                else:
                    new_hashes[h] = sensor
            found[row] = sensor
        if new_hashes:
            hashes_new = np.fromiter(new_hashes.keys(), np.int64, len(new_hashes))
            ids_new = np.fromiter(new_hashes.values(), np.int64, len(new_hashes))
            merged = np.concatenate([self._hashes, hashes_new])
            order = np.argsort(merged, kind="stable")
            self._hashes = merged[order]
            self._hash_ids = np.concatenate([self._hash_ids, ids_new])[order]
        taken = pa.array(new_rows, pa.int64())
        self._devices.append(device.take(taken))
        self._tags.append(tag.take(taken))

    @staticmethod
    def _column(chunks: list[pa.Array], ids: np.ndarray) -> pa.Array:
        if not chunks:
            return pa.array([], pa.string())
        if len(chunks) > 1:
            chunks[:] = [pa.concat_arrays(chunks)]
        return chunks[0].take(pa.array(ids, pa.int64()))


def _keys(device: pa.Array, tag: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(pc.cast(pc.utf8_length(device), pa.string()), device, tag, "\x00")


def _one_chunk(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column
