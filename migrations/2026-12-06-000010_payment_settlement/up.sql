-- A payment's status and its order's status move together (one transaction), and the
-- database refuses a commit where they disagree:
--   pending                -> the order is PENDING_PAYMENT (nothing else may move it);
--   captured               -> PAID or SHIPPED;
--   declined, failed       -> PAYMENT_FAILED, CANCELLED or EXPIRED;
--   refunding, refunded    -> the money was captured for an order that could no
--                             longer be paid: PAYMENT_FAILED, CANCELLED or EXPIRED.
-- 'failed' is a capture given up (permanent provider error or attempts exhausted);
-- 'refunding' waits for its refund job, 'refunded' has the provider's refund id.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'captured', 'declined', 'failed', 'refunding', 'refunded'));
ALTER TABLE payments ADD COLUMN refund_id text;
ALTER TABLE payments ADD COLUMN refunded_at timestamptz;
ALTER TABLE payments ADD CONSTRAINT payments_refund_has_charge
    CHECK (status NOT IN ('refunding', 'refunded') OR charge_id IS NOT NULL);

-- Rows the old two-transaction settlement could leave behind: an order that left
-- PENDING_PAYMENT while its payment stayed pending.
UPDATE payments p SET status = 'captured', settled_at = coalesce(p.settled_at, now())
  FROM orders o
 WHERE o.id = p.order_id AND p.status = 'pending' AND o.status IN ('PAID', 'SHIPPED');
UPDATE payments p SET status = 'failed', settled_at = coalesce(p.settled_at, now()),
       failure = coalesce(p.failure, 'the order left PENDING_PAYMENT before the capture settled')
  FROM orders o
 WHERE o.id = p.order_id AND p.status = 'pending' AND o.status <> 'PENDING_PAYMENT';

CREATE FUNCTION payment_matches_order(payment text, orders_status text) RETURNS boolean
    LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE payment
    WHEN 'pending' THEN orders_status = 'PENDING_PAYMENT'
    WHEN 'captured' THEN orders_status IN ('PAID', 'SHIPPED')
    ELSE orders_status IN ('PAYMENT_FAILED', 'CANCELLED', 'EXPIRED')
  END
$$;

-- Checked at commit (deferred), so a transaction may update the order and the payment
-- in either order; a commit that leaves them disagreeing fails with
-- `payment_matches_order` as the constraint name.
CREATE FUNCTION check_payment_matches_order() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
  the_order uuid;
  p text;
  o text;
BEGIN
  -- Each branch is planned only when it runs, so NEW's fields may differ per table.
  IF TG_TABLE_NAME = 'payments' THEN
    the_order := NEW.order_id;
  ELSE
    the_order := NEW.id;
  END IF;
  SELECT pay.status, ord.status INTO p, o
    FROM payments pay JOIN orders ord ON ord.id = pay.order_id
   WHERE pay.order_id = the_order;
  IF p IS NOT NULL AND NOT payment_matches_order(p, o) THEN
    RAISE EXCEPTION 'payment of order % is % while the order is %', the_order, p, o
      USING ERRCODE = 'check_violation', CONSTRAINT = 'payment_matches_order';
  END IF;
  RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER payment_matches_order
  AFTER INSERT OR UPDATE OF status ON payments
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION check_payment_matches_order();

CREATE CONSTRAINT TRIGGER order_matches_payment
  AFTER UPDATE OF status ON orders
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION check_payment_matches_order();
