-- Version 1: one row per environment. `record` is the JSON record of
-- src/record.rs, byte for byte what a redb store holds, so an export is
-- the same whichever store wrote it. Ids sort bytewise (COLLATE "C"), as
-- find_all promises. {schema} is the configured schema, quoted.
CREATE TABLE {schema}.environments (
    id text COLLATE "C" PRIMARY KEY,
    record text NOT NULL
);
