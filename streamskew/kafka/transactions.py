"""Kafka transactions that end within a bound, or fail so the service can recover.

kafka-python 3.0's ``commit_transaction``, ``abort_transaction`` and
``send_offsets_to_transaction`` wait without a limit. Seen here: the broker killed for 30 s
during a commit, its transaction coordinator then fenced the timed-out transaction, and
``commit_transaction`` never returned, so the service hung for good. These helpers issue the
same requests through the producer's transaction manager and wait at most ``timeout_s``;
past it they raise ``KafkaTimeoutError`` (transient: the service drops the producer and
carries on from its last committed transaction).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

__all__ = ["TXN_TIMEOUT_S", "send_offsets", "transaction"]

log = logging.getLogger(__name__)

# The producer's transaction_timeout_ms (kafka-python: 60 s): a transaction still open by
# then is aborted by the broker, so waiting longer for it is pointless.
TXN_TIMEOUT_S = 60.0


def _bounded(producer: KafkaProducer, what: str, timeout_s: float, *args: Any) -> None:
    manager = getattr(producer, "_transaction_manager", None)
    begin = getattr(manager, what, None)
    if begin is None:  # another kafka-python: its public, unbounded call
        public = {"begin_commit": "commit_transaction", "begin_abort": "abort_transaction"}
        getattr(producer, public.get(what, what))(*args)
        return
    result = begin(*args)
    producer._sender.wakeup()
    if not result.wait(timeout_ms=timeout_s * 1000):
        raise KafkaTimeoutError(f"{what.replace('_', ' ')} did not complete within "
                                f"{timeout_s:.0f}s")


def send_offsets(producer: KafkaProducer, offsets: Any, group_metadata: Any,
                 timeout_s: float) -> None:
    """``send_offsets_to_transaction``, bounded."""
    _bounded(producer, "send_offsets_to_transaction", timeout_s, offsets, group_metadata)


@contextmanager
def transaction(producer: KafkaProducer, timeout_s: float = TXN_TIMEOUT_S) -> Iterator[None]:
    """Everything sent inside commits together, or is aborted (and the error re-raised)."""
    producer.begin_transaction()
    try:
        yield
        _bounded(producer, "begin_commit", timeout_s)
    except Exception:
        try:
            _bounded(producer, "begin_abort", min(timeout_s, 10.0))
        except Exception:
            log.debug("abort failed", exc_info=True)
        raise
