-- Read-model tables, written only by the projections in the `read-models` crate.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE rm_categories (
    id         uuid PRIMARY KEY,
    slug       text NOT NULL UNIQUE,
    name       text NOT NULL,
    parent_id  uuid,
    -- ancestors then self: [{id, slug, name}, ...]
    path       jsonb NOT NULL,
    path_ids   uuid[] NOT NULL
);

CREATE TABLE rm_product_view (
    id                 uuid PRIMARY KEY,
    sku                text NOT NULL UNIQUE,
    name               text NOT NULL,
    description        text NOT NULL,
    price_minor        bigint NOT NULL,
    status             text NOT NULL,
    category_id        uuid NOT NULL,
    -- the category and its ancestors, for "products in this category or below"
    category_ids       uuid[] NOT NULL,
    category_path      jsonb NOT NULL,
    on_hand            integer NOT NULL DEFAULT 0,
    reserved           integer NOT NULL DEFAULT 0,
    available          integer NOT NULL DEFAULT 0,
    inventory_version  bigint NOT NULL DEFAULT -1,
    popularity         bigint NOT NULL DEFAULT 0,
    version            integer NOT NULL,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
-- Keyset pages of products(sortBy: PRICE | NAME | NEWEST | POPULAR).
CREATE INDEX rm_product_view_price_idx ON rm_product_view (price_minor, id);
CREATE INDEX rm_product_view_name_idx ON rm_product_view (name, id);
CREATE INDEX rm_product_view_newest_idx ON rm_product_view (created_at, id);
CREATE INDEX rm_product_view_popular_idx ON rm_product_view (popularity, id);
-- products(filter: {category}) including sub-categories: category_ids @> ARRAY[id].
CREATE INDEX rm_product_view_category_ids_idx ON rm_product_view USING gin (category_ids);
-- products(filter: {search}): name ILIKE '%term%'.
CREATE INDEX rm_product_view_name_trgm_idx ON rm_product_view USING gin (name gin_trgm_ops);

CREATE TABLE rm_order_view (
    id              uuid PRIMARY KEY,
    customer_id     uuid NOT NULL,
    customer_email  text NOT NULL,
    customer_name   text NOT NULL,
    status          text NOT NULL,
    total_minor     bigint NOT NULL,
    currency        text NOT NULL,
    -- [{productId, sku, name, quantity, unitPriceMinor}]
    lines           jsonb NOT NULL,
    -- [{status, at}]
    status_history  jsonb NOT NULL,
    version         integer NOT NULL,
    placed_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
-- myOrders: one customer's orders, newest first.
CREATE INDEX rm_order_view_customer_idx ON rm_order_view (customer_id, placed_at DESC, id DESC);
-- orders(filter) for staff, newest first, optionally by status.
CREATE INDEX rm_order_view_placed_idx ON rm_order_view (placed_at DESC, id DESC);
CREATE INDEX rm_order_view_status_idx ON rm_order_view (status, placed_at DESC, id DESC);

CREATE TABLE rm_customer_summary (
    customer_id           uuid PRIMARY KEY,
    email                 text NOT NULL DEFAULT '',
    name                  text NOT NULL DEFAULT '',
    role                  text NOT NULL DEFAULT 'CUSTOMER',
    orders_count          bigint NOT NULL DEFAULT 0,
    lifetime_spend_minor  bigint NOT NULL DEFAULT 0,
    last_order_id         uuid,
    last_order_at         timestamptz
);

CREATE TABLE rm_sales_daily (
    day            date PRIMARY KEY,
    orders_count   bigint NOT NULL DEFAULT 0,
    units          bigint NOT NULL DEFAULT 0,
    revenue_minor  bigint NOT NULL DEFAULT 0
);

CREATE TABLE rm_product_sales (
    product_id     uuid PRIMARY KEY,
    sku            text NOT NULL,
    name           text NOT NULL,
    units          bigint NOT NULL DEFAULT 0,
    revenue_minor  bigint NOT NULL DEFAULT 0
);
-- topProducts: by units sold, descending.
CREATE INDEX rm_product_sales_units_idx ON rm_product_sales (units DESC, product_id);
