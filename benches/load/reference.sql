-- Reference data for pgbench, on Till's own schema (applied by `till migrate`):
-- 10,000 products with md5-derived ids (pgbench variables are integers), stock to spare,
-- one customer.
INSERT INTO categories (id, slug, name) VALUES (md5('cat')::uuid, 'reference', 'Reference');
INSERT INTO products (id, sku, name, category_id, price_minor, status)
SELECT md5(n::text)::uuid, 'REF-' || n, 'Reference ' || n, md5('cat')::uuid, 1000 + n, 'ACTIVE'
FROM generate_series(1, 10000) AS n;
INSERT INTO inventory (product_id, on_hand, reserved)
SELECT md5(n::text)::uuid, 100000000, 0 FROM generate_series(1, 10000) AS n;
INSERT INTO customers (id, email, name, role) VALUES (md5('buyer')::uuid, 'buyer@example.com', 'Buyer', 'CUSTOMER');
