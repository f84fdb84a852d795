-- Each consumer writes dead letters to a topic of its own (only its principal may), so an
-- entry knows its writer as the broker saw it; "forged" says why its headers claim an origin
-- that writer could not have had (such an entry is shown, never replayed). Entries read
-- before this have no writer and cannot be replayed either.
ALTER TABLE dead_letter_entries ADD COLUMN writer text;
ALTER TABLE dead_letter_entries ADD COLUMN forged text;
CREATE INDEX dead_letter_entries_recent ON dead_letter_entries (dead_lettered_at DESC, id);
-- A replay its consumer refused again is found by the replay's header.
CREATE INDEX dead_letter_entries_replayed_from ON dead_letter_entries ((headers->>'replayed_from'));
