//! Account mutations: register, login, refreshToken, logout and grantRole.
//!
//! Sign-in answers carry a short-lived access token (Till's own HS256 JWT) and a
//! rotating refresh token. These mutations cost more rate-limit points than others
//! (see `complexity`), which slows password guessing from one client.

use async_graphql::{Context, ErrorExtensions, InputObject, Object, Result, ID};
use till_domain::commands::{Outcome, Registration, Session};
use till_domain::event_log::LogPoint;
use till_domain::passwords::Password;
use till_domain::types::{CustomerId, Email, Name};

use super::error::{self, Code};
use super::ids::{self, Kind};
use super::inputs::one_form;
use super::payloads::{AuthPayload, CustomerPayload, LogoutPayload};
use super::types::customer::Role;
use super::{command_context, state, AdminGuard, RequestInfo};

/// Input of `register`.
#[derive(Debug, InputObject)]
pub struct RegisterInput {
    /// Email address (unique, case-insensitive).
    pub email: String,
    /// 10 to 128 characters, at least 5 different ones, not a well-known password.
    #[graphql(secret)]
    pub password: String,
    /// Display name.
    pub name: String,
}

/// Input of `login`.
#[derive(Debug, InputObject)]
pub struct LoginInput {
    /// Account email.
    pub email: String,
    /// Account password.
    #[graphql(secret)]
    pub password: String,
}

/// Input of `refreshToken` and `logout`: a refresh token of the session.
#[derive(Debug, InputObject)]
pub struct RefreshTokenInput {
    /// The session's latest refresh token (`logout` takes any of the session's).
    #[graphql(secret)]
    pub refresh_token: String,
}

/// Input of `grantRole`.
#[derive(Debug, InputObject)]
pub struct GrantRoleInput {
    /// The account (global id).
    pub customer_id: ID,
    /// The new role.
    pub role: Role,
}

fn signed_in(ctx: &Context<'_>, session: Session, at: Option<LogPoint>) -> Result<AuthPayload> {
    let st = state(ctx)?;
    let access_token = st
        .tokens
        .mint_for(
            session.customer_id,
            session.role,
            Some(session.refresh.family),
            st.access_token_ttl,
        )
        .map_err(|_| error::coded(Code::Internal, "internal error"))?;
    Ok(AuthPayload {
        access_token,
        expires_in: i64::try_from(st.access_token_ttl.as_secs()).unwrap_or(i64::MAX),
        session,
        at,
    })
}

/// Account mutations.
#[derive(Default)]
pub struct AccountMutation;

/// Account mutations.
#[Object]
impl AccountMutation {
    /// Creates a customer account and signs it in. CONFLICT when the email is taken;
    /// BAD_USER_INPUT names the rule a password breaks.
    #[graphql(complexity = 50)]
    async fn register(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new account's email, password and name.")] input: RegisterInput,
    ) -> Result<AuthPayload> {
        let email = Email::parse(&input.email).map_err(error::domain)?;
        let registration = Registration {
            password: Password::new_for(&input.password, &email).map_err(error::domain)?,
            name: Name::parse("name", &input.name).map_err(error::domain)?,
            email,
        };
        let st = state(ctx)?;
        let mut cmd = till_domain::commands::CommandContext::system("register");
        if let Some(info) = ctx.data_opt::<RequestInfo>() {
            cmd.correlation_id = info.request_id;
        }
        let Outcome { value, at } = st
            .commands
            .register(&cmd, registration, st.refresh_token_ttl)
            .await
            .map_err(error::domain)?;
        signed_in(ctx, value, Some(at))
    }

    /// Signs in with email and password (UNAUTHENTICATED, without saying which was
    /// wrong, otherwise).
    #[graphql(complexity = 50)]
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The account's email and password.")] input: Option<LoginInput>,
        #[graphql(
            desc = "Account email.",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        email: Option<String>,
        #[graphql(
            desc = "Account password.",
            secret,
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        password: Option<String>,
    ) -> Result<AuthPayload> {
        let any_flat = email.is_some() || password.is_some();
        let flat = email
            .zip(password)
            .map(|(email, password)| LoginInput { email, password });
        let LoginInput { email, password } = one_form("login", input, flat, any_flat)?;
        let st = state(ctx)?;
        let ip = ctx.data_opt::<RequestInfo>().and_then(|i| i.client_ip);
        if let Err(wait) = st.sign_in.attempt(ip, &email) {
            metrics::counter!("till_throttled_requests_total", "class" => "sign_in").increment(1);
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(error::coded(
                Code::Throttled,
                format!("too many sign-in attempts; try again in {secs} s"),
            )
            .extend_with(|_, e| e.set("retryAfter", secs)));
        }
        let session = st
            .commands
            .login(&email, &password, st.refresh_token_ttl)
            .await
            .map_err(error::domain)?;
        signed_in(ctx, session, None)
    }

    /// Exchanges a refresh token for a new access token and a new refresh token. The
    /// old refresh token stops working; presenting it again ends the whole session.
    #[graphql(complexity = 20)]
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session's latest refresh token.")] input: Option<RefreshTokenInput>,
        #[graphql(
            desc = "The latest refresh token of the session.",
            secret,
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        refresh_token: Option<String>,
    ) -> Result<AuthPayload> {
        let any_flat = refresh_token.is_some();
        let flat = refresh_token.map(|refresh_token| RefreshTokenInput { refresh_token });
        let RefreshTokenInput { refresh_token } = one_form("refreshToken", input, flat, any_flat)?;
        let st = state(ctx)?;
        let session = st
            .commands
            .refresh(&refresh_token, st.refresh_token_ttl)
            .await
            .map_err(error::domain)?;
        signed_in(ctx, session, None)
    }

    /// Ends the session of a refresh token (every refresh token of that sign-in).
    /// Access tokens already issued work until they expire (15 minutes by default).
    #[graphql(complexity = 10)]
    async fn logout(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A refresh token of the session.")] input: Option<RefreshTokenInput>,
        #[graphql(
            desc = "A refresh token of the session.",
            secret,
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        refresh_token: Option<String>,
    ) -> Result<LogoutPayload> {
        let any_flat = refresh_token.is_some();
        let flat = refresh_token.map(|refresh_token| RefreshTokenInput { refresh_token });
        let RefreshTokenInput { refresh_token } = one_form("logout", input, flat, any_flat)?;
        let revoked = state(ctx)?
            .commands
            .logout(&refresh_token)
            .await
            .map_err(error::domain)?;
        Ok(LogoutPayload { revoked })
    }

    /// Sets an account's role (ADMIN only). Takes effect at the account's next sign-in
    /// or token refresh.
    #[graphql(guard = "AdminGuard", complexity = 10)]
    async fn grant_role(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The account and its new role.")] input: Option<GrantRoleInput>,
        #[graphql(
            desc = "The account (global id).",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        customer_id: Option<ID>,
        #[graphql(
            desc = "The new role.",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        role: Option<Role>,
    ) -> Result<CustomerPayload> {
        let any_flat = customer_id.is_some() || role.is_some();
        let flat = customer_id
            .zip(role)
            .map(|(customer_id, role)| GrantRoleInput { customer_id, role });
        let GrantRoleInput { customer_id, role } = one_form("grantRole", input, flat, any_flat)?;
        let cmd = command_context(ctx)?;
        let id = CustomerId(ids::decode(Kind::Customer, &customer_id, "customerId")?);
        let out =
            super::payloads::perform(ctx, state(ctx)?.commands.grant_role(&cmd, id, role.into()))
                .await?;
        Ok(CustomerPayload {
            at: out.at,
            id: out.value,
        })
    }
}
