-- Version 6: watchers are woken by NOTIFY. A write sends
-- pg_notify('waggle_<24 hex digits of md5(schema)>', its revision) in its
-- transaction (delivered when it commits) — only while some watcher holds a
-- lease: a transaction that notifies takes a database-wide lock while it
-- commits, which writers should pay only when somebody listens. A watcher
-- renews `watched_until` every 20 s (60 s ahead); a watcher that died
-- stops costing anything a minute later. The notification is only a
-- wake-up: the watcher reads the changes themselves from the history, so
-- one lost (a dropped connection, a restarted server) loses nothing, and it
-- also looks once a second. {schema} is the configured schema, quoted;
-- {schema_in_literal} the same ready to go between single quotes.

ALTER TABLE {schema}.history_state
    ADD COLUMN watched_until timestamptz NOT NULL DEFAULT '-infinity';

-- The channel this schema's writers notify.
CREATE FUNCTION {schema}.watch_channel() RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'waggle_' || left(md5('{schema_in_literal}'), 24)
$$;

-- save: insert or replace; returns the new revision.
CREATE OR REPLACE FUNCTION {schema}.save_environment(p_id text, p_record text, p_origin text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    recording boolean;
    watched boolean;
    next_revision bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('{schema_in_literal}' || E'\n' || 'writers', 0));
    PERFORM pg_advisory_xact_lock(hashtextextended('{schema_in_literal}:' || p_id, 0));
    SELECT h.recording, h.watched_until > clock_timestamp() INTO recording, watched
    FROM {schema}.history_state h;
    next_revision := nextval('{schema_in_literal}.revisions');
    INSERT INTO {schema}.environments (id, record, revision)
    VALUES (p_id, p_record, next_revision)
    ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, revision = EXCLUDED.revision;
    IF recording THEN
        INSERT INTO {schema}.environment_changes (revision, id, kind, at, origin, record)
        VALUES (next_revision, p_id, 'saved', clock_timestamp(), p_origin, p_record);
        IF watched THEN
            PERFORM pg_notify({schema}.watch_channel(), next_revision::text);
        END IF;
    END IF;
    RETURN next_revision;
END
$$;

CREATE OR REPLACE FUNCTION {schema}.save_environment_if(p_id text, p_record text,
    p_expected bigint, p_origin text, OUT new_revision bigint, OUT found_revision bigint)
LANGUAGE plpgsql AS $$
DECLARE
    recording boolean;
    watched boolean;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('{schema_in_literal}' || E'\n' || 'writers', 0));
    PERFORM pg_advisory_xact_lock(hashtextextended('{schema_in_literal}:' || p_id, 0));
    SELECT e.revision INTO found_revision FROM {schema}.environments e WHERE e.id = p_id;
    IF found_revision IS DISTINCT FROM p_expected THEN
        RETURN;
    END IF;
    SELECT h.recording, h.watched_until > clock_timestamp() INTO recording, watched
    FROM {schema}.history_state h;
    new_revision := nextval('{schema_in_literal}.revisions');
    IF found_revision IS NULL THEN
        INSERT INTO {schema}.environments (id, record, revision)
        VALUES (p_id, p_record, new_revision);
    ELSE
        UPDATE {schema}.environments SET record = p_record, revision = new_revision
        WHERE id = p_id;
    END IF;
    IF recording THEN
        INSERT INTO {schema}.environment_changes (revision, id, kind, at, origin, record)
        VALUES (new_revision, p_id, 'saved', clock_timestamp(), p_origin, p_record);
        IF watched THEN
            PERFORM pg_notify({schema}.watch_channel(), new_revision::text);
        END IF;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION {schema}.delete_environment(p_id text, p_origin text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    recording boolean;
    watched boolean;
    removed bigint;
    next_revision bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('{schema_in_literal}' || E'\n' || 'writers', 0));
    PERFORM pg_advisory_xact_lock(hashtextextended('{schema_in_literal}:' || p_id, 0));
    DELETE FROM {schema}.environments WHERE id = p_id RETURNING revision INTO removed;
    IF removed IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT h.recording, h.watched_until > clock_timestamp() INTO recording, watched
    FROM {schema}.history_state h;
    next_revision := nextval('{schema_in_literal}.revisions');
    IF recording THEN
        INSERT INTO {schema}.environment_changes (revision, id, kind, at, origin, record)
        VALUES (next_revision, p_id, 'deleted', clock_timestamp(), p_origin, NULL);
        IF watched THEN
            PERFORM pg_notify({schema}.watch_channel(), next_revision::text);
        END IF;
    END IF;
    RETURN next_revision;
END
$$;

CREATE OR REPLACE FUNCTION {schema}.delete_environment_if(p_id text, p_expected bigint,
    p_origin text, OUT deleted boolean, OUT found_revision bigint)
LANGUAGE plpgsql AS $$
DECLARE
    recording boolean;
    watched boolean;
    next_revision bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('{schema_in_literal}' || E'\n' || 'writers', 0));
    PERFORM pg_advisory_xact_lock(hashtextextended('{schema_in_literal}:' || p_id, 0));
    SELECT e.revision INTO found_revision FROM {schema}.environments e WHERE e.id = p_id;
    deleted := found_revision IS NOT DISTINCT FROM p_expected AND found_revision IS NOT NULL;
    IF NOT deleted THEN
        RETURN;
    END IF;
    DELETE FROM {schema}.environments WHERE id = p_id;
    SELECT h.recording, h.watched_until > clock_timestamp() INTO recording, watched
    FROM {schema}.history_state h;
    next_revision := nextval('{schema_in_literal}.revisions');
    IF recording THEN
        INSERT INTO {schema}.environment_changes (revision, id, kind, at, origin, record)
        VALUES (next_revision, p_id, 'deleted', clock_timestamp(), p_origin, NULL);
        IF watched THEN
            PERFORM pg_notify({schema}.watch_channel(), next_revision::text);
        END IF;
    END IF;
END
$$;
