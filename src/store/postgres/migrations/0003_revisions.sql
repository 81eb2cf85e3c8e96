-- Version 3: revisions, for conditional writes (Revisioned). Every write of
-- a value takes the next number of one sequence for the schema, so an id's
-- revisions only grow, and none is issued twice: not after a delete and a
-- re-create, not after a crash (a sequence never hands out a number again;
-- a committed write's number is in the WAL its commit flushed). The rows
-- already stored get numbers of their own as the column is added.
CREATE SEQUENCE {schema}.revisions AS bigint;

ALTER TABLE {schema}.environments
    ADD COLUMN revision bigint NOT NULL DEFAULT nextval('{schema_in_literal}.revisions');
