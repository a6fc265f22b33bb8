"""What went wrong with Kafka, in one line the user can act on, and whether to wait it out.

kafka-python reports an unreachable broker and a refused password the same way, as
``KafkaTimeoutError: Unable to bootstrap`` after ``bootstrap_timeout_ms`` (30 s unless set in
``[kafka]``), and its other errors derive from ``Exception``. This module:

- connects the first client of a command (:func:`connect_admin`) while listening to what
  kafka-python logs, so that a failure says whether nothing listens at the address, the
  connection dropped during SASL authentication (a wrong user or password), or TLS failed;
- turns any Kafka error into a :class:`KafkaProblem` (a
  :class:`~streamskew.errors.StreamskewError`: one line, no traceback) that names the address,
  the mechanism and the likely fix, never a secret (:func:`explain`);
- tells a transient error (broker down or paused, coordinator moved, member fenced out of
  its group, a timed-out request or transaction), which a running service waits out, from a
  fatal one (authentication, authorization, configuration), which ends it
  (:func:`is_transient`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaAdminClient
from kafka import errors as kerrors

from ..config import KafkaConfig
from ..errors import StreamskewError
from .clients import admin_settings

__all__ = ["KafkaProblem", "connect_admin", "explain", "is_transient"]

FATAL = (
    kerrors.AuthorizationError,
    kerrors.SaslAuthenticationFailedError,
    kerrors.KafkaConfigurationError,
    kerrors.UnsupportedVersionError,
    kerrors.InvalidTopicError,
    kerrors.PolicyViolationError,
    kerrors.InvalidReplicationFactorError,
    kerrors.MessageSizeTooLargeError,
)


class KafkaProblem(StreamskewError):
    """Kafka cannot be used as configured; the message says what to change."""


def is_transient(exc: BaseException) -> bool:
    """Whether a running service should wait ``exc`` out (retry from its last checkpoint)."""
    if isinstance(exc, StreamskewError) or isinstance(exc, FATAL):  # noqa: SIM101
        return False
    return isinstance(exc, kerrors.KafkaError | OSError | TimeoutError)


def _where(kafka: KafkaConfig, bootstrap: str | None) -> str:
    servers = bootstrap or kafka.bootstrap_servers
    return ",".join(servers) if isinstance(servers, tuple) else str(servers)


def _mechanism(kafka: KafkaConfig) -> str:
    protocol = kafka.client.get("security_protocol", "PLAINTEXT")
    if protocol.startswith("SASL"):
        user = kafka.client.get("sasl_plain_username")
        who = f" as user {user!r}" if user else ""
        return f"{protocol} {kafka.client.get('sasl_mechanism', 'PLAIN')}{who}"
    return str(protocol)


def explain(exc: BaseException, kafka: KafkaConfig, bootstrap: str | None = None,
            doing: str = "") -> KafkaProblem:
    """One line for ``exc``: what failed, where, with which mechanism, and the fix."""
    where = _where(kafka, bootstrap)
    what = f"{doing}: " if doing else ""
    name = type(exc).__name__
    if isinstance(exc, kerrors.SaslAuthenticationFailedError):
        return KafkaProblem(f"{what}Kafka at {where} refused the credentials ({_mechanism(kafka)}"
                            f"): check sasl_plain_username / sasl_plain_password in [kafka]")
    if isinstance(exc, kerrors.TopicAuthorizationFailedError):
        return KafkaProblem(f"{what}not authorized for a topic at {where} ({_mechanism(kafka)}):"
                            f" grant Read/Write/Create on the source and streamskew topics "
                            f"({exc})")
    if isinstance(exc, kerrors.GroupAuthorizationFailedError):
        return KafkaProblem(f"{what}not authorized for consumer group {kafka.group_id!r} at "
                            f"{where} ({_mechanism(kafka)}): grant Read on the group (and on "
                            f"'{kafka.group_id}.evaluator')")
    if isinstance(exc, kerrors.TransactionalIdAuthorizationFailedError):
        return KafkaProblem(f"{what}not authorized to use transactional ids at {where} "
                            f"({_mechanism(kafka)}): grant Write on transactional ids starting "
                            f"with 'streamskew-{kafka.group_id}-'")
    if isinstance(exc, kerrors.AuthorizationError):
        return KafkaProblem(f"{what}not authorized at {where} ({_mechanism(kafka)}): {name}; "
                            "grant the ACLs listed in the README (Kafka permissions)")
    if isinstance(exc, kerrors.MessageSizeTooLargeError):
        return KafkaProblem(f"{what}a record is larger than Kafka at {where} accepts: raise the "
                            f"topic's max.message.bytes or [kafka] max_request_size ({exc})")
    if isinstance(exc, KafkaProblem):
        return exc
    detail = str(exc) or name
    return KafkaProblem(f"{what}Kafka at {where} failed: {name}: {detail}")


class _Listen(logging.Handler):
    """Remembers what kafka-python logs while a first connection is tried."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.connected = False  # a TCP connection was made
        self.sasl = False  # ... and a SASL exchange started on it
        self.lost_in_sasl = False  # ... and the broker dropped it then
        self.tls = ""  # an SSL error message
        self.refused = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed log call of the library: not ours to judge
            return
        if "connected to <socket" in text:
            self.connected = True
            self.sasl = False
        elif "SaslHandshake" in text or "Sasl Authentication" in text:
            self.sasl = True
        elif ("Connection lost" in text or "socket disconnected" in text) and self.sasl:
            self.lost_in_sasl = True
        if "SSL" in text and ("error" in text.lower() or "fail" in text.lower()):
            self.tls = text[:200]
        if "Connection refused" in text or "ECONNREFUSED" in text:
            self.refused = True


_LISTENING = threading.Lock()
_listeners: list[_Listen] = []
_saved: list[tuple[int, bool]] = []  # the kafka logger's level and propagate, while listened


@contextmanager
def _listening() -> Iterator[_Listen]:
    """kafka-python's log records at DEBUG go to the listener only, for the duration. Several
    threads may connect at once (replicas in one process): the logger is switched by the
    first and restored by the last."""
    logger = logging.getLogger("kafka")
    listener = _Listen()
    with _LISTENING:
        if not _listeners:
            _saved.append((logger.level, logger.propagate))
            logger.setLevel(logging.DEBUG)
            logger.propagate = False  # its DEBUG lines would otherwise reach the user
        _listeners.append(listener)
        logger.addHandler(listener)
    try:
        yield listener
    finally:
        with _LISTENING:
            logger.removeHandler(listener)
            _listeners.remove(listener)
            if not _listeners:
                level, propagate = _saved.pop()
                logger.setLevel(level)
                logger.propagate = propagate


def connect_admin(kafka: KafkaConfig, bootstrap: str | None = None,
                  doing: str = "connecting") -> KafkaAdminClient:
    """An admin client, or a :class:`KafkaProblem` saying why none could be had, within
    ``bootstrap_timeout_ms`` (kafka-python's name; 30 s unless set in ``[kafka]``)."""
    settings = admin_settings(kafka, bootstrap)
    timeout_s = settings.get("bootstrap_timeout_ms", 30_000) / 1000
    start = time.monotonic()
    with _listening() as heard:
        try:
            return KafkaAdminClient(**settings)
        except Exception as exc:
            if not isinstance(exc, kerrors.KafkaError | OSError | TimeoutError):
                raise
            failure = exc
    waited = time.monotonic() - start
    where = _where(kafka, bootstrap)
    if isinstance(failure, FATAL):
        raise explain(failure, kafka, bootstrap, doing)
    if heard.lost_in_sasl:
        raise KafkaProblem(
            f"{doing}: Kafka at {where} closed the connection during SASL authentication "
            f"({_mechanism(kafka)}): the user or password is wrong, or the mechanism is not "
            f"enabled on that listener; check sasl_plain_username, sasl_plain_password and "
            f"sasl_mechanism in [kafka]")
    if heard.tls:
        raise KafkaProblem(f"{doing}: TLS with Kafka at {where} failed ({heard.tls}): check "
                           "security_protocol and the ssl_* settings in [kafka]")
    if heard.connected:
        raise KafkaProblem(
            f"{doing}: Kafka at {where} accepted a connection but did not answer as a broker "
            f"within {waited:.0f}s ({_mechanism(kafka)}): check security_protocol in [kafka] "
            f"(is that port a SASL or TLS listener?)")
    raise KafkaProblem(
        f"{doing}: no Kafka broker answered at {where} within {waited:.0f}s "
        f"(bootstrap_timeout_ms {timeout_s * 1000:.0f}): is it running, and is the address "
        f"right? Set bootstrap_servers in [kafka] or pass --bootstrap-servers")


def describe(settings: dict[str, Any]) -> str:
    """The connection settings for a log line, secrets masked."""
    return ", ".join(f"{k}={'***' if 'password' in k or 'secret' in k else v}"
                     for k, v in sorted(settings.items()) if k.startswith(("security", "sasl",
                                                                          "bootstrap")))
