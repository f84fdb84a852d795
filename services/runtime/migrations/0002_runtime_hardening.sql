-- No single input can stop the pipeline: rows and events that cannot go on are set aside
-- with their reason, for operators to inspect and retry, while the rest carries on.

-- An outbox row the broker refuses for what it is (too large, invalid) is set aside.
ALTER TABLE outbox ADD COLUMN failed_at timestamptz;
ALTER TABLE outbox ADD COLUMN failure text;
DROP INDEX outbox_unpublished;
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_failed ON outbox (id) WHERE failed_at IS NOT NULL AND published_at IS NULL;

-- Every dead letter is kept here, whole, whether or not the dead-letter topic could take it.
CREATE TABLE dead_letters (
    id          bigserial   PRIMARY KEY,
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   int         NOT NULL,
    "offset"    bigint      NOT NULL,
    key         bytea,
    value       bytea       NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '{}',
    reason      text        NOT NULL,
    detail      text        NOT NULL,
    published   boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz,
    UNIQUE (consumer, topic, partition, "offset")
);

-- Events that must wait for something (RetryLater), parked per subject (dossier) in
-- arrival order: later events of the same subject queue behind them, other subjects go on.
CREATE TABLE parked (
    id              bigserial   PRIMARY KEY,
    consumer        text        NOT NULL,
    subject         text        NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    topic           text        NOT NULL,
    partition       int         NOT NULL,
    "offset"        bigint      NOT NULL,
    key             bytea,
    value           bytea       NOT NULL,
    headers         jsonb       NOT NULL DEFAULT '{}',
    reason          text        NOT NULL,
    attempts        int         NOT NULL DEFAULT 0,
    parked_at       timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer, topic, partition, "offset")
);
CREATE INDEX parked_subject ON parked (consumer, subject, id);
CREATE INDEX parked_due ON parked (consumer, next_attempt_at);
