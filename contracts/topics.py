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

# Who consumes events: each has a dead-letter topic of its own, which only it may write, so
# the topic a dead letter is on says who wrote it as the broker saw it (its ACLs), whatever
# the record's headers claim.
CONSUMERS = ("intake", "routing", "consultation", "notification", "console")
DEAD_LETTERS: dict[str, Topic] = {
    name: Topic(
        f"lienthong.dead-letter.{name}.v1",
        1,
        f"Events the {name} consumer could not accept, with why; written by {name} only",
    )
    for name in CONSUMERS
}
# Where the console puts back a dead letter an operator replays, one topic per consumer
# (the one that wrote it), read by that consumer only, which applies a replay only of a
# dead letter it holds itself. The console's own dead letters are settled by rebuilding
# its read models, not replayed.
REPLAYS: dict[str, Topic] = {
    name: Topic(
        f"lienthong.replay.{name}.v1",
        1,
        f"Dead letters of {name} replayed to it by an operator; written by the console only",
    )
    for name in CONSUMERS
    if name != "console"
}

TOPICS: tuple[Topic, ...] = (
    CATALOGUE,
    DOSSIER,
    ROUTING,
    CONSULTATION,
    NOTIFICATION,
    *DEAD_LETTERS.values(),
    *REPLAYS.values(),
)

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
