-- A dossier's route as one aggregate: its steps, hand-overs, pauses, decision, result and
-- apologies in ``doc`` (the domain's Route), locked as one row; the columns beside it are
-- what lists and work queues select on.
ALTER TABLE routes DROP CONSTRAINT IF EXISTS routes_state_check;
ALTER TABLE routes
    ADD COLUMN doc                jsonb,
    ADD COLUMN version            int NOT NULL DEFAULT 0,
    ADD COLUMN procedure_name     text,
    ADD COLUMN current_step       int,
    ADD COLUMN current_agency     text,
    ADD COLUMN current_department text,
    ADD COLUMN current_deadline   timestamptz,
    ADD COLUMN updated_at         timestamptz;

-- An agency's work queue: the dossiers at one of its steps, soonest deadline first.
CREATE INDEX routes_work ON routes (current_agency, current_deadline)
    WHERE current_agency IS NOT NULL;
