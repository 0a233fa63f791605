//! Small lookups in the write-side tables that the application needs outside a command
//! (is the catalog empty, whose is this email): not read models, which may lag.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::db::PgPool;
use crate::error::DomainError;
use crate::schema::{categories, customers};
use crate::types::{CustomerId, Role};

/// True when no category exists yet (a fresh database).
pub async fn catalog_is_empty(pool: &PgPool) -> Result<bool, DomainError> {
    let mut conn = pool.get().await?;
    let any: bool = diesel::select(diesel::dsl::exists(
        categories::table.select(categories::id),
    ))
    .get_result(&mut conn)
    .await?;
    Ok(!any)
}

/// An account's id and role by email (case-insensitive).
pub async fn account_by_email(
    pool: &PgPool,
    email: &str,
) -> Result<Option<(CustomerId, Role)>, DomainError> {
    let mut conn = pool.get().await?;
    let row: Option<(uuid::Uuid, String)> = customers::table
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(email) = lower(")
                .bind::<diesel::sql_types::Text, _>(email)
                .sql(")"),
        )
        .select((customers::id, customers::role))
        .first(&mut conn)
        .await
        .optional()?;
    row.map(|(id, role)| Ok((CustomerId(id), Role::from_db(&role)?)))
        .transpose()
}
