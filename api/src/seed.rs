//! Seeding: the demo catalog for the embedded dev default, and large data sets for
//! load tests (`till seed`), with progress bars.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use till_domain::commands::{CommandContext, Commands, NewCategory, NewCustomer, NewProduct};
use till_domain::db::PgPool;
use till_domain::types::*;
use till_domain::DomainError;

/// The demo staff account.
pub const DEMO_STAFF_EMAIL: &str = "staff@till.dev";
/// The demo shopper account.
pub const DEMO_SHOPPER_EMAIL: &str = "shopper@till.dev";
/// Password of the demo accounts (dev mode only; never seeded in production).
pub const DEMO_PASSWORD: &str = "till-demo-password";

/// Seeds a small demo catalog and two accounts when the catalog is empty.
pub async fn demo_if_empty(commands: &Commands) -> Result<(), DomainError> {
    if !till_domain::write_side_lookups::catalog_is_empty(commands.pool()).await? {
        return Ok(());
    }
    tracing::info!("seeding the demo catalog");
    let sys = CommandContext::system("demo-seed");
    let tree: [(&str, &str, Option<&str>); 7] = [
        ("apparel", "Apparel", None),
        ("tees", "T-shirts", Some("apparel")),
        ("hoodies", "Hoodies", Some("apparel")),
        ("electronics", "Electronics", None),
        ("audio", "Audio", Some("electronics")),
        ("home", "Home", None),
        ("kitchen", "Kitchen", Some("home")),
    ];
    let mut ids = std::collections::HashMap::new();
    for (slug, name, parent) in tree {
        let out = commands
            .create_category(
                &sys,
                NewCategory {
                    slug: Slug::parse(slug)?,
                    name: Name::parse("name", name)?,
                    parent: parent.and_then(|p| ids.get(p).copied()),
                },
            )
            .await?;
        ids.insert(slug, out.value);
    }
    let products: [(&str, &str, &str, i64, i64); 12] = [
        ("TEE-BLK-M", "Black tee (M)", "tees", 1900, 120),
        ("TEE-WHT-L", "White tee (L)", "tees", 1900, 80),
        ("TEE-LTD-01", "Limited drop tee", "tees", 4900, 100),
        ("HOOD-GRY-M", "Grey hoodie (M)", "hoodies", 5900, 40),
        ("HOOD-NVY-L", "Navy hoodie (L)", "hoodies", 5900, 0),
        ("AUD-EAR-01", "Wireless earbuds", "audio", 7900, 60),
        ("AUD-SPK-02", "Pocket speaker", "audio", 3900, 25),
        ("AUD-HP-03", "Studio headphones", "audio", 14900, 10),
        ("KIT-MUG-01", "Enamel mug", "kitchen", 1200, 300),
        ("KIT-KNF-02", "Chef's knife", "kitchen", 8900, 15),
        ("KIT-KTL-03", "Kettle", "kitchen", 4500, 30),
        ("HOME-LMP-01", "Desk lamp", "home", 3500, 50),
    ];
    for (sku, name, cat, price, stock) in products {
        let category = ids
            .get(cat)
            .copied()
            .ok_or_else(|| DomainError::Internal(format!("demo category {cat} missing")))?;
        commands
            .create_product(
                &sys,
                NewProduct {
                    sku: Sku::parse(sku)?,
                    name: Name::parse("name", name)?,
                    description: Description::parse(&format!(
                        "{name}, from the Till demo catalog."
                    ))?,
                    category,
                    price: Money::price(price)?,
                    status: ProductStatus::Active,
                    initial_stock: if stock > 0 {
                        Some(StockDelta::restock(stock)?)
                    } else {
                        None
                    },
                },
            )
            .await?;
    }
    for (email, name, role) in [
        (DEMO_STAFF_EMAIL, "Demo Staff", Role::Staff),
        (DEMO_SHOPPER_EMAIL, "Demo Shopper", Role::Customer),
    ] {
        let email = Email::parse(email)?;
        let hash = till_domain::passwords::hash(&till_domain::passwords::Password::new_for(
            DEMO_PASSWORD,
            &email,
        )?)
        .await?;
        commands
            .create_customer(
                &sys,
                NewCustomer {
                    email,
                    name: Name::parse("name", name)?,
                    role,
                    password_hash: Some(hash),
                },
            )
            .await?;
    }
    Ok(())
}

/// Sizes of a bulk seed.
#[derive(Debug, Clone, Copy)]
pub struct SeedSizes {
    /// Categories.
    pub categories: usize,
    /// Products.
    pub products: usize,
    /// Customers.
    pub customers: usize,
    /// Orders.
    pub orders: usize,
}

/// How long each phase took.
#[derive(Debug, Default)]
pub struct SeedTimings {
    /// (phase, rows, duration)
    pub phases: Vec<(&'static str, usize, Duration)>,
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    let style =
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(what.to_owned());
    pb
}

/// Inserts a large data set in chunks, each chunk one transaction with its events.
pub async fn bulk(
    pool: &PgPool,
    sizes: SeedSizes,
    currency: &Currency,
) -> Result<SeedTimings, DomainError> {
    let tag: String = format!("{:04x}", rand::random::<u16>());
    let mut timings = SeedTimings::default();

    let started = Instant::now();
    let pb = bar(sizes.categories, "categories");
    let roots_n = (sizes.categories / 5).max(1).min(sizes.categories);
    let mut categories = Vec::with_capacity(sizes.categories);
    if sizes.categories > 0 {
        let roots = till_domain::seed::categories(pool, &tag, 0, roots_n, &[]).await?;
        pb.inc(roots.len() as u64);
        categories.extend(roots.iter().copied());
        let mut i = roots_n;
        while i < sizes.categories {
            let end = (i + 1000).min(sizes.categories);
            categories.extend(till_domain::seed::categories(pool, &tag, i, end, &roots).await?);
            pb.inc((end - i) as u64);
            i = end;
        }
    }
    pb.finish();
    timings
        .phases
        .push(("categories", sizes.categories, started.elapsed()));

    let started = Instant::now();
    let pb = bar(sizes.products, "products");
    let mut products = Vec::with_capacity(sizes.products);
    let mut i = 0;
    while i < sizes.products {
        let end = (i + 1000).min(sizes.products);
        products.extend(till_domain::seed::products(pool, &tag, i, end, &categories).await?);
        pb.inc((end - i) as u64);
        i = end;
    }
    pb.finish();
    timings
        .phases
        .push(("products", sizes.products, started.elapsed()));

    let started = Instant::now();
    let pb = bar(sizes.customers, "customers");
    let mut customers = Vec::with_capacity(sizes.customers);
    let mut i = 0;
    while i < sizes.customers {
        let end = (i + 1000).min(sizes.customers);
        customers.extend(till_domain::seed::customers(pool, &tag, i, end).await?);
        pb.inc((end - i) as u64);
        i = end;
    }
    pb.finish();
    timings
        .phases
        .push(("customers", sizes.customers, started.elapsed()));

    let started = Instant::now();
    let pb = bar(sizes.orders, "orders");
    let mut done = 0;
    while done < sizes.orders {
        let n = (sizes.orders - done).min(2000);
        till_domain::seed::orders(pool, n, &customers, &products, currency.as_str()).await?;
        done += n;
        pb.inc(n as u64);
    }
    pb.finish();
    timings
        .phases
        .push(("orders", sizes.orders, started.elapsed()));
    Ok(timings)
}
