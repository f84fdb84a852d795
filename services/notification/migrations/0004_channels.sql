-- Notices people receive: SMS through a gateway and messages on the national portal beside
-- email; the status a receiver confirmed ('delivered'); operators' resends; the delivery
-- receipts of the SMS gateway; how many messages each recipient got in the last hour; and
-- what came from outside that we could not accept.
--
-- Statuses: 'pending' (shown as queued), 'sending' (claimed, with a lease), 'sent' (handed
-- to the server or gateway), 'delivered' (the receiver confirmed: an SMS receipt, the
-- portal holding the message), 'failed' (with the reason).
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'delivered', 'failed'));
ALTER TABLE notifications ADD CONSTRAINT notifications_channel_check
    CHECK (channel IN ('email', 'sms', 'portal', 'desk', 'post', 'agency'));
ALTER TABLE notifications
    ADD COLUMN delivered_at timestamptz,
    ADD COLUMN resends      int NOT NULL DEFAULT 0,
    -- the whole answer of the receiver when it said more than "accepted" (the portal's
    -- answer; the gateway's refusal), for inspection
    ADD COLUMN answer       jsonb;
-- One notification per event, kind, channel and recipient: a portal account may be written
-- like a phone number.
ALTER TABLE notifications DROP CONSTRAINT notifications_caused_by_kind_recipient_key;
ALTER TABLE notifications ADD CONSTRAINT notifications_caused_by_kind_channel_recipient_key
    UNIQUE (caused_by, kind, channel, recipient);
-- Each channel's sender claims only its own rows.
DROP INDEX notifications_due;
CREATE INDEX notifications_due ON notifications (channel, due_at)
    WHERE status IN ('pending', 'sending');

-- Who put a notification back in line, when and why (POST /v1/notifications/{id}/resend).
CREATE TABLE notification_resends (
    id              bigserial PRIMARY KEY,
    notification_id uuid        NOT NULL REFERENCES notifications (id),
    at              timestamptz NOT NULL,
    person          text        NOT NULL,
    role            text        NOT NULL,
    agency_id       text        NOT NULL,
    reason          text        NOT NULL,
    previous_status text        NOT NULL,
    previous_error  text
);
CREATE INDEX notification_resends_notification ON notification_resends (notification_id, at);

-- Delivery receipts of the SMS gateway, each kept once. 'applied' moved the notification,
-- 'waiting' arrived before the send was marked (applied when it is), 'ignored' came after
-- the notification was settled, 'superseded' was waiting when an operator resent it.
CREATE TABLE sms_receipts (
    id              bigserial PRIMARY KEY,
    notification_id uuid        NOT NULL REFERENCES notifications (id),
    gateway_id      text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('delivered', 'failed')),
    reason          text,
    at              timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    outcome         text        NOT NULL,
    UNIQUE (notification_id, gateway_id, status, at)
);
CREATE INDEX sms_receipts_waiting ON sms_receipts (notification_id) WHERE outcome = 'waiting';

-- Messages handed to a gateway per recipient, for the per-recipient hourly limit; a row is
-- taken before the send and given back when nothing was sent.
CREATE TABLE recipient_sends (
    id              bigserial PRIMARY KEY,
    channel         text        NOT NULL,
    recipient       text        NOT NULL,
    notification_id uuid        NOT NULL,
    claim           uuid        NOT NULL,
    at              timestamptz NOT NULL
);
CREATE INDEX recipient_sends_recent ON recipient_sends (channel, recipient, at);

-- What came from outside and was not accepted (a receipt with a bad signature or body, an
-- answer of the portal or the gateway we do not understand), stored whole: the headers,
-- the body (its first 256 KiB when larger, with the SHA-256 and size of the whole), why,
-- and when. Shown to operators at GET /v1/ops/inbound-rejects.
CREATE TABLE inbound_rejects (
    id        bigserial PRIMARY KEY,
    source    text        NOT NULL,
    reason    text        NOT NULL,
    field     text,
    status    int,
    headers   jsonb       NOT NULL,
    body      bytea       NOT NULL,
    size      int         NOT NULL,
    sha256    text        NOT NULL,
    truncated boolean     NOT NULL,
    at        timestamptz NOT NULL
);
CREATE INDEX inbound_rejects_at ON inbound_rejects (at DESC);
