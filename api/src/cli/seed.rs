//! `till seed`: a bulk catalog, customers and orders of the sizes given (load tests),
//! then the projections caught up and the tables analyzed.

use std::time::Instant;

use till_domain::types::Currency;

use super::projections::catch_up;
use super::CliError;
use crate::app::{Database, StartError};
use crate::config::{DbConfig, Mode};
use crate::seed::{self, SeedSizes};

/// Seeds `sizes` in `currency`, then catches the projections up unless told not to.
pub(super) async fn run(
    db: DbConfig,
    sizes: SeedSizes,
    currency: &str,
    no_catch_up: bool,
) -> Result<(), CliError> {
    let currency = Currency::parse(currency).map_err(|e| CliError::Failed(e.to_string()))?;
    let database = Database::resolve(&db, Mode::Dev).await?;
    till_domain::db::migrate(&database.url)
        .await
        .map_err(StartError::from)?;
    let pool = till_domain::db::pool(&database.url, &db.pool_settings());
    if sizes.orders > 0 && (sizes.products == 0 || sizes.customers == 0) {
        return Err(CliError::Failed(
            "orders need at least one product and one customer".into(),
        ));
    }
    let timings = seed::bulk(&pool, sizes, &currency)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    for (phase, rows, took) in &timings.phases {
        println!(
            "seeded {rows:>8} {phase:<10} in {:>7.2}s",
            took.as_secs_f64()
        );
    }
    if !no_catch_up {
        let started = Instant::now();
        catch_up(&pool, &database.url).await?;
        println!(
            "projections caught up in {:.2}s",
            started.elapsed().as_secs_f64()
        );
    }
    let started = Instant::now();
    till_domain::seed::vacuum_analyze(&pool)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    println!(
        "vacuumed and analyzed in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
