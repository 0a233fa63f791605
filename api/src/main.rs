//! `till`: see `till --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Telemetry first, outside the async runtime: the OTLP batch exporter runs its own
    // blocking HTTP client on its own thread.
    till_api::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("till: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(till_api::cli::run());
    drop(runtime);
    till_api::telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("till: {e}");
            ExitCode::FAILURE
        }
    }
}
