-- Destinations that need the person's identifier (an ESP's own list): their deliveries carry it,
-- opened from the vault (issue 22). Expand only: older releases ignore the column.
ALTER TABLE destinations ADD COLUMN needs_identifier BOOLEAN NOT NULL DEFAULT FALSE;
