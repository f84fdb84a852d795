-- Runtime tables every service has in its own schema.

-- Transactional outbox: written in the same transaction as the state change.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,
    topic        text        NOT NULL,
    key          text        NOT NULL,
    event_type   text        NOT NULL,
    payload      text        NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Inbox: one row per event a consumer has applied, in the same transaction as its effects.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Durable timers: one row per pending reminder, escalation step, deadline or delivery.
CREATE TABLE timers (
    id         bigserial   PRIMARY KEY,
    kind       text        NOT NULL,
    ref        text        NOT NULL,
    owner      text        NOT NULL DEFAULT '',
    due_at     timestamptz NOT NULL,
    payload    jsonb       NOT NULL DEFAULT '{}',
    status     text        NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'fired', 'cancelled', 'failed')),
    attempts   int         NOT NULL DEFAULT 0,
    last_error text,
    fired_at   timestamptz,
    fired_by   text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, ref)
);
CREATE INDEX timers_pending_due ON timers (due_at) WHERE status = 'pending';
CREATE INDEX timers_owner ON timers (owner) WHERE status = 'pending';

CREATE FUNCTION timers_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_timers', '');
    RETURN NULL;
END $$;
CREATE TRIGGER timers_notify AFTER INSERT ON timers
    FOR EACH STATEMENT EXECUTE FUNCTION timers_notify();
