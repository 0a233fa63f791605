-- Till's placeOrder transaction itself (domain/src/commands/orders.rs; the text as
-- pg_stat_statements shows it, parameters written out): the statement that reads the
-- buyer and both products with their stock, then the one statement that locks their
-- inventory rows in product order, reserves the stock and writes the order, its two
-- lines, its status history and three events with Till's payloads (each StockReserved
-- event with the level its reservation left). reference.sh runs it with
-- plan_cache_mode = force_generic_plan, as Till's transactions do. Unlike Till, nothing
-- wakes the projectors after the commit (Till sends one pg_notify per process at a time,
-- outside the order transactions) and nothing projects the events.
\set a random(1, 5000)
\set b random(5001, 10000)
BEGIN;
SELECT c.email AS customer_email, c.name AS customer_name, p.id, p.sku, p.name,
    p.price_minor, p.status, i.on_hand, i.reserved, i.version
  FROM customers c CROSS JOIN products p JOIN inventory i ON i.product_id = p.id
  WHERE c.id = md5('buyer')::uuid AND p.id = ANY(ARRAY[md5(:a::text)::uuid, md5(:b::text)::uuid])
  ORDER BY p.id;
WITH ids AS (
  -- a time-ordered id, as Till's UUIDv7 order ids are
  SELECT encode(overlay(uuid_send(gen_random_uuid()) PLACING
      substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::int8) FROM 3)
      FROM 1 FOR 6), 'hex')::uuid AS order_id
), locked AS (
  SELECT i.product_id, t.q FROM inventory i
  JOIN unnest(ARRAY[md5(:a::text)::uuid, md5(:b::text)::uuid], '{1,1}'::int4[]) AS t(id, q)
    ON i.product_id = t.id
  ORDER BY i.product_id FOR UPDATE OF i
), reserved AS (
  UPDATE inventory i SET reserved = i.reserved + l.q, version = i.version + 1
  FROM locked l WHERE i.product_id = l.product_id
  RETURNING i.product_id, i.on_hand, i.reserved, i.version
), placed AS (
  INSERT INTO orders (id, customer_id, status, total_minor, currency, version, placed_at, updated_at)
  SELECT order_id, md5('buyer')::uuid, 'PENDING_PAYMENT', 2000 + :a + :b, 'EUR', 1, now(), now() FROM ids
), lines AS (
  INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_minor)
  SELECT ids.order_id, t.n::int2, t.id, t.q, t.price
  FROM ids, unnest(ARRAY[md5(:a::text)::uuid, md5(:b::text)::uuid], '{1,1}'::int4[],
                   ARRAY[1000 + :a, 1000 + :b]::int8[]) WITH ORDINALITY AS t(id, q, price, n)
), history AS (
  INSERT INTO order_status_history (order_id, seq, status, changed_at)
  SELECT order_id, 1, 'PENDING_PAYMENT', now() FROM ids
), appended AS (
  INSERT INTO events (event_type, event_version, stream_type, stream_id, payload, actor, correlation_id)
  SELECT t.event_type, t.event_version, t.stream_type, t.stream_id,
         CASE WHEN t.event_type = 'StockReserved'
           THEN jsonb_set(t.payload, '{stock}', (SELECT jsonb_build_object('onHand', r.on_hand,
             'reserved', r.reserved, 'version', r.version) FROM reserved r WHERE r.product_id = t.stream_id))
           ELSE t.payload END,
         'customer:' || md5('buyer')::uuid, gen_random_uuid()
  FROM ids, unnest(
    ARRAY['OrderPlaced', 'StockReserved', 'StockReserved'], '{1,1,1}'::int2[],
    ARRAY['order', 'inventory', 'inventory'],
    ARRAY[ids.order_id, md5(:a::text)::uuid, md5(:b::text)::uuid],
    ARRAY[
      '{"lines": [{"sku": "REF-' || :a || '", "name": "Reference ' || :a || '", "quantity": 1, "productId": "'
        || md5(:a::text)::uuid || '", "unitPriceMinor": ' || 1000 + :a || '}, {"sku": "REF-' || :b
        || '", "name": "Reference ' || :b || '", "quantity": 1, "productId": "' || md5(:b::text)::uuid
        || '", "unitPriceMinor": ' || 1000 + :b || '}], "version": 1, "currency": "EUR", "order_id": "'
        || ids.order_id || '", "placed_at": "' || now() || '", "customer_id": "' || md5('buyer')::uuid
        || '", "total_minor": ' || 2000 + :a + :b
        || ', "customer_name": "Buyer", "customer_email": "buyer@example.com"}',
      '{"stock": {"onHand": 100000000, "version": 1, "reserved": 1}, "order_id": "' || ids.order_id
        || '", "quantity": 1, "product_id": "' || md5(:a::text)::uuid || '"}',
      '{"stock": {"onHand": 100000000, "version": 1, "reserved": 1}, "order_id": "' || ids.order_id
        || '", "quantity": 1, "product_id": "' || md5(:b::text)::uuid || '"}'
    ]::jsonb[]) WITH ORDINALITY AS t(event_type, event_version, stream_type, stream_id, payload, n)
  ORDER BY t.n
  RETURNING tx_id, position
)
SELECT max(tx_id) AS tx_id, max(position) AS position FROM appended;
COMMIT;
