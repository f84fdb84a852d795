-- The commune where a dossier's land, building or business seat lies (a key of the agency
-- book), as the desk took it: routing plans a property-bound commune procedure there.
ALTER TABLE dossiers ADD COLUMN IF NOT EXISTS property_commune text;
