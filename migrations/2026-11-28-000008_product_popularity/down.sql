CREATE INDEX rm_product_view_popular_idx ON rm_product_view (popularity, id);
DROP TABLE rm_product_popularity;
