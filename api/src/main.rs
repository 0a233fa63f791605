//! `till`: see `till --help`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    till_api::telemetry::init();
    match till_api::cli::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("till: {e}");
            ExitCode::FAILURE
        }
    }
}
