-- Who may do what: the applicant's lookup code (hash only), the per-principal rate limit,
-- and audits of back-dated receipts and of reads of personal data.
ALTER TABLE dossiers ADD COLUMN lookup_hash text;

CREATE TABLE rate_limits (
    principal    text        NOT NULL,
    window_start timestamptz NOT NULL,
    n            int         NOT NULL,
    PRIMARY KEY (principal, window_start)
);

-- Every receipt (or supplement) dated earlier than the moment it was recorded.
CREATE TABLE backdated (
    id           bigserial PRIMARY KEY,
    dossier_code text        NOT NULL,
    field        text        NOT NULL,
    claimed_at   timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL,
    actor        text        NOT NULL,
    reason       text        NOT NULL
);
CREATE INDEX backdated_dossier ON backdated (dossier_code);

-- Every read of personal data by an officer or operator.
CREATE TABLE pii_reads (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL,
    person       text        NOT NULL,
    role         text        NOT NULL,
    agency_id    text        NOT NULL,
    dossier_code text        NOT NULL,
    endpoint     text        NOT NULL
);
CREATE INDEX pii_reads_dossier ON pii_reads (dossier_code, at);
