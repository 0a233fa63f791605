-- One product by primary key joined with its category and inventory.
\set n random(1, 10000)
SELECT p.id, p.sku, p.name, p.price_minor, c.name, i.on_hand - i.reserved AS available
FROM products p JOIN categories c ON c.id = p.category_id JOIN inventory i ON i.product_id = p.id
WHERE p.id = md5(:n::text)::uuid;
