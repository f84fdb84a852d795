-- The operator console's read models, fed by every topic (services/console/handlers.py).
-- Everything here but the audit tables can be rebuilt from the log
-- (`python -m services.console rebuild`); `seq`, `recorded_at` and `updated_at` are this
-- consumer's own bookkeeping and legitimately differ in a rebuild.

-- Every accepted event, personal data masked when written.
CREATE TABLE events (
    seq            bigserial   PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    type           text        NOT NULL,
    schema_version int         NOT NULL,
    topic          text        NOT NULL,
    partition      int         NOT NULL,
    "offset"       bigint      NOT NULL,
    subject        text        NOT NULL,
    dossier_code   text,
    agencies       text[]      NOT NULL DEFAULT '{}',
    correlation_id uuid        NOT NULL,
    causation_id   uuid,
    occurred_at    timestamptz NOT NULL,
    producer       text        NOT NULL,
    data           jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_dossier ON events (dossier_code, occurred_at);
CREATE INDEX events_type ON events (type, seq);
CREATE INDEX events_agencies ON events USING gin (agencies);
CREATE INDEX events_recorded ON events (recorded_at);
CREATE INDEX events_request ON events ((data ->> 'request_id')) WHERE data ? 'request_id';

CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- A dossier as every service's events tell it (services/console/domain.py, fold_dossier).
CREATE TABLE dossiers (
    code                 text PRIMARY KEY,
    agency               text,
    receiving_agency     text,
    lead_agency          text,
    procedure_code       text,
    procedure_name       text,
    channel              int,
    online               boolean,
    state                text,
    portal_status        int,
    received_at          timestamptz,
    appointment_at       timestamptz,
    legal_appointment_at timestamptz,
    step_deadline_at     timestamptz,
    finished_at          timestamptz,
    returned_at          timestamptz,
    timeliness           text,
    apologies            int         NOT NULL DEFAULT 0,
    supplement_requests  int         NOT NULL DEFAULT 0,
    overdue_steps        int         NOT NULL DEFAULT 0,
    events               int         NOT NULL DEFAULT 0,
    last_event_at        timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dossiers_agency ON dossiers (agency);
CREATE INDEX dossiers_open_due ON dossiers (appointment_at) WHERE finished_at IS NULL;

-- Opinion requests between agencies (fold_request).
CREATE TABLE opinion_requests (
    request_id      uuid PRIMARY KEY,
    dossier_code    text        NOT NULL,
    lead_agency     text,
    agency_id       text,
    agency_name     text,
    template_id     text,
    subject         text,
    requested_at    timestamptz,
    due_at          timestamptz,
    status          text        NOT NULL,
    reminders       int         NOT NULL DEFAULT 0,
    escalations     int         NOT NULL DEFAULT 0,
    last_escalation jsonb,
    decision        text,
    closed_at       timestamptz,
    events          int         NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX opinion_requests_open ON opinion_requests (due_at) WHERE closed_at IS NULL;

-- Every record of the dead-letter topic, raw: the value may be anything.
CREATE TABLE dead_letter_entries (
    id               text PRIMARY KEY,      -- "<partition>-<offset>" on the dead-letter topic
    dlq_partition    int         NOT NULL,
    dlq_offset       bigint      NOT NULL,
    key              text,
    value            bytea       NOT NULL,
    headers          jsonb       NOT NULL DEFAULT '{}',
    reason           text        NOT NULL,
    detail           text        NOT NULL,
    errors           jsonb       NOT NULL DEFAULT '[]',
    consumer         text,
    origin_topic     text,
    origin_partition int,
    origin_offset    bigint,
    stored_id        bigint,
    stored_elsewhere boolean     NOT NULL DEFAULT false,
    event_id         uuid,
    event_type       text,
    dossier_code     text,
    agencies         text[]      NOT NULL DEFAULT '{}',
    dead_lettered_at timestamptz
);
CREATE INDEX dead_letter_entries_dossier ON dead_letter_entries (dossier_code);

-- What operators did with a dead letter (not from the log: never rebuilt).
CREATE TABLE dead_letter_actions (
    id              bigserial   PRIMARY KEY,
    entry_id        text        NOT NULL,
    action          text        NOT NULL CHECK (action IN ('replay', 'discard')),
    person          text        NOT NULL,
    role            text        NOT NULL,
    agency_id       text        NOT NULL,
    reason          text        NOT NULL,
    edited          boolean     NOT NULL DEFAULT false,
    outbox_event_id uuid,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letter_actions_entry ON dead_letter_actions (entry_id, id);

-- Every read of a dead letter's whole payload (it may hold personal data).
CREATE TABLE pii_reads (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL,
    person       text        NOT NULL,
    role         text        NOT NULL,
    agency_id    text        NOT NULL,
    dossier_code text        NOT NULL,
    endpoint     text        NOT NULL
);
