//! `till migrate`: applies the embedded migrations (production runs them as a Job).

use super::CliError;
use crate::app::{Database, StartError};
use crate::config::{DbConfig, Mode};

/// Applies the pending migrations and says which.
pub(super) async fn run(db: DbConfig) -> Result<(), CliError> {
    let database = Database::resolve(&db, Mode::Dev).await?;
    let applied = till_domain::db::migrate(&database.url)
        .await
        .map_err(StartError::from)?;
    if applied.is_empty() {
        println!("migrations: nothing to apply");
    } else {
        println!("migrations applied: {}", applied.join(", "));
    }
    Ok(())
}
