-- The single-row ceiling the hot-sku scenario compares with: one reservation of one
-- unit of one product per transaction, what each order of the product everyone wants
-- does to its inventory row when each order is its own transaction (reference.sql's
-- product 1, on Till's own schema and CHECK constraint).
BEGIN;
UPDATE inventory SET reserved = reserved + 1, version = version + 1
  WHERE product_id = md5('1')::uuid AND on_hand - reserved >= 1;
COMMIT;
