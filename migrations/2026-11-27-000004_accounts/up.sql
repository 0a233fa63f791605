-- Sessions: rotating refresh tokens. Only a SHA-256 of each token is stored (tokens are
-- 256-bit random values, so a fast hash is enough). A token exchanged for its successor
-- is marked rotated; presenting it again means it leaked, and the whole family (every
-- token descended from one sign-in) is revoked.
CREATE TABLE refresh_tokens (
    id           uuid PRIMARY KEY,
    family_id    uuid NOT NULL,
    customer_id  uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    token_hash   bytea NOT NULL CHECK (length(token_hash) = 32),
    issued_at    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    rotated_at   timestamptz,
    revoked_at   timestamptz
);
-- Serves the lookup of a presented token on refresh and logout.
CREATE UNIQUE INDEX refresh_tokens_hash_key ON refresh_tokens (token_hash);
-- Serves revoking a family on reuse and on logout.
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
-- Serves the purge of expired tokens.
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);

-- Accounts of people who sign in with an external OIDC issuer: (issuer, subject) is the
-- identity the issuer vouches for; the primary key serves the lookup on every request
-- that misses the in-process cache.
CREATE TABLE external_identities (
    issuer       text NOT NULL CHECK (length(issuer) BETWEEN 1 AND 512),
    subject      text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    customer_id  uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, subject)
);
