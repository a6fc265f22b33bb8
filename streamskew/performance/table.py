"""Bounded hash tables of pending requests and of labels that came before their request.

Open addressing with linear probing over numpy arrays, driven by numba loops, so a batch of
requests or labels costs a few compiled passes and every entry has a known size:

==========  =====  ===========================================================
array       bytes  what
==========  =====  ===========================================================
``keys``    8      64-bit hash of the request id (FNV-1a + splitmix64), also the sampling key
``times``   8      the request's event time (the label's, in the label table)
``values``  8      the prediction (the label, in the label table), float64
``models``  2      the model's index (the flag "behind the label watermark", in
                   the label table)
``states``  1      empty / pending / matched / late / expired / deleted
==========  =====  ===========================================================

27 bytes a slot. The table is rebuilt at half full when it must grow, and grows before it
passes 70% full, so a pending request costs 39 to 54 bytes (plus deleted slots until the next
rebuild, also triggered at 70%). Two different ids collide in 64 bits with probability about
``n^2 / 2^65`` (3e-6 for 10 million pending requests); such a pair counts as one request.

>>> table = HashTable(16)
>>> table.ensure(3)
>>> slots = table.insert(np.array([7, 9, 7], np.uint64), np.array([1, 2, 3]),
...                      np.array([0.5, 0.25, 1.0]), np.zeros(3, np.uint16), 1)
>>> slots.tolist()[2], table.live, table.find(np.array([9, 4], np.uint64)).tolist()[1]
(-1, 2, -1)
"""

from __future__ import annotations

import base64
import zlib

import numba
import numpy as np

__all__ = [
    "DELETED",
    "EMPTY",
    "EXPIRED",
    "LATE",
    "MATCHED",
    "PENDING",
    "SLOT_BYTES",
    "HashTable",
]

EMPTY, PENDING, MATCHED, LATE, EXPIRED, DELETED = 0, 1, 2, 3, 4, 255
SLOT_BYTES = 8 + 8 + 8 + 2 + 1
MAX_LOAD = 0.7
REBUILD_LOAD = 0.5
MIN_CAPACITY = 1024


@numba.njit(cache=True, nogil=True)
def _home(key, capacity):  # pragma: no cover (numba)
    # The low bits are uniform even when sampling keeps only small keys.
    return np.int64(key % np.uint64(capacity))


@numba.njit(cache=True, nogil=True)
def find_slot(keys, states, key):  # pragma: no cover (numba)
    capacity = keys.shape[0]
    slot = _home(key, capacity)
    for _ in range(capacity):
        state = states[slot]
        if state == EMPTY:
            return -1
        if state != DELETED and keys[slot] == key:
            return slot
        slot += 1
        if slot == capacity:
            slot = 0
    return -1


@numba.njit(cache=True, nogil=True)
def insert_slot(keys, states, key):  # pragma: no cover (numba)
    """A free slot for ``key`` (the caller knows it is absent and there is room)."""
    capacity = keys.shape[0]
    slot = _home(key, capacity)
    while states[slot] != EMPTY and states[slot] != DELETED:
        slot += 1
        if slot == capacity:
            slot = 0
    return slot


@numba.njit(cache=True, nogil=True)
def _insert_all(keys, times, values, models, states, new_keys, new_times, new_values,
                new_models, state, out):  # pragma: no cover (numba)
    """Insert absent keys; ``out[i]`` = slot, or -1 for a key already present."""
    added = 0
    for i in range(new_keys.shape[0]):
        key = new_keys[i]
        if find_slot(keys, states, key) >= 0:
            out[i] = -1
            continue
        slot = insert_slot(keys, states, key)
        keys[slot] = key
        times[slot] = new_times[i]
        values[slot] = new_values[i]
        models[slot] = new_models[i]
        states[slot] = state
        out[i] = slot
        added += 1
    return added


@numba.njit(cache=True, nogil=True)
def _find_all(keys, states, wanted, out):  # pragma: no cover (numba)
    for i in range(wanted.shape[0]):
        out[i] = find_slot(keys, states, wanted[i])


class HashTable:
    """Entries keyed by uint64 (see the module docs)."""

    def __init__(self, capacity: int = MIN_CAPACITY) -> None:
        self._allocate(max(capacity, 16))
        self.live = 0
        self.deleted = 0

    def _allocate(self, capacity: int) -> None:
        self.keys = np.zeros(capacity, np.uint64)
        self.times = np.zeros(capacity, np.int64)
        self.values = np.zeros(capacity, np.float64)
        self.models = np.zeros(capacity, np.uint16)
        self.states = np.zeros(capacity, np.uint8)

    @property
    def capacity(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return self.capacity * SLOT_BYTES

    def ensure(self, extra: int) -> None:
        """Room for ``extra`` more entries below the maximum load (rebuilds if needed)."""
        if self.live + self.deleted + extra <= MAX_LOAD * self.capacity:
            return
        live = self.live + extra
        capacity = max(MIN_CAPACITY, -(-int(live / REBUILD_LOAD) // MIN_CAPACITY) * MIN_CAPACITY)
        self._rebuild(capacity)

    def _rebuild(self, capacity: int) -> None:
        occupied = np.flatnonzero((self.states != EMPTY) & (self.states != DELETED))
        old = (self.keys[occupied], self.times[occupied], self.values[occupied],
               self.models[occupied], self.states[occupied])
        self._allocate(capacity)
        self.deleted = 0
        self.live = 0
        self._put(*old)

    def _put(self, keys: np.ndarray, times: np.ndarray, values: np.ndarray,
             models: np.ndarray, states: np.ndarray) -> None:
        for state in np.unique(states):
            rows = states == state
            self.insert(keys[rows], times[rows], values[rows], models[rows], int(state))

    def insert(self, keys: np.ndarray, times: np.ndarray, values: np.ndarray,
               models: np.ndarray, state: int) -> np.ndarray:
        """Insert (call :meth:`ensure` first); the slot of each, -1 where the key was there."""
        out = np.empty(len(keys), np.int64)
        self.live += _insert_all(self.keys, self.times, self.values, self.models, self.states,
                                 np.ascontiguousarray(keys, np.uint64),
                                 np.ascontiguousarray(times, np.int64),
                                 np.ascontiguousarray(values, np.float64),
                                 np.ascontiguousarray(models, np.uint16), np.uint8(state), out)
        return out

    def find(self, keys: np.ndarray) -> np.ndarray:
        out = np.empty(len(keys), np.int64)
        _find_all(self.keys, self.states, np.ascontiguousarray(keys, np.uint64), out)
        return out

    def delete(self, slots: np.ndarray) -> None:
        slots = slots[(self.states[slots] != EMPTY) & (self.states[slots] != DELETED)]
        self.states[slots] = DELETED
        self.live -= len(slots)
        self.deleted += len(slots)

    def occupied(self) -> np.ndarray:
        return np.flatnonzero((self.states != EMPTY) & (self.states != DELETED))

    # -- snapshots ---------------------------------------------------------------------------

    def snapshot(self) -> str:
        """The live entries, in key order (so equal tables give equal bytes)."""
        rows = self.occupied()
        rows = rows[np.argsort(self.keys[rows], kind="stable")]
        body = b"".join(a[rows].tobytes() for a in
                        (self.keys, self.times, self.values, self.models, self.states))
        return base64.b64encode(zlib.compress(np.int64(len(rows)).tobytes() + body, 1)
                                ).decode()

    @classmethod
    def restore(cls, text: str) -> HashTable:
        body = zlib.decompress(base64.b64decode(text))
        n = int(np.frombuffer(body[:8], np.int64)[0])
        offset = 8
        arrays = []
        for dtype in (np.uint64, np.int64, np.float64, np.uint16, np.uint8):
            size = n * np.dtype(dtype).itemsize
            arrays.append(np.frombuffer(body[offset:offset + size], dtype).copy())
            offset += size
        table = cls(MIN_CAPACITY)
        table.ensure(n)
        table._put(*arrays)
        return table
