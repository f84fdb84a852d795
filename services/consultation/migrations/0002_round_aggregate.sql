-- The consultation round is the aggregate of a dossier: every path that changes one of
-- its requests locks this row first. It exists from the first event about the dossier,
-- so a withdrawal or stop that overtakes the routing is remembered (ended_at) and the
-- round never opens.
ALTER TABLE rounds ALTER COLUMN opened_at DROP NOT NULL;
ALTER TABLE rounds ALTER COLUMN expected SET DEFAULT 0;
ALTER TABLE rounds
    ADD COLUMN ended_at     timestamptz,
    ADD COLUMN ended_by     text,
    ADD COLUMN ended_reason text,
    ADD COLUMN version      int NOT NULL DEFAULT 0;

-- Requests written before rounds were the aggregate get theirs.
INSERT INTO rounds(dossier_code, expected, opened_at)
SELECT dossier_code, count(*), min(requested_at) FROM requests GROUP BY dossier_code
ON CONFLICT DO NOTHING;

-- The inbox pages by (due_at, id): a keyset cursor that new rows cannot shift.
DROP INDEX requests_agency_open;
CREATE INDEX requests_agency_open ON requests (agency_id, due_at, id)
    WHERE status IN ('open', 'lapsed');
