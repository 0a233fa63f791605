CREATE FUNCTION rm_product_popularity_follow_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rm_product_popularity r SET popularity = n.popularity
    FROM updated n JOIN previous o ON o.id = n.id
    WHERE r.product_id = n.id AND n.popularity IS DISTINCT FROM o.popularity;
    RETURN NULL;
END
$$;
CREATE TRIGGER rm_product_popularity_on_update
    AFTER UPDATE ON rm_product_view
    REFERENCING OLD TABLE AS previous NEW TABLE AS updated
    FOR EACH STATEMENT EXECUTE FUNCTION rm_product_popularity_follow_updates();
