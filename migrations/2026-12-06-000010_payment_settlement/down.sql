DROP TRIGGER order_matches_payment ON orders;
DROP TRIGGER payment_matches_order ON payments;
DROP FUNCTION check_payment_matches_order();
DROP FUNCTION payment_matches_order(text, text);
ALTER TABLE payments DROP CONSTRAINT payments_refund_has_charge;
ALTER TABLE payments DROP COLUMN refunded_at;
ALTER TABLE payments DROP COLUMN refund_id;
UPDATE payments SET status = 'declined' WHERE status = 'failed';
UPDATE payments SET status = 'captured' WHERE status IN ('refunding', 'refunded');
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'captured', 'declined'));
