-- What an opinion request prints as an official letter (Decree 30/2020/NĐ-CP, Art. 8(2)):
-- the documents the dossier was handed in with (from dossier.received / .supplemented,
-- so the letter lists what is really attached, by name), and the letter's number, given
-- by the system in order within the lead agency's year (Art. 15(1),(3)).
ALTER TABLE rounds ADD COLUMN documents jsonb;
ALTER TABLE requests ADD COLUMN number text;

CREATE TABLE letter_numbers (
    agency_id text NOT NULL,
    year      int  NOT NULL,
    last      int  NOT NULL,
    PRIMARY KEY (agency_id, year)
);
