-- Order placement as Till does it: reserve stock for 2 lines with the availability
-- check, the order row, 2 lines, 1 event row; synchronous commit.
\set a random(1, 5000)
\set b random(5001, 10000)
BEGIN;
UPDATE inventory SET reserved = reserved + 1, version = version + 1
  WHERE product_id = md5(:a::text)::uuid AND on_hand - reserved >= 1;
UPDATE inventory SET reserved = reserved + 1, version = version + 1
  WHERE product_id = md5(:b::text)::uuid AND on_hand - reserved >= 1;
INSERT INTO orders (id, customer_id, status, total_minor, currency)
  VALUES (gen_random_uuid(), md5('buyer')::uuid, 'PENDING_PAYMENT', 2000, 'EUR')
  RETURNING id \gset o_
INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_minor)
  VALUES (:o_id::uuid, 1, md5(:a::text)::uuid, 1, 1000), (:o_id::uuid, 2, md5(:b::text)::uuid, 1, 1000);
INSERT INTO events (event_type, event_version, stream_type, stream_id, payload, actor, correlation_id)
  VALUES ('OrderPlaced', 1, 'order', :o_id::uuid, '{"reference": true}', 'bench', gen_random_uuid());
COMMIT;
