-- Version 4: an id's revisions increase in the order its writes commit,
-- however many servers (pools) write it at once.
--
-- Why. Version 3 wrote with single statements that took the next revision
-- before waiting for the row: `INSERT … VALUES ($1, $2, nextval(…)) ON
-- CONFLICT (id) DO UPDATE SET revision = EXCLUDED.revision` evaluates
-- nextval() when it builds the row to insert, then waits for the lock of the
-- row another transaction is writing. Two upserts of one id: A takes 10 and
-- waits, B takes 11 and waits, the holder commits, B gets the row first and
-- commits 11, then A commits 10. A reader saw 11, then 10: the id's revision
-- went down (seen with two pools, 49 times in a minute). An insert has the
-- same gap with no row to wait for: it takes 10, a delete and a re-create
-- commit 11 meanwhile, then it inserts 10.
--
-- How. Every write of an id goes through one of the functions below, which
-- first take a transaction-scoped advisory lock on the id (a 64-bit hash of
-- the schema and the id; two ids that share a hash only wait for each
-- other) and only then read the row and take the next revision. The lock is
-- held until the write commits, so the previous writer of the id has
-- committed before the next one takes its number: the numbers are taken in
-- commit order, and a sequence only grows. Each statement of a VOLATILE
-- function reads with a fresh snapshot, so the read after the lock sees the
-- previous writer's commit. Writers of different ids never wait for each
-- other; nothing serialises them all.
--
-- A conditional write compares and writes under the same lock, so a
-- conflict reports exactly the revision that refused it, and a refused
-- write takes no number.
--
-- {schema} is the configured schema, quoted; {schema_in_literal} the same
-- ready to go between single quotes.

CREATE FUNCTION {schema}.lock_environment(p_id text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('{schema_in_literal}:' || p_id, 0))
$$;

-- save: insert or replace; returns the new revision.
CREATE FUNCTION {schema}.save_environment(p_id text, p_record text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    next_revision bigint;
BEGIN
    PERFORM {schema}.lock_environment(p_id);
    next_revision := nextval('{schema_in_literal}.revisions');
    INSERT INTO {schema}.environments (id, record, revision)
    VALUES (p_id, p_record, next_revision)
    ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, revision = EXCLUDED.revision;
    RETURN next_revision;
END
$$;

-- save_if: writes only if the stored revision is p_expected (NULL: only if
-- nothing is stored). Returns the new revision (NULL if refused) and the
-- revision found (NULL if none).
CREATE FUNCTION {schema}.save_environment_if(p_id text, p_record text, p_expected bigint,
    OUT new_revision bigint, OUT found_revision bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {schema}.lock_environment(p_id);
    SELECT e.revision INTO found_revision FROM {schema}.environments e WHERE e.id = p_id;
    IF found_revision IS DISTINCT FROM p_expected THEN
        RETURN;
    END IF;
    new_revision := nextval('{schema_in_literal}.revisions');
    IF found_revision IS NULL THEN
        INSERT INTO {schema}.environments (id, record, revision)
        VALUES (p_id, p_record, new_revision);
    ELSE
        UPDATE {schema}.environments SET record = p_record, revision = new_revision
        WHERE id = p_id;
    END IF;
END
$$;

-- delete: returns the revision removed (NULL: nothing was stored).
CREATE FUNCTION {schema}.delete_environment(p_id text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    removed bigint;
BEGIN
    PERFORM {schema}.lock_environment(p_id);
    DELETE FROM {schema}.environments WHERE id = p_id RETURNING revision INTO removed;
    RETURN removed;
END
$$;

-- delete_if: deletes only if the stored revision is p_expected. Returns
-- whether it deleted and the revision found (NULL if none).
CREATE FUNCTION {schema}.delete_environment_if(p_id text, p_expected bigint,
    OUT deleted boolean, OUT found_revision bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {schema}.lock_environment(p_id);
    SELECT e.revision INTO found_revision FROM {schema}.environments e WHERE e.id = p_id;
    deleted := found_revision IS NOT DISTINCT FROM p_expected AND found_revision IS NOT NULL;
    IF deleted THEN
        DELETE FROM {schema}.environments WHERE id = p_id;
    END IF;
END
$$;
