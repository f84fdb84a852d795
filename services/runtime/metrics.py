"""Prometheus metrics shared by every service (exposed at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "lienthong_events_consumed_total",
    "Events handled by a consumer",
    ["consumer", "type", "result"],
)
EVENTS_PUBLISHED = Counter(
    "lienthong_events_published_total", "Events relayed from the outbox", ["topic"]
)
OUTBOX_PENDING = Gauge("lienthong_outbox_pending", "Outbox rows not yet relayed")
OUTBOX_FAILED = Gauge(
    "lienthong_outbox_failed", "Outbox rows set aside because the broker refused them"
)
OUTBOX_SET_ASIDE = Counter(
    "lienthong_outbox_set_aside_total", "Outbox rows set aside with their reason", ["topic"]
)
RELAY_LATENCY = Histogram(
    "lienthong_outbox_relay_seconds",
    "Time from outbox insert to broker acknowledgement",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HANDLER_SECONDS = Histogram(
    "lienthong_handler_seconds", "Time spent in an event handler", ["consumer", "type"]
)
DEAD_LETTERS = Counter(
    "lienthong_dead_letters_total", "Events sent to the dead-letter topic", ["consumer", "reason"]
)
TIMERS_FIRED = Counter("lienthong_timers_fired_total", "Durable timers fired", ["kind"])
TIMER_LATENESS = Histogram(
    "lienthong_timer_lateness_seconds",
    "Fired time minus due time",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
CONSUMER_LAG = Gauge(
    "lienthong_consumer_lag",
    "Log end offset minus the group's committed offset",
    ["group", "topic", "partition"],
)
TIMERS_FAILED = Counter(
    "lienthong_timers_failed_total",
    "Timers that failed every attempt and need an operator",
    ["kind"],
)
TIMERS_FAILED_NOW = Gauge("lienthong_timers_in_failed_state", "Timers in the failed state now")
PARKED = Gauge("lienthong_parked_events", "Events parked until what they wait for arrives")
DEAD_LETTERS_STORED = Gauge("lienthong_dead_letters_stored", "Dead letters kept in the database")
