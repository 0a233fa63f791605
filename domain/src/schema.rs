//! Diesel table definitions of the write side, matching `migrations/`.

diesel::table! {
    categories (id) {
        id -> Uuid,
        slug -> Text,
        name -> Text,
        parent_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    products (id) {
        id -> Uuid,
        sku -> Text,
        name -> Text,
        description -> Text,
        category_id -> Uuid,
        price_minor -> Int8,
        status -> Text,
        version -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    inventory (product_id) {
        product_id -> Uuid,
        on_hand -> Int4,
        reserved -> Int4,
        version -> Int8,
    }
}

diesel::table! {
    customers (id) {
        id -> Uuid,
        email -> Text,
        name -> Text,
        password_hash -> Nullable<Text>,
        role -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    orders (id) {
        id -> Uuid,
        customer_id -> Uuid,
        status -> Text,
        total_minor -> Int8,
        currency -> Bpchar,
        version -> Int4,
        placed_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    order_lines (order_id, line_no) {
        order_id -> Uuid,
        line_no -> Int2,
        product_id -> Uuid,
        quantity -> Int4,
        unit_price_minor -> Int8,
    }
}

diesel::table! {
    order_status_history (order_id, seq) {
        order_id -> Uuid,
        seq -> Int4,
        status -> Text,
        changed_at -> Timestamptz,
    }
}

diesel::table! {
    events (position) {
        position -> Int8,
        tx_id -> Int8,
        event_type -> Text,
        event_version -> Int2,
        stream_type -> Text,
        stream_id -> Uuid,
        payload -> Jsonb,
        actor -> Text,
        correlation_id -> Uuid,
        occurred_at -> Timestamptz,
    }
}

diesel::table! {
    projection_checkpoints (projection) {
        projection -> Text,
        tx_id -> Int8,
        position -> Int8,
        updated_at -> Timestamptz,
        generation -> Int8,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Uuid,
        family_id -> Uuid,
        customer_id -> Uuid,
        token_hash -> Bytea,
        issued_at -> Timestamptz,
        expires_at -> Timestamptz,
        rotated_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    external_identities (issuer, subject) {
        issuer -> Text,
        subject -> Text,
        customer_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    payments (order_id) {
        order_id -> Uuid,
        method_token -> Text,
        status -> Text,
        charge_id -> Nullable<Text>,
        failure -> Nullable<Text>,
        requested_at -> Timestamptz,
        settled_at -> Nullable<Timestamptz>,
        refund_id -> Nullable<Text>,
        refunded_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    inbound_webhook_events (provider, event_id) {
        provider -> Text,
        event_id -> Text,
        received_at -> Timestamptz,
    }
}

diesel::table! {
    jobs (id) {
        id -> Int8,
        queue -> Text,
        payload -> Jsonb,
        status -> Text,
        attempts -> Int4,
        max_attempts -> Int4,
        run_at -> Timestamptz,
        locked_until -> Nullable<Timestamptz>,
        locked_by -> Nullable<Text>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        dead_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    api_replicas (id) {
        id -> Uuid,
        seen_at -> Timestamptz,
    }
}

diesel::joinable!(payments -> orders (order_id));
diesel::joinable!(refresh_tokens -> customers (customer_id));
diesel::joinable!(external_identities -> customers (customer_id));
diesel::joinable!(products -> categories (category_id));
diesel::joinable!(inventory -> products (product_id));
diesel::joinable!(orders -> customers (customer_id));
diesel::joinable!(order_lines -> orders (order_id));
diesel::joinable!(order_lines -> products (product_id));
diesel::joinable!(order_status_history -> orders (order_id));

diesel::allow_tables_to_appear_in_same_query!(
    categories,
    products,
    inventory,
    customers,
    orders,
    order_lines,
    order_status_history,
    events,
    projection_checkpoints,
    refresh_tokens,
    external_identities,
    payments,
    inbound_webhook_events,
    jobs,
);
