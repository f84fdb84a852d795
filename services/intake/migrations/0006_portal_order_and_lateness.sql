-- Issue 23 (G, 4, E): what the portal record needs to call a late dossier late, and
-- what the dossier view needs to say early / on time / late.
--
-- legal_appointment_at: the appointment by law (at receipt, moved only by time spent
--   waiting for the applicant); the portal's NgayHenTra. An apology does not move it:
--   Decision 766/QĐ-TTg (2022) counts a dossier on time when it ended no later than the
--   appointment, so the apology's new date travels in apology_history instead.
-- apology_history: each Form 04 (number, previous and new appointment, when, by whom).
-- timeliness / late_seconds: routing's verdict on the dossier once the result is ready.
ALTER TABLE dossiers
    ADD COLUMN legal_appointment_at timestamptz,
    ADD COLUMN apology_history      jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN timeliness           text;

-- Rows from before: without an apology the appointment is still the legal one.
UPDATE dossiers SET legal_appointment_at = appointment_at WHERE apologies = 0;

-- Status 1 (mới đăng ký): a dossier registered but not yet received (an incomplete one
-- waiting at the desk for what is missing, or one from the portal awaiting receipt).
-- Old rows of an incomplete desk dossier carried 5, which is the request to supplement
-- during processing: they were never received.
UPDATE dossiers SET status = 1, state = 'registered'
    WHERE outcome = 'supplement_requested' AND clock_starts_at IS NULL AND status = 5;
