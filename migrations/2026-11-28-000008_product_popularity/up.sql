-- Popularity changes with every order, and an indexed column that changes makes every
-- product-view update a new row version with entries in all seven of its indexes (two
-- of them GIN): 2.9 ms per projector batch under checkout, against 0.28 ms without it.
-- The POPULAR ordering moves to its own narrow table; the view keeps the (unindexed)
-- value for display, so its stock and popularity updates stay on the page (HOT).
CREATE TABLE rm_product_popularity (
    product_id  uuid PRIMARY KEY,
    popularity  bigint NOT NULL DEFAULT 0
);
INSERT INTO rm_product_popularity (product_id, popularity)
SELECT id, popularity FROM rm_product_view;
CREATE INDEX rm_product_popularity_idx ON rm_product_popularity (popularity, product_id);
DROP INDEX rm_product_view_popular_idx;
