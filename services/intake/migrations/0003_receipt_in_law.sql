-- Receipt as the law has it: the clock starts with a complete, valid dossier; a desk-stage
-- Form 02 neither starts it nor uses up the one request allowed during processing; a second
-- request during processing is recorded and flagged. Forms 01-03 print the officer, the
-- number of sets, the register entry and how the result is returned.
ALTER TABLE dossiers
    ADD COLUMN submitted_at              timestamptz,
    ADD COLUMN handling_unit             text,
    ADD COLUMN received_by               text,
    ADD COLUMN return_method             text NOT NULL DEFAULT 'at_desk',
    ADD COLUMN sets                      int  NOT NULL DEFAULT 1,
    ADD COLUMN register_book             text,
    ADD COLUMN register_number           int,
    ADD COLUMN desk_supplement_requests  int  NOT NULL DEFAULT 0,
    ADD COLUMN supplement_violations     int  NOT NULL DEFAULT 0;

-- Sổ theo dõi hồ sơ: one book per receiving agency per year, numbered in order of receipt.
CREATE TABLE registers (
    agency_id text NOT NULL,
    book      text NOT NULL,
    last      int  NOT NULL,
    PRIMARY KEY (agency_id, book)
);
