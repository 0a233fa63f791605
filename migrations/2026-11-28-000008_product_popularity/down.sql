DROP TRIGGER rm_product_popularity_on_update ON rm_product_view;
DROP TRIGGER rm_product_popularity_on_insert ON rm_product_view;
DROP FUNCTION rm_product_popularity_follow_updates();
DROP FUNCTION rm_product_popularity_follow_inserts();
CREATE INDEX rm_product_view_popular_idx ON rm_product_view (popularity, id);
DROP TABLE rm_product_popularity;
