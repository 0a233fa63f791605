-- The job queue. A job is enqueued in the same transaction as the command that causes
-- it; workers claim due jobs with FOR UPDATE SKIP LOCKED and hold a lease
-- (locked_until) while they run; a job whose lease expired (its worker died) is claimed
-- again. Finished jobs are deleted; a job out of attempts stays as a dead letter
-- (status 'dead') with its last error until staff retry or discard it.
CREATE TABLE jobs (
    id            bigserial PRIMARY KEY,
    queue         text NOT NULL CHECK (length(queue) BETWEEN 1 AND 64),
    payload       jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'dead')),
    attempts      integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts  integer NOT NULL CHECK (max_attempts > 0),
    run_at        timestamptz NOT NULL DEFAULT now(),
    locked_until  timestamptz,
    locked_by     text,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    dead_at       timestamptz
);
-- Serves the claim of due jobs of one queue, oldest first.
CREATE INDEX jobs_due_idx ON jobs (queue, run_at) WHERE status = 'queued';
-- Serves reclaiming jobs whose lease expired.
CREATE INDEX jobs_lease_idx ON jobs (queue, locked_until) WHERE status = 'running';
-- Serves the dead-letter list, newest first.
CREATE INDEX jobs_dead_idx ON jobs (id) WHERE status = 'dead';

-- One payment per order: the method token, where the capture stands, and the
-- provider's charge id once captured.
CREATE TABLE payments (
    order_id      uuid PRIMARY KEY REFERENCES orders (id),
    method_token  text NOT NULL CHECK (length(method_token) BETWEEN 1 AND 255),
    status        text NOT NULL CHECK (status IN ('pending', 'captured', 'declined')),
    charge_id     text,
    failure       text,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    settled_at    timestamptz
);
-- Serves order expiry: unpaid orders past their deadline (oldest first).
CREATE INDEX orders_pending_placed_idx ON orders (placed_at) WHERE status = 'PENDING_PAYMENT';

-- Inbound webhook events already handled, by provider and the provider's event id.
CREATE TABLE inbound_webhook_events (
    provider     text NOT NULL,
    event_id     text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
