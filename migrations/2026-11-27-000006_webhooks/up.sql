-- Outbound webhooks: staff register subscriber URLs for event types; each matching
-- event becomes one delivery (a row here plus a job on the `webhooks` queue). The
-- fan-out follows the event log with its own checkpoint ('webhooks' in
-- projection_checkpoints), so each event is fanned out exactly once.
CREATE TABLE webhook_subscriptions (
    id           uuid PRIMARY KEY,
    url          text NOT NULL CHECK (length(url) BETWEEN 8 AND 2048 AND url ~ '^https?://'),
    event_types  text[] NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 50),
    secret       text NOT NULL,
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    subscription_id  uuid NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_tx_id      bigint NOT NULL,
    event_position   bigint NOT NULL,
    event_type       text NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    response_status  integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    -- One delivery per event and subscriber, even if a fan-out batch is retried.
    UNIQUE (subscription_id, event_tx_id, event_position)
);
-- Serves the delivery history of a subscription, newest first.
CREATE INDEX webhook_deliveries_history_idx ON webhook_deliveries (subscription_id, id DESC);
