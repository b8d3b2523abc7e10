-- Shared health: stamps (or one central prober) publish reports with an expiry; every router
-- reads the same view. `revision` orders publications (a NOTIFY on `stamps_<schema>_health`
-- carries it); readers ignore expired rows. Not part of the change feed.
CREATE SEQUENCE {schema}.health_revision;
CREATE TABLE {schema}.health_reports (
    stamp_id    bigint  NOT NULL CHECK (stamp_id >= 0 AND stamp_id <= 4294967295),
    reporter    text    NOT NULL CHECK (length(reporter) BETWEEN 1 AND 128),
    status      text    NOT NULL CHECK (status IN ('healthy', 'degraded', 'unhealthy')),
    reason      text             CHECK (reason IS NULL OR length(reason) <= 1024),
    reported_at bigint  NOT NULL,
    expires_at  bigint  NOT NULL CHECK (expires_at > reported_at),
    revision    bigint  NOT NULL,
    PRIMARY KEY (stamp_id, reporter)
);
