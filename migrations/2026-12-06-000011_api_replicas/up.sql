-- The API replicas alive now: each `till serve` upserts its row every second and
-- counts the rows seen recently, to share each client's rate budget among them
-- (a client behind a round-robin load balancer then gets about one budget, not one
-- per replica). Unlogged: it is rebuilt within seconds after a crash.
CREATE UNLOGGED TABLE api_replicas (
    id       uuid PRIMARY KEY,
    seen_at  timestamptz NOT NULL DEFAULT now()
);
