"""Topic names and partition counts, defined once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    """A Kafka topic: its base name (prefixed per deployment) and partition count."""

    name: str
    partitions: int
    description: str

    def full_name(self, prefix: str = "") -> str:
        return f"{prefix}{self.name}"


CATALOGUE = Topic("lienthong.catalogue.v1", 3, "Procedure catalogue entries, keyed by code")
DOSSIER = Topic("lienthong.dossier.v1", 6, "Dossier lifecycle at the one-stop desk")
ROUTING = Topic("lienthong.routing.v1", 6, "Where a dossier goes: lead and consulted agencies")
CONSULTATION = Topic("lienthong.consultation.v1", 6, "Opinion requests between agencies")
NOTIFICATION = Topic("lienthong.notification.v1", 6, "Notifications delivered to people")
DEAD_LETTER = Topic("lienthong.dead-letter.v1", 1, "Events no consumer could accept")

TOPICS: tuple[Topic, ...] = (CATALOGUE, DOSSIER, ROUTING, CONSULTATION, NOTIFICATION, DEAD_LETTER)

_BY_FAMILY = {
    "procedure": CATALOGUE,
    "dossier": DOSSIER,
    "routing": ROUTING,
    "consultation": CONSULTATION,
    "notification": NOTIFICATION,
}


def topic_for(event_type: str) -> Topic:
    """The topic an event type is published on: its family (the part before the dot)."""
    family = event_type.split(".", 1)[0]
    try:
        return _BY_FAMILY[family]
    except KeyError:
        raise ValueError(f"no topic for event type {event_type!r}") from None
