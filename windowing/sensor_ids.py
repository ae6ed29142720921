"""Dense integer ids for sensors, so that open windows are keyed by numbers, not strings."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorflow.records.sensors import sensor_pairs

__all__ = ["SensorIds"]


class SensorIds:
    """Gives each sensor (device, tag) the next integer id (0, 1, ...) the first time it is seen; ids map back.

    Ids last as long as the object: a caller may key state by them and turn them back into
    strings with :meth:`devices` and :meth:`tags`. A sensor's key is one string (the device's
    length, the device and the tag, joined: no characters in the ids can make two sensors one
    key). A batch's distinct keys are found by their 64-bit hash in a sorted array (16 bytes
    per sensor; a dict of the keys took ~120) and every match is checked against the stored
    key, so two keys of one hash are told apart (such keys keep their ids in a small dict).
    """

    def __init__(self, hash_key: Callable[[str], int] = hash) -> None:
        """``hash_key``: any function from key to int64; tests pass a poor one to exercise collisions."""
        self._hash_key = hash_key
        self._hashes = np.empty(0, np.int64)  # sorted
        self._hash_ids = np.empty(0, np.int64)  # the id of each of ``_hashes``
        self._collided: dict[str, int] = {}  # keys whose hash another key had first
        self._count = 0
        self._keys: list[pa.Array] = []  # chunks, in id order; joined when read
        self._devices: list[pa.Array] = []
        self._tags: list[pa.Array] = []

    def __len__(self) -> int:
        return self._count

    def encode(self, device: pa.Array | pa.ChunkedArray, tag: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """``(codes, ids)``: each row's code (0, 1, ... in order of first appearance in the rows), and each code's id.

        ``ids[codes]`` is each row's sensor id; sensors not seen before get new ids, in row order.
        Strings are hashed per row only by Arrow's dictionary encoding of each column; the
        Python work is per distinct sensor.
        """
        pair, devices, tag_names = sensor_pairs(device, tag)
        tags = len(tag_names)
        rows, bound = len(pair), len(devices) * tags
        if bound <= 4 * rows:  # pairs numbered densely: no sort of the rows
            first = np.full(bound, rows, np.int64)
            np.minimum.at(first, pair, np.arange(rows))
            present = np.flatnonzero(first < rows)
            distinct = present[np.argsort(first[present], kind="stable")]
            code_of = np.empty(bound, np.int64)
            code_of[distinct] = np.arange(len(distinct))
            codes = code_of[pair]
        else:
            distinct, first, codes = np.unique(pair, return_index=True, return_inverse=True)
            order = np.argsort(first, kind="stable")
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order))
            distinct, codes = distinct[order], rank[codes]
        ids = self._lookup(devices.take(pa.array(distinct // tags)), tag_names.take(pa.array(distinct % tags)))
        return codes, ids

    def _lookup(self, device: pa.Array, tag: pa.Array) -> np.ndarray:
        """The id of each (distinct) sensor; new ones get new ids, in order."""
        distinct = _keys(device, tag)
        key_list = distinct.to_pylist()
        hashes = np.fromiter(map(self._hash_key, key_list), np.int64, len(key_list))
        ids = np.full(len(key_list), -1, np.int64)
        hit = np.zeros(len(key_list), bool)  # the hash is known (maybe another sensor's)
        if len(self._hashes):
            at = np.minimum(np.searchsorted(self._hashes, hashes), len(self._hashes) - 1)
            hit = self._hashes[at] == hashes
            rows = np.flatnonzero(hit)
            if len(rows):  # a hash match is the sensor only if its key is
                candidates = self._hash_ids[at[rows]]
                same = pc.equal(_column(self._keys, candidates), distinct.take(pa.array(rows))).to_numpy(zero_copy_only=False)
                ids[rows[same]] = candidates[same]
        missing = np.flatnonzero(ids < 0)
        if len(missing):
            new = pa.array(self._add(key_list, hashes, hit, missing, ids), pa.int64())
            self._keys.append(distinct.take(new))
            self._devices.append(device.take(new))
            self._tags.append(tag.take(new))
        return ids

    def ids(self, device: pa.Array | pa.ChunkedArray, tag: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The id (int64) of each row's sensor; sensors not seen before get new ids, in row order."""
        codes, ids = self.encode(device, tag)
        return ids[codes]

    def devices(self, ids: np.ndarray) -> pa.Array:
        """The device of each id."""
        return _column(self._devices, ids)

    def tags(self, ids: np.ndarray) -> pa.Array:
        """The tag of each id."""
        return _column(self._tags, ids)

    def _add(self, key_list: list, hashes: np.ndarray, hit: np.ndarray, missing: np.ndarray, ids: np.ndarray) -> list[int]:
        """Ids for the ``missing`` distinct keys: a collided key's, or new ones in order. Returns the codes given new ids."""
        new_hashes: dict[int, int] = {}  # hash -> id, for hashes not yet in the array
        new_codes = []
        for code, h, known_hash in zip(missing.tolist(), hashes[missing].tolist(), hit[missing].tolist()):
            key = key_list[code]
            sensor = self._collided.get(key)
            if sensor is None:
                sensor = self._count
                self._count += 1
                new_codes.append(code)
                if known_hash or h in new_hashes:
                    self._collided[key] = sensor  # its hash belongs to another sensor
                else:
                    new_hashes[h] = sensor
            ids[code] = sensor
        if new_hashes:
            merged = np.concatenate([self._hashes, np.fromiter(new_hashes.keys(), np.int64, len(new_hashes))])
            order = np.argsort(merged, kind="stable")
            self._hashes = merged[order]
            self._hash_ids = np.concatenate([self._hash_ids, np.fromiter(new_hashes.values(), np.int64, len(new_hashes))])[order]
        return new_codes


def _keys(device: pa.Array, tag: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(pc.cast(pc.utf8_length(device), pa.string()), device, tag, "\x00")


def _column(chunks: list[pa.Array], ids: np.ndarray) -> pa.Array:
    if not chunks:
        return pa.array([], pa.string())
    if len(chunks) > 1:
        chunks[:] = [pa.concat_arrays(chunks)]
    return chunks[0].take(pa.array(ids, pa.int64()))
