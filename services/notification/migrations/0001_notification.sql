-- Notifications rendered and delivered, and the opinion requests we tell agencies about.
CREATE TABLE notifications (
    id           uuid PRIMARY KEY,
    dossier_code text        NOT NULL,
    kind         text        NOT NULL,
    form_version int         NOT NULL,
    channel      text        NOT NULL,
    recipient    text        NOT NULL,
    subject      text        NOT NULL,
    body_text    text        NOT NULL,
    body_html    text        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    caused_by    uuid        NOT NULL,
    created_at   timestamptz NOT NULL,
    sent_at      timestamptz,
    UNIQUE (caused_by, kind, recipient)
);
CREATE INDEX notifications_dossier ON notifications (dossier_code, created_at);

CREATE TABLE consult_requests (
    request_id   uuid PRIMARY KEY,
    dossier_code text        NOT NULL,
    agency_id    text        NOT NULL,
    agency_name  text        NOT NULL,
    due_at       timestamptz NOT NULL
);
