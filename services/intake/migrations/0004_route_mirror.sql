-- The dossier as routing moves it: its status in words beside the portal's code, the
-- agencies with a part in it (they may read it), the moments Form 06 prints, the
-- apologies, and every status it went through.
ALTER TABLE dossiers
    ADD COLUMN state          text,
    ADD COLUMN parties        text[] NOT NULL DEFAULT '{}',
    ADD COLUMN routed_at      timestamptz,
    ADD COLUMN ready_at       timestamptz,
    ADD COLUMN returned_at    timestamptz,
    ADD COLUMN apologies      int NOT NULL DEFAULT 0,
    ADD COLUMN lead_agency_name text;

CREATE TABLE status_history (
    id           bigserial PRIMARY KEY,
    dossier_code text        NOT NULL,
    at           timestamptz NOT NULL,
    state        text        NOT NULL,
    status       smallint    NOT NULL,
    event_type   text        NOT NULL,
    event_id     uuid        UNIQUE
);
CREATE INDEX status_history_dossier ON status_history (dossier_code, id);
CREATE INDEX dossiers_register ON dossiers (receiving_agency, received_at);
