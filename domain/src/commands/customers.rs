//! Account commands.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{begin, finish, on_unique, CommandContext, Commands, Outcome};
use crate::db::plans;
use crate::error::DomainError;
use crate::event_log::{self, EventMeta, LogPoint};
use crate::events::DomainEvent;
use crate::schema::customers;
use crate::types::{CustomerId, Email, Name, Role};

/// Input of `create_customer`.
#[derive(Debug, Clone)]
pub struct NewCustomer {
    /// Unique (case-insensitively) email.
    pub email: Email,
    /// Display name.
    pub name: Name,
    /// Role of the account.
    pub role: Role,
    /// An argon2id PHC string, when the account can log in with a password.
    pub password_hash: Option<String>,
}

/// Inserts an account and appends `CustomerRegistered`, inside the caller's transaction.
pub(super) async fn insert_customer(
    conn: &mut AsyncPgConnection,
    meta: &EventMeta,
    input: &NewCustomer,
) -> Result<(CustomerId, LogPoint), DomainError> {
    let id = CustomerId::new();
    diesel::insert_into(customers::table)
        .values((
            customers::id.eq(id.0),
            customers::email.eq(input.email.as_str()),
            customers::name.eq(input.name.as_str()),
            customers::role.eq(input.role.as_str()),
            customers::password_hash.eq(input.password_hash.as_deref()),
        ))
        .execute(conn)
        .await
        .map_err(|e| {
            on_unique(e, "customers_email_lower_key", || {
                DomainError::Conflict("that email is already registered".into())
            })
        })?;
    let at = event_log::append(
        conn,
        meta,
        &[DomainEvent::CustomerRegistered {
            customer_id: id.0,
            email: input.email.as_str().to_owned(),
            name: input.name.as_str().to_owned(),
            role: input.role.as_str().to_owned(),
        }],
    )
    .await?;
    Ok((id, at))
}

impl Commands {
    /// Creates an account. Only staff (or the system) may create STAFF or ADMIN accounts.
    #[tracing::instrument(name = "command", skip_all, fields(command = "create_customer"))]
    pub async fn create_customer(
        &self,
        ctx: &CommandContext,
        input: NewCustomer,
    ) -> Result<Outcome<CustomerId>, DomainError> {
        if input.role.is_staff() {
            ctx.require_staff()?;
        }
        let meta = ctx.meta();
        self.run(|mut conn| {
            let input = input.clone();
            let meta = meta.clone();
            async move {
                plans::transaction(&mut conn, async |conn| {
                    begin(conn, ctx).await?;
                    let (id, at) = insert_customer(conn, &meta, &input).await?;
                    finish(conn, ctx, Outcome { value: id, at }).await
                })
                .await
            }
        })
        .await
    }
}
