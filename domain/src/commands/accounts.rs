//! Accounts and sessions: registration, password sign-in, rotating refresh tokens,
//! role grants and accounts of external (OIDC) identities.
//!
//! A refresh token is 32 random bytes (base64url); only its SHA-256 is stored. Each
//! exchange marks the presented token rotated and issues a successor in the same
//! family; presenting a rotated or revoked token again means it leaked, so the whole
//! family is revoked (the thief's and the owner's tokens alike) and both must sign in.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::customers::insert_customer;
use super::{CommandContext, Commands, NewCustomer, Outcome};
use crate::db::prepared::Reuse;
use crate::db::transactions;
use crate::error::DomainError;
use crate::events::DomainEvent;
use crate::passwords::{self, Password};
use crate::schema::{customers, external_identities, refresh_tokens};
use crate::types::{CustomerId, Email, Name, Role};

/// The one message for every failed sign-in, so callers learn nothing about which
/// part was wrong.
const BAD_CREDENTIALS: &str = "the email or password is wrong";
/// The one message for every refused refresh token.
const BAD_REFRESH: &str = "the refresh token is invalid, expired or revoked; sign in again";

/// A freshly issued refresh token (the only time its text exists outside the client).
pub struct RefreshToken {
    /// The token to hand to the client.
    pub token: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// The session it belongs to (its family: every successor keeps it), which access
    /// tokens carry so that ending the session ends them too.
    pub family: Uuid,
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshToken")
            .field("token", &"***")
            .field("expires_at", &self.expires_at)
            .field("family", &self.family)
            .finish()
    }
}

/// A signed-in session: who, with which role, and the refresh token to keep it alive.
#[derive(Debug)]
pub struct Session {
    /// The account.
    pub customer_id: CustomerId,
    /// Its current role.
    pub role: Role,
    /// The refresh token.
    pub refresh: RefreshToken,
}

/// Input of `register`.
#[derive(Debug)]
pub struct Registration {
    /// Email (unique, case-insensitive).
    pub email: Email,
    /// Display name.
    pub name: Name,
    /// The password (already checked against the policy).
    pub password: Password,
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

async fn issue_refresh(
    conn: &mut AsyncPgConnection,
    customer: CustomerId,
    family: Uuid,
    ttl: Duration,
) -> Result<RefreshToken, DomainError> {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(30));
    let expires_at = Utc::now() + ttl;
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::id.eq(Uuid::now_v7()),
            refresh_tokens::family_id.eq(family),
            refresh_tokens::customer_id.eq(customer.0),
            refresh_tokens::token_hash.eq(digest(&token)),
            refresh_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .await?;
    Ok(RefreshToken {
        token,
        expires_at,
        family,
    })
}

/// Revokes a session (a refresh-token family) and tells every process, so access
/// tokens of that session stop working at once (`till_auth`, `s:<family>`).
async fn revoke_family(conn: &mut AsyncPgConnection, family: Uuid) -> Result<usize, DomainError> {
    let n = diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(diesel::dsl::now))
    .execute(conn)
    .await?;
    notify_auth(conn, &format!("s:{family}")).await?;
    Ok(n)
}

/// Notifies `till_auth` (delivered when the transaction commits).
async fn notify_auth(conn: &mut AsyncPgConnection, payload: &str) -> Result<(), DomainError> {
    diesel::sql_query("SELECT pg_notify($1, $2)")
        .bind::<diesel::sql_types::Text, _>(crate::channels::AUTH_CHANNEL)
        .bind::<diesel::sql_types::Text, _>(payload)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Queryable)]
struct TokenRow {
    family: Uuid,
    customer: Uuid,
    expires_at: DateTime<Utc>,
    rotated: Option<DateTime<Utc>>,
    revoked: Option<DateTime<Utc>>,
}

enum Exchange {
    Rotated(Session),
    /// A rotated or revoked token came back: its family is now revoked.
    Reused,
    Refused,
}

impl Commands {
    /// Creates a CUSTOMER account with a password and signs it in.
    #[tracing::instrument(name = "command", skip_all, fields(command = "register"))]
    pub async fn register(
        &self,
        ctx: &CommandContext,
        input: Registration,
        refresh_ttl: Duration,
    ) -> Result<Outcome<Session>, DomainError> {
        let hash = passwords::hash(&input.password).await?;
        let created = self
            .create_customer(
                ctx,
                NewCustomer {
                    email: input.email,
                    name: input.name,
                    role: Role::Customer,
                    password_hash: Some(hash),
                },
            )
            .await?;
        let refresh = self.start_session(created.value, refresh_ttl).await?;
        Ok(Outcome {
            value: Session {
                customer_id: created.value,
                role: Role::Customer,
                refresh,
            },
            at: created.at,
        })
    }

    /// Signs in with email and password. Unknown emails, accounts without a password
    /// and wrong passwords all fail the same way, after the same hashing work.
    #[tracing::instrument(name = "command", skip_all, fields(command = "login"))]
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        refresh_ttl: Duration,
    ) -> Result<Session, DomainError> {
        let email = email.trim().to_lowercase();
        let found: Option<(Uuid, String, Option<String>)> = self
            .run(|mut conn| {
                let email = email.clone();
                async move {
                    Ok(customers::table
                        .filter(lower(customers::email).eq(email))
                        .select((customers::id, customers::role, customers::password_hash))
                        .first(&mut conn)
                        .await
                        .optional()?)
                }
            })
            .await?;
        let stored = found.as_ref().and_then(|(_, _, h)| h.as_deref());
        if !passwords::verify(password, stored).await? {
            return Err(DomainError::Unauthenticated(BAD_CREDENTIALS.into()));
        }
        let Some((id, role, _)) = found else {
            return Err(DomainError::Unauthenticated(BAD_CREDENTIALS.into()));
        };
        let id = CustomerId(id);
        let role = Role::from_db(&role)?;
        let refresh = self.start_session(id, refresh_ttl).await?;
        Ok(Session {
            customer_id: id,
            role,
            refresh,
        })
    }

    /// Starts a new refresh-token family for an account.
    pub async fn start_session(
        &self,
        customer: CustomerId,
        ttl: Duration,
    ) -> Result<RefreshToken, DomainError> {
        self.run(
            |mut conn| async move { issue_refresh(&mut conn, customer, Uuid::now_v7(), ttl).await },
        )
        .await
    }

    /// Exchanges a refresh token for a successor (and the account's current role).
    /// Reusing an exchanged token revokes its whole family.
    #[tracing::instrument(name = "command", skip_all, fields(command = "refresh"))]
    pub async fn refresh(&self, token: &str, ttl: Duration) -> Result<Session, DomainError> {
        let hash = digest(token);
        let result = self
            .run(|mut conn| {
                let hash = hash.clone();
                async move {
                    transactions::transaction(&mut conn, async |conn| {
                        let row: Option<TokenRow> = refresh_tokens::table
                            .filter(refresh_tokens::token_hash.eq(&hash))
                            .select((
                                refresh_tokens::family_id,
                                refresh_tokens::customer_id,
                                refresh_tokens::expires_at,
                                refresh_tokens::rotated_at,
                                refresh_tokens::revoked_at,
                            ))
                            .for_update()
                            .first(conn)
                            .await
                            .optional()?;
                        let Some(TokenRow {
                            family,
                            customer,
                            expires_at,
                            rotated,
                            revoked,
                        }) = row
                        else {
                            return Ok(Exchange::Refused);
                        };
                        if rotated.is_some() || revoked.is_some() {
                            let n = revoke_family(conn, family).await?;
                            tracing::warn!(%family, %customer, revoked = n, "refresh token reused; family revoked");
                            return Ok(Exchange::Reused);
                        }
                        if expires_at <= Utc::now() {
                            return Ok(Exchange::Refused);
                        }
                        diesel::update(refresh_tokens::table.filter(refresh_tokens::token_hash.eq(&hash)))
                            .set(refresh_tokens::rotated_at.eq(diesel::dsl::now))
                            .execute(conn)
                            .await?;
                        let role: String = customers::table
                            .find(customer)
                            .select(customers::role)
                            .first(conn)
                            .await?;
                        let refresh = issue_refresh(conn, CustomerId(customer), family, ttl).await?;
                        Ok(Exchange::Rotated(Session {
                            customer_id: CustomerId(customer),
                            role: Role::from_db(&role)?,
                            refresh,
                        }))
                    })
                    .await
                }
            })
            .await?;
        match result {
            Exchange::Rotated(s) => Ok(s),
            Exchange::Reused | Exchange::Refused => {
                Err(DomainError::Unauthenticated(BAD_REFRESH.into()))
            }
        }
    }

    /// True when the session (a refresh-token family) has ended, or never existed.
    pub async fn session_ended(&self, session: Uuid) -> Result<bool, DomainError> {
        self.run(|mut conn| async move {
            let revoked: Option<bool> = refresh_tokens::table
                .filter(refresh_tokens::family_id.eq(session))
                .select(diesel::dsl::sql::<
                    diesel::sql_types::Nullable<diesel::sql_types::Bool>,
                >("bool_or(revoked_at IS NOT NULL)"))
                .first(&mut conn)
                .await?;
            Ok(revoked.unwrap_or(true))
        })
        .await
    }

    /// An account's current role (`None` when there is no such account).
    pub async fn current_role(&self, account: CustomerId) -> Result<Option<Role>, DomainError> {
        self.run(|mut conn| async move {
            let role: Option<String> = customers::table
                .find(account.0)
                .select(customers::role)
                .first(&mut conn)
                .await
                .optional()?;
            role.map(|r| Role::from_db(&r)).transpose()
        })
        .await
    }

    /// Ends the session a refresh token belongs to (its whole family). True when a
    /// live session was ended; unknown tokens are not an error (logout is idempotent).
    #[tracing::instrument(name = "command", skip_all, fields(command = "logout"))]
    pub async fn logout(&self, token: &str) -> Result<bool, DomainError> {
        let hash = digest(token);
        self.run(|mut conn| {
            let hash = hash.clone();
            async move {
                let family: Option<Uuid> = refresh_tokens::table
                    .filter(refresh_tokens::token_hash.eq(&hash))
                    .select(refresh_tokens::family_id)
                    .first(&mut conn)
                    .await
                    .optional()?;
                match family {
                    Some(f) => Ok(revoke_family(&mut conn, f).await? > 0),
                    None => Ok(false),
                }
            }
        })
        .await
    }

    /// Changes an account's role (ADMIN only). Sessions keep working with the new role:
    /// every process applies it to the account's access tokens within moments.
    #[tracing::instrument(name = "command", skip_all, fields(command = "grant_role"))]
    pub async fn grant_role(
        &self,
        ctx: &CommandContext,
        customer: CustomerId,
        role: Role,
    ) -> Result<Outcome<CustomerId>, DomainError> {
        ctx.require_admin()?;
        if ctx.user_id() == Some(customer) && role != Role::Admin {
            return Err(DomainError::InvalidState(
                "administrators cannot lower their own role; ask another administrator".into(),
            ));
        }
        self.execute(ctx, async |conn| {
            let from: Option<String> = customers::table
                .find(customer.0)
                .select(customers::role)
                .for_update()
                .first(conn)
                .await
                .optional()?;
            let from = from.ok_or_else(|| DomainError::not_found("customer", customer.0))?;
            diesel::update(customers::table.find(customer.0))
                .set(customers::role.eq(role.as_str()))
                .execute(conn)
                .await?;
            // Every process re-reads the role at once (access tokens carry
            // the role at issue; the current one applies).
            notify_auth(conn, &format!("a:{}", customer.0)).await?;
            Ok((
                customer,
                vec![DomainEvent::RoleGranted {
                    customer_id: customer.0,
                    from,
                    role: role.as_str().to_owned(),
                }],
            ))
        })
        .await
    }

    /// The account of an external identity, created on first sight with the email the
    /// issuer vouched for. An existing password account with the same email is never
    /// taken over: that is a CONFLICT the people involved must resolve.
    pub async fn account_for_external(
        &self,
        issuer: &str,
        subject: &str,
        email: Option<&Email>,
        name: &Name,
        role: Role,
    ) -> Result<CustomerId, DomainError> {
        let known: Option<Uuid> = self
            .run(|mut conn| async move {
                Ok(external_identities::table
                    .find((issuer, subject))
                    .select(external_identities::customer_id)
                    .first(&mut conn)
                    .await
                    .optional()?)
            })
            .await?;
        if let Some(id) = known {
            return Ok(CustomerId(id));
        }
        let email = email.ok_or_else(|| DomainError::Validation {
            field: "token",
            message: "a first sign-in through an external issuer needs an `email` claim".into(),
        })?;
        let input = NewCustomer {
            email: email.clone(),
            name: name.clone(),
            role,
            password_hash: None,
        };
        // Account and identity in one transaction: of two concurrent first sign-ins one
        // waits on the email's unique index, fails, and finds the other's identity.
        let created = self
            .execute(&CommandContext::system("oidc"), async |conn| {
                let (id, registered) = insert_customer(conn, &input).await?;
                diesel::insert_into(external_identities::table)
                    .values((
                        external_identities::issuer.eq(issuer),
                        external_identities::subject.eq(subject),
                        external_identities::customer_id.eq(id.0),
                    ))
                    .execute(conn)
                    .await?;
                Ok((id, vec![registered]))
            })
            .await;
        match created {
            Err(DomainError::Conflict(_)) => self
                .run(|mut conn| async move {
                    external_identities::table
                        .find((issuer, subject))
                        .select(external_identities::customer_id)
                        .first(&mut conn)
                        .await
                        .optional()?
                        .map(CustomerId)
                        .ok_or_else(|| {
                            DomainError::Conflict(
                                "an account with this email already exists; sign in with its password"
                                    .into(),
                            )
                        })
                })
                .await,
            other => other.map(|out| out.value),
        }
    }

    /// Deletes refresh tokens that expired more than a day ago, at most `limit` rows.
    pub async fn purge_refresh_tokens(&self, limit: i64) -> Result<usize, DomainError> {
        self.run(|mut conn| async move {
            Ok(diesel::sql_query(
                "DELETE FROM refresh_tokens WHERE id IN (SELECT id FROM refresh_tokens \
                 WHERE expires_at < now() - interval '1 day' LIMIT $1)",
            )
            .bind::<diesel::sql_types::BigInt, _>(limit)
            .prepared()
            .execute(&mut conn)
            .await?)
        })
        .await
    }
}
