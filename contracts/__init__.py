"""Liên thông contracts: the single source of truth for every event and API payload.

Services share nothing but Kafka topics and these models. JSON Schema and AsyncAPI
documents under ``contracts/schema`` are generated from them (``make contracts``).
"""

from contracts.envelope import Envelope, EventPayload, new_envelope
from contracts.events import EVENT_TYPES, parse_payload
from contracts.topics import TOPICS, Topic, topic_for

__all__ = [
    "EVENT_TYPES",
    "TOPICS",
    "Envelope",
    "EventPayload",
    "Topic",
    "new_envelope",
    "parse_payload",
    "topic_for",
]
