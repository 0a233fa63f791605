-- Write side of Till: normalized tables owned by the `domain` crate, plus the event
-- log and the projection checkpoints. Constraints make bad states unrepresentable;
-- every index names the query it serves.

CREATE TABLE categories (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL CONSTRAINT categories_slug_key UNIQUE
                CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND length(slug) <= 100),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    parent_id   uuid REFERENCES categories (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (parent_id IS DISTINCT FROM id)
);
-- Serves the FK check on parent_id and "children of a category" walks.
CREATE INDEX categories_parent_id_idx ON categories (parent_id);

CREATE TABLE products (
    id           uuid PRIMARY KEY,
    sku          text NOT NULL CONSTRAINT products_sku_key UNIQUE
                 CHECK (sku ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  text NOT NULL DEFAULT '' CHECK (length(description) <= 10000),
    category_id  uuid NOT NULL REFERENCES categories (id),
    price_minor  bigint NOT NULL CHECK (price_minor >= 0),
    status       text NOT NULL CHECK (status IN ('DRAFT', 'ACTIVE', 'ARCHIVED')),
    version      integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- Serves the FK check from categories (a category cannot be removed while products use it).
CREATE INDEX products_category_id_idx ON products (category_id);

-- One row per product. available = on_hand - reserved can never go below zero: the
-- database refuses it, whatever the code does.
CREATE TABLE inventory (
    product_id  uuid PRIMARY KEY REFERENCES products (id),
    on_hand     integer NOT NULL CHECK (on_hand >= 0),
    reserved    integer NOT NULL CHECK (reserved >= 0),
    version     bigint NOT NULL DEFAULT 0,
    CONSTRAINT inventory_available_not_negative CHECK (on_hand - reserved >= 0)
);

CREATE TABLE customers (
    id             uuid PRIMARY KEY,
    email          text NOT NULL CHECK (length(email) BETWEEN 3 AND 254 AND position('@' IN email) > 1),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    password_hash  text,
    role           text NOT NULL CHECK (role IN ('CUSTOMER', 'STAFF', 'ADMIN')),
    created_at     timestamptz NOT NULL DEFAULT now()
);
-- Case-insensitive unique email; also serves the login lookup by lower(email).
CREATE UNIQUE INDEX customers_email_lower_key ON customers (lower(email));

CREATE TABLE orders (
    id           uuid PRIMARY KEY,
    customer_id  uuid NOT NULL REFERENCES customers (id),
    status       text NOT NULL CHECK (status IN
                 ('PENDING_PAYMENT', 'PAID', 'SHIPPED', 'CANCELLED', 'PAYMENT_FAILED', 'EXPIRED')),
    total_minor  bigint NOT NULL CHECK (total_minor >= 0),
    currency     char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    version      integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    placed_at    timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- Serves the FK check from customers and "orders of one customer" in commands.
CREATE INDEX orders_customer_id_idx ON orders (customer_id);

CREATE TABLE order_lines (
    order_id          uuid NOT NULL REFERENCES orders (id),
    line_no           smallint NOT NULL CHECK (line_no >= 1),
    product_id        uuid NOT NULL REFERENCES products (id),
    quantity          integer NOT NULL CHECK (quantity > 0),
    unit_price_minor  bigint NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, line_no),
    UNIQUE (order_id, product_id)
);
-- Serves the FK check from products.
CREATE INDEX order_lines_product_id_idx ON order_lines (product_id);

CREATE TABLE order_status_history (
    order_id    uuid NOT NULL REFERENCES orders (id),
    seq         integer NOT NULL CHECK (seq >= 1),
    status      text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, seq)
);

-- The event log. `position` is the append order; `tx_id` is the id of the writing
-- transaction. The projector reads in (tx_id, position) order and only below the
-- oldest transaction still running (pg_snapshot_xmin), so an event whose transaction
-- commits late can never be skipped.
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id           bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    event_type      text NOT NULL,
    event_version   smallint NOT NULL CHECK (event_version >= 1),
    stream_type     text NOT NULL,
    stream_id       uuid NOT NULL,
    payload         jsonb NOT NULL,
    actor           text NOT NULL,
    correlation_id  uuid NOT NULL,
    occurred_at     timestamptz NOT NULL DEFAULT now()
);
-- Serves the projector's read: WHERE (tx_id, position) > checkpoint ORDER BY tx_id, position.
CREATE INDEX events_tx_id_position_idx ON events (tx_id, position);
-- Serves reading one stream's history (audit, debugging an order).
CREATE INDEX events_stream_id_idx ON events (stream_id, position);

-- One row per projection: the last (tx_id, position) applied, written in the same
-- transaction as the projection's own changes (exactly-once effect).
CREATE TABLE projection_checkpoints (
    projection  text PRIMARY KEY,
    tx_id       bigint NOT NULL DEFAULT 0,
    position    bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
