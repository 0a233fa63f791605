DROP TABLE inbound_webhook_events;
DROP INDEX orders_pending_placed_idx;
DROP TABLE payments;
DROP TABLE jobs;
