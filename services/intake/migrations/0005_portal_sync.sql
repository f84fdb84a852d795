-- Outbound sync to the national portal: what the portal's record needs that intake did not
-- keep, and one queue of updates per dossier, sent in order, outside transactions.
ALTER TABLE dossiers
    ADD COLUMN decision            text,
    ADD COLUMN result_documents    jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN refusal_reasons     jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN supplement_history  jsonb NOT NULL DEFAULT '[]';

-- One row per update for the portal: a whole record (DongBoHoSoMC) as it stood after the
-- event that caused it, or one step's progress (CapNhatTienDoHoSoMC). Per dossier, only
-- the oldest row not yet sent may go (order kept); a row the portal refuses for what it
-- holds is set aside ('failed', with the portal's answer) and does not block the next.
CREATE TABLE portal_sync (
    id           bigserial   PRIMARY KEY,
    dossier_code text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('record', 'progress')),
    payload      jsonb       NOT NULL,
    cause        uuid        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts     int         NOT NULL DEFAULT 0,
    -- pending: when to try (again); sending: when the claim's lease ends
    due_at       timestamptz NOT NULL,
    claim        uuid,
    last_error   text,
    answer       jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    UNIQUE (cause, kind)
);
CREATE INDEX portal_sync_due ON portal_sync (due_at) WHERE status IN ('pending', 'sending');
CREATE INDEX portal_sync_open ON portal_sync (dossier_code, id) WHERE status IN ('pending', 'sending');
CREATE INDEX portal_sync_failed ON portal_sync (id) WHERE status = 'failed';

-- What the portal holds of each dossier, as far as we know.
CREATE TABLE portal_dossiers (
    dossier_code  text PRIMARY KEY,
    known         boolean     NOT NULL DEFAULT false,
    last_status   smallint,
    synced_at     timestamptz,
    checked_at    timestamptz,
    last_error    text,
    resent        int         NOT NULL DEFAULT 0
);
CREATE INDEX portal_dossiers_checked ON portal_dossiers (checked_at NULLS FIRST);

CREATE FUNCTION portal_sync_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_portal_sync', '');
    RETURN NULL;
END $$;
CREATE TRIGGER portal_sync_notify AFTER INSERT ON portal_sync
    FOR EACH STATEMENT EXECUTE FUNCTION portal_sync_notify();
