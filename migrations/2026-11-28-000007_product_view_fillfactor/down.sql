ALTER TABLE rm_product_view RESET (fillfactor);
