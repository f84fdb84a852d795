-- Routing's own copy of the catalogue, and where each dossier went.
CREATE TABLE procedures (
    code       text  NOT NULL,
    version    int   NOT NULL,
    definition jsonb NOT NULL,
    PRIMARY KEY (code, version)
);

CREATE TABLE routes (
    dossier_code      text PRIMARY KEY,
    procedure_code    text        NOT NULL,
    procedure_version int         NOT NULL,
    lead_agency       text        NOT NULL,
    consult           jsonb       NOT NULL,
    state             text        NOT NULL DEFAULT 'with_lead'
                      CHECK (state IN ('with_lead', 'consulting', 'deciding', 'closed')),
    appointment_at    timestamptz NOT NULL,
    routed_at         timestamptz NOT NULL,
    advanced_at       timestamptz
);
