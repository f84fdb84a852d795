-- Wrong lookup codes (X-Lookup-Code) and codes for dossiers that do not exist: one row per
-- failed guess under each of two keys, 'dossier:<code>' and 'client:<address>', shared by
-- every replica. Past the limits within the window, guesses are answered 429 unchecked
-- (services/runtime/auth.py LookupDoor); rows older than the window go as new ones come.
CREATE TABLE lookup_failures (
    id  bigserial   PRIMARY KEY,
    key text        NOT NULL,
    at  timestamptz NOT NULL
);
CREATE INDEX lookup_failures_key ON lookup_failures (key, at);
CREATE INDEX lookup_failures_at ON lookup_failures (at);
