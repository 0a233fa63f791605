-- Projection rebuilds (build aside, then swap): the last rebuild of each projection,
-- with its progress, for `till projections status` and the back office on any replica.
CREATE TABLE projection_rebuilds (
    projection      text PRIMARY KEY,
    -- RUNNING, DONE or FAILED
    state           text NOT NULL,
    -- COPYING, INDEXING, SWAPPING or FINISHED
    phase           text NOT NULL,
    events_total    bigint NOT NULL DEFAULT 0,
    events_applied  bigint NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL,
    -- moved on every batch: a RUNNING row that stops moving was abandoned
    updated_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    error           text
);

-- Bumped when a rebuilt projection's tables replace the live ones: every process then
-- drops what it cached from the old tables.
ALTER TABLE projection_checkpoints ADD COLUMN generation bigint NOT NULL DEFAULT 0;
