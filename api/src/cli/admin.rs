//! `till admin create`: the first ADMIN account of a production database.

use till_domain::types::Role;

use super::CliError;
use crate::app::Database;
use crate::config::{DbConfig, Mode};
use crate::secret::Secret;

pub(super) async fn create(
    db: &DbConfig,
    email: &str,
    name: &str,
    password: Option<Secret>,
    password_file: Option<std::path::PathBuf>,
) -> Result<(), CliError> {
    use till_domain::commands::{CommandContext, NewCustomer};
    use till_domain::passwords::{self, Password};
    use till_domain::types::{Email, Name};

    let fail = |e: till_domain::DomainError| CliError::Failed(e.to_string());
    let email = Email::parse(email).map_err(fail)?;
    let name = Name::parse("name", name).map_err(fail)?;
    let given = Secret::resolve(password.as_ref(), password_file.as_deref(), "password")
        .map_err(CliError::Failed)?;
    let generated = given.is_none();
    let plain = match given {
        Some(p) => p.expose().to_owned(),
        None => {
            use base64::Engine as _;
            use rand::RngCore;
            let mut raw = [0u8; 18];
            rand::thread_rng().fill_bytes(&mut raw);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        }
    };
    let password = Password::new_for(&plain, &email).map_err(fail)?;
    let hash = passwords::hash(&password).await.map_err(fail)?;
    let database = Database::resolve(db, Mode::Dev).await?;
    till_domain::db::migrate(&database.url)
        .await
        .map_err(fail)?;
    let pool = till_domain::db::pool(&database.url, &db.pool_settings());
    let commands = till_domain::commands::Commands::new(pool);
    let created = commands
        .create_customer(
            &CommandContext::system("admin-cli"),
            NewCustomer {
                email: email.clone(),
                name,
                role: Role::Admin,
                password_hash: Some(hash),
            },
        )
        .await
        .map_err(|e| match e {
            till_domain::DomainError::Conflict(_) => CliError::Failed(format!(
                "{} is already registered; an ADMIN can promote it with the grantRole mutation",
                email.as_str()
            )),
            other => fail(other),
        })?;
    println!("created ADMIN {} ({})", email.as_str(), created.value);
    if generated {
        println!("password (shown once): {plain}");
    }
    Ok(())
}
