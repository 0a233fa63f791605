//! `till healthcheck`: exits 0 when the server's `/healthz` answers (for container
//! health checks without curl).

use std::time::Duration;

use super::CliError;

pub(super) async fn run(url: Option<String>) -> Result<(), CliError> {
    let url = url.unwrap_or_else(|| {
        let addr = std::env::var("TILL_ADMIN_LISTEN")
            .or_else(|_| std::env::var("TILL_LISTEN"))
            .unwrap_or_else(|_| "127.0.0.1:8080".into());
        let port = addr.rsplit(':').next().unwrap_or("8080").to_owned();
        format!("http://127.0.0.1:{port}/healthz")
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| CliError::Failed(e.to_string()))?;
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(CliError::Failed(format!("{url} answered {}", r.status()))),
        Err(e) => Err(CliError::Failed(format!("{url}: {e}"))),
    }
}
