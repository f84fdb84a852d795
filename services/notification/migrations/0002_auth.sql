-- Who may read a dossier's notifications: its agencies, and the applicant with the lookup
-- code (hash only); and every read of personal data by an officer or operator.
CREATE TABLE dossier_access (
    dossier_code     text PRIMARY KEY,
    receiving_agency text NOT NULL,
    lead_agency      text,
    lookup_hash      text
);

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
