-- Idempotency keys (Stripe semantics). A command that runs under a key inserts its row
-- first, in its own transaction, and records its outcome there before commit: an
-- effect never exists without its key, nor a key without its effect. The full
-- response is stored right after the request completes, for exact replays.
CREATE TABLE idempotency_keys (
    principal    text NOT NULL,
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint  text NOT NULL,
    outcome      jsonb,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (principal, key)
);
-- Serves the background purge: DELETE ... WHERE expires_at < now().
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
