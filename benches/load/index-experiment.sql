-- Index maintenance during a rebuild's copy against building the indexes afterwards
-- (CONCURRENTLY), on the rows of a seeded order view (benches/README.md, load run 18).
-- psql -X -h 127.0.0.1 -p PGPORT -U postgres -d till -f benches/load/index-experiment.sql
\timing on
DROP SCHEMA IF EXISTS exp CASCADE;
CREATE SCHEMA exp;
-- The rows of the order view as the replay writes them: inserted when placed, then
-- updated once (paid). Indexes as the rebuild builds them now (after the copy,
-- concurrently) ...
CREATE TABLE exp.after (LIKE public.rm_order_view INCLUDING ALL EXCLUDING INDEXES);
ALTER TABLE exp.after ADD PRIMARY KEY (id);
INSERT INTO exp.after SELECT (r).* FROM (SELECT r FROM public.rm_order_view r ORDER BY placed_at) s;
UPDATE exp.after SET status = 'PENDING_PAYMENT';
UPDATE exp.after a SET status = r.status FROM public.rm_order_view r WHERE r.id = a.id;
CREATE INDEX CONCURRENTLY after_customer ON exp.after (customer_id, placed_at DESC, id DESC);
CREATE INDEX CONCURRENTLY after_placed ON exp.after (placed_at DESC, id DESC);
CREATE INDEX CONCURRENTLY after_status ON exp.after (status, placed_at DESC, id DESC);
-- ... or created on the empty table and kept up to date while the rows go in.
CREATE TABLE exp.before (LIKE public.rm_order_view INCLUDING ALL EXCLUDING INDEXES);
ALTER TABLE exp.before ADD PRIMARY KEY (id);
CREATE INDEX before_customer ON exp.before (customer_id, placed_at DESC, id DESC);
CREATE INDEX before_placed ON exp.before (placed_at DESC, id DESC);
CREATE INDEX before_status ON exp.before (status, placed_at DESC, id DESC);
INSERT INTO exp.before SELECT (r).* FROM (SELECT r FROM public.rm_order_view r ORDER BY placed_at) s;
UPDATE exp.before SET status = 'PENDING_PAYMENT';
UPDATE exp.before a SET status = r.status FROM public.rm_order_view r WHERE r.id = a.id;
SELECT relname, pg_size_pretty(pg_relation_size(oid)) FROM pg_class WHERE relnamespace = 'exp'::regnamespace ORDER BY relname;
DROP SCHEMA exp CASCADE;
