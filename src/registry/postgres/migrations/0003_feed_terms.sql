-- The change feed's history identity (terms). A write on a server whose WAL timeline differs
-- from the one recorded here (a promoted standby, a point-in-time restore) opens a new term:
-- `base` is the last version the new history shares with the old one, `term_start` the new
-- term's first version (the server's clock in ms times 2^20, above the head), so versions
-- the lost history issued are never issued again and followers holding one are told so.
ALTER TABLE {schema}.feed
    ADD COLUMN term       integer NOT NULL DEFAULT 0 CHECK (term >= 0),
    ADD COLUMN base       bigint  NOT NULL DEFAULT 0 CHECK (base >= 0),
    ADD COLUMN term_start bigint  NOT NULL DEFAULT 1 CHECK (term_start >= 1),
    -- The WAL timeline the feed last wrote on; NULL until the first write records it (or
    -- when the engine has no timelines); -1 asks the next write to open a term.
    ADD COLUMN timeline   bigint;

-- One row per term after the first (term 0 starts at version 1 with no base).
CREATE TABLE {schema}.feed_terms (
    term       integer PRIMARY KEY CHECK (term > 0),
    base       bigint  NOT NULL CHECK (base >= 0),
    term_start bigint  NOT NULL UNIQUE CHECK (term_start > base),
    timeline   bigint,
    started_at bigint  NOT NULL
);
