ALTER TABLE projection_checkpoints DROP COLUMN generation;
DROP TABLE projection_rebuilds;
