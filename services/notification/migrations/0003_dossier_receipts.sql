-- What notification keeps of a dossier's receipt (dossier.received) for the notices that
-- come later on other topics (routing's Form 04 and result notice): whom to address and
-- where to send it, by which channel the dossier came in, the procedure, when it was
-- received, and the receiving office for form headers. Only what a notice needs: the
-- applicant's name, email and postal address; no ID number, phone or birth date.
CREATE TABLE dossier_receipts (
    dossier_code   text        PRIMARY KEY,
    applicant      jsonb       NOT NULL CHECK (jsonb_typeof(applicant) = 'object' AND applicant ? 'name'),
    channel        smallint    NOT NULL CHECK (channel IN (1, 2, 3)),
    procedure_name text        NOT NULL,
    received_at    timestamptz NOT NULL,
    office         jsonb
);
