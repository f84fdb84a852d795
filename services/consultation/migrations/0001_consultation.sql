-- Opinion requests, rounds, signers, used nonces and the hash-chained audit trail.
CREATE TABLE requests (
    id               uuid PRIMARY KEY,
    dossier_code     text        NOT NULL,
    lead_agency      text        NOT NULL,
    lead_agency_name text        NOT NULL,
    agency_id        text        NOT NULL,
    agency_name      text        NOT NULL,
    template_id      text        NOT NULL,
    template_version int         NOT NULL,
    subject          text        NOT NULL,
    body_text        text        NOT NULL,
    body_html        text        NOT NULL,
    status           text        NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'lapsed', 'replied', 'deemed_consent', 'cancelled')),
    requested_at     timestamptz NOT NULL,
    due_at           timestamptz NOT NULL,
    reminders_sent   int         NOT NULL DEFAULT 0,
    escalation_step  int         NOT NULL DEFAULT 0,
    extensions       int         NOT NULL DEFAULT 0,
    decision         text,
    conditions       text,
    reasons          text,
    signer           text,
    signature        text,
    legal_basis      text,
    outcome_at       timestamptz,
    audit_seq        int         NOT NULL DEFAULT 0,
    audit_head       text        NOT NULL DEFAULT '0000000000000000000000000000000000000000000000000000000000000000',
    UNIQUE (dossier_code, agency_id)
);
CREATE INDEX requests_agency_open ON requests (agency_id, due_at) WHERE status IN ('open', 'lapsed');
CREATE INDEX requests_lead ON requests (lead_agency, requested_at);

CREATE TABLE rounds (
    dossier_code text PRIMARY KEY,
    expected     int         NOT NULL,
    opened_at    timestamptz NOT NULL,
    completed_at timestamptz
);

CREATE TABLE signers (
    key_id     text PRIMARY KEY,
    agency_id  text        NOT NULL,
    person     text        NOT NULL,
    role       text        NOT NULL,
    public_key bytea       NOT NULL,
    active     boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE nonces (
    key_id  text        NOT NULL,
    nonce   text        NOT NULL,
    used_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, nonce)
);

-- Append-only: every action on a request, chained per request by sha256.
CREATE TABLE audit (
    id         bigserial PRIMARY KEY,
    request_id uuid        NOT NULL REFERENCES requests (id),
    seq        int         NOT NULL,
    action     text        NOT NULL,
    actor      text        NOT NULL,
    at         timestamptz NOT NULL,
    details    jsonb       NOT NULL DEFAULT '{}',
    prev_hash  text        NOT NULL,
    hash       text        NOT NULL,
    UNIQUE (request_id, seq)
);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
