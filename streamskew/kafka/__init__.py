"""Kafka adapters of streamskew.

``streamskew.kafka.local`` resolves and runs a real single-node Apache Kafka (KRaft)
on loopback for development, tests and CI (``streamskew local-kafka ...``).
It is deliberately not imported here, so ``python -m streamskew.kafka.local`` runs cleanly.
"""
