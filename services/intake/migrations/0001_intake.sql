-- Intake: the catalogue as published, dossiers at the desk, daily serials, timelines.
CREATE TABLE procedures (
    code           text  NOT NULL,
    version        int   NOT NULL,
    effective_from date  NOT NULL,
    definition     jsonb NOT NULL,
    PRIMARY KEY (code, version)
);

-- One row per receiving agency per day; the row lock serialises concurrent submissions
-- and a rolled-back submission gives its number back, so serials are gap-free.
CREATE TABLE serials (
    agency_id text NOT NULL,
    day       date NOT NULL,
    last      int  NOT NULL,
    PRIMARY KEY (agency_id, day)
);

CREATE TABLE dossiers (
    code                text PRIMARY KEY,
    procedure_code      text        NOT NULL,
    procedure_version   int         NOT NULL,
    procedure_name      text        NOT NULL,
    channel             smallint    NOT NULL CHECK (channel IN (1, 2, 3)),
    applicant           jsonb       NOT NULL,
    summary             text,
    documents           jsonb       NOT NULL,
    receiving_agency    text        NOT NULL,
    lead_agency         text        NOT NULL,
    status              smallint    NOT NULL CHECK (status BETWEEN 1 AND 10),
    outcome             text        NOT NULL,
    received_at         timestamptz NOT NULL,
    clock_starts_at     timestamptz,
    appointment_at      timestamptz,
    missing             jsonb       NOT NULL DEFAULT '[]',
    reasons             jsonb       NOT NULL DEFAULT '[]',
    supplement_requests int         NOT NULL DEFAULT 0,
    paused_at           timestamptz,
    paused_seconds      bigint      NOT NULL DEFAULT 0,
    idempotency_key     text UNIQUE,
    request_hash        text,
    response            jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dossiers_status ON dossiers (status);
CREATE INDEX dossiers_received ON dossiers (received_at);

-- Every event about a dossier, from every service, for its timeline.
CREATE TABLE timeline (
    event_id     uuid PRIMARY KEY,
    dossier_code text        NOT NULL,
    type         text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    producer     text        NOT NULL,
    data         jsonb       NOT NULL
);
CREATE INDEX timeline_dossier ON timeline (dossier_code, occurred_at);
