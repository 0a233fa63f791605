//! Account commands.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{on_unique, CommandContext, Commands, Outcome};
use crate::error::DomainError;
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

/// Inserts an account inside the caller's transaction; returns it with its
/// `CustomerRegistered` event.
pub(super) async fn insert_customer(
    conn: &mut AsyncPgConnection,
    input: &NewCustomer,
) -> Result<(CustomerId, DomainEvent), DomainError> {
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
    let registered = DomainEvent::CustomerRegistered {
        customer_id: id.0,
        email: input.email.as_str().to_owned(),
        name: input.name.as_str().to_owned(),
        role: input.role.as_str().to_owned(),
    };
    Ok((id, registered))
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
        self.execute(ctx, async |conn| {
            let (id, registered) = insert_customer(conn, &input).await?;
            Ok((id, vec![registered]))
        })
        .await
    }
}
