-- Delivery outside database transactions: claim (status 'sending' with a lease), send,
-- mark ('sent'; or 'pending' again with a later due time; or 'failed' with the reason).
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed'));
ALTER TABLE notifications
    ADD COLUMN attempts   int NOT NULL DEFAULT 0,
    -- pending: when to try (again); sending: when the lease ends and another sender may
    -- take it over (the first one crashed or hung).
    ADD COLUMN due_at     timestamptz,
    ADD COLUMN claim      uuid,
    ADD COLUMN message_id text,
    ADD COLUMN last_error text,
    ADD COLUMN failed_at  timestamptz;
UPDATE notifications SET due_at = created_at WHERE status = 'pending';
CREATE INDEX notifications_due ON notifications (due_at) WHERE status IN ('pending', 'sending');

CREATE FUNCTION notifications_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_deliveries', '');
    RETURN NULL;
END $$;
CREATE TRIGGER notifications_notify AFTER INSERT ON notifications
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_notify();
