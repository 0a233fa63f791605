//! Diesel table definitions of the read models, matching `migrations/`.

diesel::table! {
    rm_categories (id) {
        id -> Uuid,
        slug -> Text,
        name -> Text,
        parent_id -> Nullable<Uuid>,
        path -> Jsonb,
        path_ids -> Array<Uuid>,
    }
}

diesel::table! {
    rm_product_view (id) {
        id -> Uuid,
        sku -> Text,
        name -> Text,
        description -> Text,
        price_minor -> Int8,
        status -> Text,
        category_id -> Uuid,
        category_ids -> Array<Uuid>,
        category_path -> Jsonb,
        on_hand -> Int4,
        reserved -> Int4,
        available -> Int4,
        inventory_version -> Int8,
        popularity -> Int8,
        version -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// The POPULAR ordering of products (see migration 8).
    rm_product_popularity (product_id) {
        product_id -> Uuid,
        popularity -> Int8,
    }
}

diesel::table! {
    rm_order_view (id) {
        id -> Uuid,
        customer_id -> Uuid,
        customer_email -> Text,
        customer_name -> Text,
        status -> Text,
        total_minor -> Int8,
        currency -> Text,
        lines -> Jsonb,
        status_history -> Jsonb,
        version -> Int4,
        placed_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    rm_customer_summary (customer_id) {
        customer_id -> Uuid,
        email -> Text,
        name -> Text,
        role -> Text,
        orders_count -> Int8,
        lifetime_spend_minor -> Int8,
        last_order_id -> Nullable<Uuid>,
        last_order_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    rm_sales_daily (day) {
        day -> Date,
        orders_count -> Int8,
        units -> Int8,
        revenue_minor -> Int8,
    }
}

diesel::table! {
    rm_product_sales (product_id) {
        product_id -> Uuid,
        sku -> Text,
        name -> Text,
        units -> Int8,
        revenue_minor -> Int8,
    }
}

diesel::joinable!(rm_product_popularity -> rm_product_view (product_id));
diesel::allow_tables_to_appear_in_same_query!(rm_product_view, rm_product_popularity);

diesel::table! {
    /// The last rebuild of each projection (see `rebuild`).
    projection_rebuilds (projection) {
        projection -> Text,
        state -> Text,
        phase -> Text,
        events_total -> Int8,
        events_applied -> Int8,
        started_at -> Timestamptz,
        updated_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        error -> Nullable<Text>,
    }
}
