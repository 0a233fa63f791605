-- Popularity changes with every order, and an indexed column that changes makes every
-- product-view update a new row version with entries in all seven of its indexes (two
-- of them GIN): 2.9 ms per projector batch under checkout, against 0.28 ms without it.
-- The POPULAR ordering moves to its own narrow table; the view keeps the (unindexed)
-- value, so its stock and popularity updates stay on the page (HOT).
CREATE TABLE rm_product_popularity (
    product_id  uuid PRIMARY KEY,
    popularity  bigint NOT NULL DEFAULT 0
);
INSERT INTO rm_product_popularity (product_id, popularity)
SELECT id, popularity FROM rm_product_view;
CREATE INDEX rm_product_popularity_idx ON rm_product_popularity (popularity, product_id);
DROP INDEX rm_product_view_popular_idx;

-- The database keeps the ordering table in step with the view, whatever writes the
-- view: during a rolling upgrade a worker of the previous version still projects
-- batches that know nothing of this table, and a product it creates must not vanish
-- from listings nor its popularity drift.
-- Statement-level, over the transition tables: one set-based write per statement (a
-- row-level trigger cost 28 us per row, 0.55 ms per projector batch under checkout).
CREATE FUNCTION rm_product_popularity_follow_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rm_product_popularity (product_id, popularity)
    SELECT id, popularity FROM inserted
    ON CONFLICT (product_id) DO UPDATE SET popularity = EXCLUDED.popularity;
    RETURN NULL;
END
$$;
CREATE FUNCTION rm_product_popularity_follow_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rm_product_popularity r SET popularity = n.popularity
    FROM updated n JOIN previous o ON o.id = n.id
    WHERE r.product_id = n.id AND n.popularity IS DISTINCT FROM o.popularity;
    RETURN NULL;
END
$$;
CREATE TRIGGER rm_product_popularity_on_insert
    AFTER INSERT ON rm_product_view
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION rm_product_popularity_follow_inserts();
CREATE TRIGGER rm_product_popularity_on_update
    AFTER UPDATE ON rm_product_view
    REFERENCING OLD TABLE AS previous NEW TABLE AS updated
    FOR EACH STATEMENT EXECUTE FUNCTION rm_product_popularity_follow_updates();
