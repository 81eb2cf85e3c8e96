-- Version 5: the history. Every acknowledged write is one row of
-- environment_changes, inserted by the write function in the write's own
-- transaction: it is there if and only if the write committed. {schema} is
-- the configured schema, quoted; {schema_in_literal} the same ready to go
-- between single quotes.
--
-- Following the history in order. Writers take revisions from one sequence
-- and commit in any order, so a reader can see revision 12 committed while
-- 11 is still in flight: a follower that moved its cursor to 12 would never
-- see 11. So every writer holds a *gate* — a transaction-scoped advisory
-- lock, shared, so writers never wait for each other on it — from before it
-- takes its revision until it commits. A reader returns changes only while
-- their revisions are contiguous from its cursor: a number every one of
-- whose predecessors is visible cannot be overtaken. At a gap right after
-- the cursor it waits a little for the write in flight to commit, and if
-- the gap stays (a rolled-back write, a cancelled statement), it asks for
-- the gate exclusively — granted once every writer that held it has
-- finished — and then treats every gap below the highest revision it had
-- seen as final: any number below one it saw was taken before that write
-- committed, hence before the request, by a writer the request waited for.
-- (This needs the sequence uncached, as CREATE SEQUENCE makes it: with a
-- per-session cache, numbers are not handed out in time order.)
--
-- Recording can be switched off (WAGGLE_STORE_HISTORY=off): the write
-- functions then insert no change. Switching happens under the gate held
-- exclusively, so no write is in flight across it; switching on marks
-- every revision issued until then as pruned, so a follower is told, never
-- given a silent gap.

-- No write may land between the backfill below and the new functions:
-- writers wait for this transaction.
LOCK TABLE {schema}.environments IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE {schema}.environment_changes (
    revision bigint PRIMARY KEY,
    id text COLLATE "C" NOT NULL,
    kind text NOT NULL CHECK (kind IN ('saved', 'deleted')),
    at timestamptz NOT NULL,
    origin text NOT NULL,
    record text,
    CHECK ((kind = 'saved') = (record IS NOT NULL))
);
CREATE INDEX environment_changes_by_id ON {schema}.environment_changes (id, revision);

CREATE TABLE {schema}.history_state (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    recording boolean NOT NULL,
    -- The highest revision whose change may be missing (pruned, or written
    -- while recording was off).
    pruned_through bigint NOT NULL
);
INSERT INTO {schema}.history_state (recording, pruned_through) VALUES (true, 0);

-- What is stored already: one change each, at its revision.
INSERT INTO {schema}.environment_changes (revision, id, kind, at, origin, record)
SELECT revision, id, 'saved', clock_timestamp(), 'schema-upgrade', record
FROM {schema}.environments;

DROP FUNCTION {schema}.save_environment(text, text);
DROP FUNCTION {schema}.save_environment_if(text, text, bigint);
DROP FUNCTION {schema}.delete_environment(text);
DROP FUNCTION {schema}.delete_environment_if(text, bigint);
DROP FUNCTION {schema}.lock_environment(text);

-- The write functions are flat: each takes the gate (shared), then the id
-- (as migration 4 did), each with one plain statement, and records its
-- change with a plain INSERT. A call of one PL/pgSQL function from another
-- costs more than the statements themselves, and the server's CPU is what
-- many writers share. The gate's key is the schema and a name no id can
-- have (ids hold no newline); the gate comes first, always, so that a
-- writer waiting for an id never holds up a fence that waits for it.

-- Waits until every writer that held the gate when it was called has
-- finished (see above); holds nothing afterwards.
CREATE FUNCTION {schema}.history_fence() RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('{schema_in_literal}' || E'\n' || 'writers', 0))
$$;

-- Switches recording on or off, with no write in flight across it.
CREATE FUNCTION {schema}.set_history_recording(p_on boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT recording FROM {schema}.history_state) = p_on THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('{schema_in_literal}' || E'\n' || 'writers', 0));
    UPDATE {schema}.history_state SET
        recording = p_on,
        pruned_through = CASE WHEN p_on
            THEN greatest(pruned_through, (SELECT last_value FROM {schema}.revisions))
            ELSE pruned_through END;
END
$$;

-- save: insert or replace; returns the new revision.
CREATE FUNCTION {schema}.save_environment(p_id text, p_record text, p_origin text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    recording boolean;
    next_revision bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('{schema_in_literal}' || E'\n' || 'writers', 0));
    PERFORM pg_advisory_xact_lock(hashtextextended('{schema_in_literal}:' || p_id, 0));
    SELECT h.recording INTO recording FROM {schema}.history_state h;
    next_revision := nextval('{schema_in_literal}.revisions');
    INSERT INTO {schema}.environments (id, record, revision)
    VALUES (p_id, p_record, next_revision)
    ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, revision = EXCLUDED.revision;
    IF recording THEN
        INSERT INTO {schema}.environment_changes (revision, id, kind, at, origin, record)
        VALUES (next_revision, p_id, 'saved', clock_timestamp(), p_origin, p_record);
    END IF;
    RETURN next_revision;
END
$$;

-- save_if: writes only if the stored revision is p_expected (NULL: only if
-- nothing is stored). Returns the new revision (NULL if refused) and the
-- revision found (NULL if none).
CREATE FUNCTION {schema}.save_environment_if(p_id text, p_record text, p_expected bigint,
    p_origin text, OUT new_revision bigint, OUT found_revision bigint)
LANGUAGE plpgsql AS $$
DECLARE
    recording boolean;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('{schema_in_literal}' || E'\n' || 'writers', 0));
    PERFORM pg_advisory_xact_lock(hashtextextended('{schema_in_literal}:' || p_id, 0));
    SELECT e.revision INTO found_revision FROM {schema}.environments e WHERE e.id = p_id;
    IF found_revision IS DISTINCT FROM p_expected THEN
        RETURN;
    END IF;
    SELECT h.recording INTO recording FROM {schema}.history_state h;
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
    END IF;
END
$$;

-- delete: returns the revision the delete took (NULL: nothing was stored).
CREATE FUNCTION {schema}.delete_environment(p_id text, p_origin text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    recording boolean;
    removed bigint;
    next_revision bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('{schema_in_literal}' || E'\n' || 'writers', 0));
    PERFORM pg_advisory_xact_lock(hashtextextended('{schema_in_literal}:' || p_id, 0));
    DELETE FROM {schema}.environments WHERE id = p_id RETURNING revision INTO removed;
    IF removed IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT h.recording INTO recording FROM {schema}.history_state h;
    next_revision := nextval('{schema_in_literal}.revisions');
    IF recording THEN
        INSERT INTO {schema}.environment_changes (revision, id, kind, at, origin, record)
        VALUES (next_revision, p_id, 'deleted', clock_timestamp(), p_origin, NULL);
    END IF;
    RETURN next_revision;
END
$$;

-- delete_if: deletes only if the stored revision is p_expected. Returns
-- whether it deleted and the revision found (NULL if none).
CREATE FUNCTION {schema}.delete_environment_if(p_id text, p_expected bigint, p_origin text,
    OUT deleted boolean, OUT found_revision bigint)
LANGUAGE plpgsql AS $$
DECLARE
    recording boolean;
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
    SELECT h.recording INTO recording FROM {schema}.history_state h;
    next_revision := nextval('{schema_in_literal}.revisions');
    IF recording THEN
        INSERT INTO {schema}.environment_changes (revision, id, kind, at, origin, record)
        VALUES (next_revision, p_id, 'deleted', clock_timestamp(), p_origin, NULL);
    END IF;
END
$$;
