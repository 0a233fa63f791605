//! `till token`: a dev access token for a role and subject.

use std::time::Duration;

use till_domain::types::CustomerId;

use super::{CliError, RoleArg};
use crate::app::jwt_secret;
use crate::auth::TokenService;
use crate::config::Mode;
use crate::secret::Secret;

/// Prints a token for `sub` with `role`, valid `ttl_minutes`.
pub(super) fn run(
    role: RoleArg,
    sub: uuid::Uuid,
    ttl_minutes: u64,
    secret: Option<Secret>,
) -> Result<(), CliError> {
    let secret = jwt_secret(secret.as_ref(), Mode::Dev)?;
    let token = TokenService::new(&secret)
        .mint(
            CustomerId(sub),
            role.into(),
            Duration::from_secs(ttl_minutes * 60),
        )
        .map_err(|e| CliError::Failed(e.to_string()))?;
    println!("{token}");
    Ok(())
}
