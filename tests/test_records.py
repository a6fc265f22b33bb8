"""Decoding: good messages become columns; every kind of bad input is classified, never
raised, and the good records beside it are still used."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from streamskew.config import MessageConfig
from streamskew.records import NO_TIME, Decoder, Reason

SCHEMA = {"amount": "numeric", "country": "categorical", "prediction": "numeric"}


def good(i: int) -> bytes:
    return orjson.dumps({"request_id": f"r-{i}", "timestamp": 1_764_324_000_000 + i,
                         "model": "fraud", "features": {"amount": 10.0 + i, "country": "DE"},
                         "prediction": 0.5})


# (raw message, expected reason, used?)
BAD_CORPUS = [
    (b'{"timestamp": 1, "features": {"amount": 1', Reason.INVALID_JSON, False),
    (b"", Reason.INVALID_JSON, False),
    (b"\xff\xfe{}", Reason.INVALID_UTF8, False),
    (b'{"features": {"country": "\xc3\x28"}}', Reason.INVALID_UTF8, False),
    (b"[1, 2, 3]", Reason.NOT_AN_OBJECT, False),
    (b'"just a string"', Reason.NOT_AN_OBJECT, False),
    (b"null", Reason.NOT_AN_OBJECT, False),
    (b'{"timestamp": 1764324000000, "features": [1, 2]}', Reason.FEATURES_NOT_AN_OBJECT, False),
    (b'{"timestamp": 1764324000000}', Reason.FEATURES_NOT_AN_OBJECT, False),
    (b'{"timestamp": "yesterday", "features": {}}', Reason.BAD_TIMESTAMP, False),
    (b'{"timestamp": -5, "features": {}}', Reason.BAD_TIMESTAMP, False),
    (b'{"timestamp": true, "features": {}}', Reason.BAD_TIMESTAMP, False),
    (b'{"timestamp": "2025-11-28T10:00:00", "features": {}}', Reason.BAD_TIMESTAMP, False),
    (b'{"timestamp": 1764324000000, "features": {"amount": "12.5"}}', Reason.WRONG_TYPE, True),
    (b'{"timestamp": 1764324000000, "features": {"amount": true}}', Reason.WRONG_TYPE, True),
    (b'{"timestamp": 1764324000000, "features": {"country": {"a": 1}}}', Reason.WRONG_TYPE,
     True),
    (b'{"timestamp": 1764324000000, "features": {"amount": NaN}}', Reason.NON_FINITE, True),
    (b'{"timestamp": 1764324000000, "features": {"amount": Infinity}}', Reason.NON_FINITE,
     True),
    (b'{"timestamp": 1764324000000, "features": {"amount": 1e999}}', Reason.NON_FINITE, True),
    (b'{"timestamp": 1764324000000, "features": {"amount": 1}, "pad": "'
     + b"x" * 2_000_000 + b'"}', Reason.TOO_LARGE, False),
    (b"[" * 100_000, Reason.INVALID_JSON, False),
]


@pytest.mark.parametrize(("raw", "reason", "used"), BAD_CORPUS,
                         ids=[f"{r}-{i}" for i, (_, r, _) in enumerate(BAD_CORPUS)])
def test_each_bad_message_is_classified_and_its_neighbours_survive(raw, reason, used):
    decoder = Decoder(MessageConfig(), SCHEMA)
    batch = [good(0), raw, good(2)]
    columns, bad = decoder.decode(batch)
    assert [(b.position, b.reason, b.used) for b in bad] == [(1, reason, used)]
    assert bad[0].raw == raw and bad[0].detail
    expected_rows = 3 if used else 2
    assert columns.count == expected_rows
    amounts = columns.numeric["amount"]
    assert amounts[0] == 10.0 and amounts[-1] == 12.0  # the good records are intact
    if used:  # the rest of the message is still used; the bad field counts as invalid
        assert columns.invalid_of(next(iter(k for k in SCHEMA if columns.invalid_of(k)[1])))[1]


def test_whole_corpus_in_one_batch_loses_nothing():
    decoder = Decoder(MessageConfig(), SCHEMA)
    batch = [good(0)] + [raw for raw, _, _ in BAD_CORPUS] + [good(1)]
    columns, bad = decoder.decode(batch)
    assert sorted(b.position for b in bad) == list(range(1, len(BAD_CORPUS) + 1))
    used = sum(1 for _, _, u in BAD_CORPUS if u)
    assert columns.count == 2 + used


def test_a_batch_spanning_several_parse_chunks_equals_its_messages_one_by_one():
    """Decoding parses and picks columns chunk by chunk (PARSE_CHUNK messages): the rows,
    positions, bad records and new-feature masks of a long batch are exactly those of its
    messages decoded alone, whichever chunk a problem or a new key falls in."""
    from streamskew.records import PARSE_CHUNK

    n = 2 * PARSE_CHUNK + 77
    bad_at = {3: BAD_CORPUS[0][0], PARSE_CHUNK: BAD_CORPUS[13][0], n - 1: BAD_CORPUS[4][0]}
    batch = [bad_at.get(i, good(i)) for i in range(n)]
    batch[PARSE_CHUNK + 5] = orjson.dumps({"timestamp": 1, "features": {"amount": 1.0,
                                                                        "late_key": 1}})
    decoder = Decoder(MessageConfig(), SCHEMA)
    columns, bad = decoder.decode(batch)
    assert [(b.position, b.reason) for b in bad] == [
        (3, BAD_CORPUS[0][1]), (n - 1, BAD_CORPUS[4][1]), (PARSE_CHUNK, BAD_CORPUS[13][1])]
    alone = [decoder.decode([m])[0] for m in batch]
    kept = [i for i, c in enumerate(alone) if c.count]
    assert columns.positions.tolist() == kept
    np.testing.assert_array_equal(columns.numeric["amount"],  # NaN where invalid, as alone
                                  [alone[i].numeric["amount"][0] for i in kept])
    assert columns.invalid_of("amount").tolist() == [alone[i].invalid_of("amount")[0]
                                                     for i in kept]
    assert columns.timestamps.tolist() == [alone[i].timestamps[0] for i in kept]
    assert np.flatnonzero(columns.new_features["late_key"]).tolist() == [
        kept.index(PARSE_CHUNK + 5)]


def test_messages_that_are_fragments_of_json_never_lend_values_to_their_neighbours():
    """Fragments such as `{...},{...}` and `[{...` are each invalid, but joined by commas
    they can form a valid array of as many values as messages. Each message is parsed on its
    own: the fragments are bad records, and the good messages keep their own values."""
    fragments = [
        orjson.dumps({"timestamp": 1, "features": {"amount": 1.0}}) + b","
        + orjson.dumps({"timestamp": 2, "features": {"amount": 2.0}}),
        b"[" + orjson.dumps({"timestamp": 3, "features": {"amount": 3.0}}),
        orjson.dumps({"timestamp": 4, "features": {"amount": 4.0}}) + b"]",
    ]
    batch = [good(0), *fragments, good(1)]
    columns, bad = Decoder(MessageConfig(), SCHEMA).decode(batch)
    assert [b.position for b in bad] == [1, 2, 3]
    assert {b.reason for b in bad} == {Reason.INVALID_JSON}
    assert columns.positions.tolist() == [0, 4]
    expected = [orjson.loads(good(i))["features"]["amount"] for i in (0, 1)]
    assert columns.numeric["amount"].tolist() == expected


def test_columns_values_missing_and_types():
    decoder = Decoder(MessageConfig(), SCHEMA)
    columns, bad = decoder.decode([
        b'{"timestamp": 1000, "model": "a", "features": {"amount": 1, "country": "DE"},'
        b' "prediction": 0.1}',
        b'{"timestamp": "2025-11-28T10:00:00Z", "features": {"amount": null, "country": 7},'
        b' "prediction": 0.2}',
        b'{"features": {"extra": 1}}',
    ])
    assert bad == []
    assert columns.timestamps[0] == 1000
    assert columns.timestamps[1] == 1_764_324_000_000
    assert columns.timestamps[2] == NO_TIME
    assert columns.numeric["amount"][0] == 1.0 and math.isnan(columns.numeric["amount"][1])
    assert columns.categorical["country"].tolist() == ["DE", "7", None]
    assert columns.numeric["prediction"].tolist()[:2] == [0.1, 0.2]
    assert columns.models.tolist() == ["a", None, None]
    assert {k: v.tolist() for k, v in columns.new_features.items()} == {
        "extra": [False, False, True]}
    assert not any(columns.invalid_of(k).any() for k in SCHEMA) and not columns.invalid


def test_flat_messages_use_top_level_keys_minus_envelope_and_exclude():
    message = MessageConfig(features="", exclude=("request_id",))
    decoder = Decoder(message, {"amount": "numeric"})
    columns, bad = decoder.decode([b'{"request_id": "r", "timestamp": 5, "model": "m",'
                                   b' "amount": 3.5, "new": 1}'])
    assert bad == [] and columns.numeric["amount"].tolist() == [3.5]
    # request_id, timestamp and model are not features
    assert {k: v.tolist() for k, v in columns.new_features.items()} == {"new": [True]}


def test_nested_paths():
    message = MessageConfig(features="request.inputs", timestamp="meta.ts", model="meta.model")
    decoder = Decoder(message, {"x": "numeric"})
    columns, bad = decoder.decode([b'{"meta": {"ts": 7, "model": "m"},'
                                   b' "request": {"inputs": {"x": 2}}}'])
    assert bad == [] and columns.timestamps.tolist() == [7]
    assert columns.models.tolist() == ["m"] and columns.numeric["x"].tolist() == [2.0]


def test_dict_input_with_numpy_scalars_is_numeric():
    decoder = Decoder(MessageConfig(), {"x": "numeric"})
    columns, bad = decoder.decode_objects([{"features": {"x": np.float64(1.5)}},
                                           {"features": {"x": np.int32(2)}}])
    assert bad == [] and columns.numeric["x"].tolist() == [1.5, 2.0]


def test_random_bytes_never_raise():
    """A fuzz pass: arbitrary bytes and mutated messages are classified, never raised."""
    rng = np.random.default_rng(0)
    decoder = Decoder(MessageConfig(), SCHEMA)
    template = good(0)
    batch = []
    for _ in range(2000):
        if rng.random() < 0.5:
            batch.append(rng.integers(0, 256, rng.integers(0, 60)).astype(np.uint8).tobytes())
        else:
            mutated = bytearray(template)
            for _ in range(rng.integers(1, 4)):
                mutated[rng.integers(len(mutated))] = rng.integers(0, 256)
            batch.append(bytes(mutated))
    columns, bad = decoder.decode(batch)
    rejected = {b.position for b in bad if not b.used}
    assert columns.count + len(rejected) == len(batch)
