-- Change payloads as `json` (the text of `row_to_json`) instead of `jsonb`. Followers only ever
-- read a payload whole and decode it in the client; nothing queries inside it. Building a
-- `jsonb` value took a third of a bulk import's statement (PostgreSQL builds and sorts a binary
-- document per row); `row_to_json` writes the row's text once. Existing payloads are
-- converted in place (the table is rewritten once, under this migration's lock).
ALTER TABLE {schema}.changes ALTER COLUMN payload TYPE json USING payload::json;
