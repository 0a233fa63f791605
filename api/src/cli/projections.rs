//! `till projections status | catch-up | rebuild`: where each projection stands, and
//! the long runs that move it, with progress bars.

use till_read_models::{ProjectorSettings, ReadSide};

use super::{CliError, ProjectionsAction};
use crate::app::Database;
use crate::config::{DbConfig, Mode};

/// Runs `action`, then prints every projection's status.
pub(super) async fn run(
    db: DbConfig,
    action: ProjectionsAction,
    projections: &[till_read_models::Projection],
    batch_size: Option<i64>,
) -> Result<(), CliError> {
    if !matches!(action, ProjectionsAction::Rebuild)
        && (!projections.is_empty() || batch_size.is_some())
    {
        return Err(CliError::Failed(
            "--projection and --batch-size only apply to `till projections rebuild`".into(),
        ));
    }
    let database = Database::resolve(&db, Mode::Dev).await?;
    let pool = till_domain::db::pool(&database.url, &db.pool_settings());
    match action {
        ProjectionsAction::CatchUp => catch_up(&pool, &database.url).await?,
        ProjectionsAction::Rebuild => {
            rebuild(&database.url, projections, batch_size).await?;
        }
        ProjectionsAction::Status => {}
    }
    let status = ReadSide::builder(pool, database.url.clone())
        .build()
        .reads
        .projection_status()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    println!(
        "{:<18} {:>10} {:>10}  {:<32}  last rebuild",
        "projection", "position", "lag", "updated"
    );
    for s in status {
        let updated = s
            .updated_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "never".into());
        let rebuild = s
            .rebuild
            .map_or_else(|| "never".to_owned(), describe_rebuild);
        println!(
            "{:<18} {:>10} {:>10}  {updated:<32}  {rebuild}",
            s.name, s.position, s.lag_events
        );
    }
    Ok(())
}

fn describe_rebuild(r: till_read_models::RebuildStatus) -> String {
    use till_read_models::RebuildState;
    match r.state {
        RebuildState::Running => format!(
            "running ({:?}, {}/{} events) since {}",
            r.phase,
            r.events_applied,
            r.events_total,
            r.started_at.to_rfc3339()
        ),
        RebuildState::Done => format!(
            "done at {} ({} events)",
            r.finished_at.unwrap_or(r.updated_at).to_rfc3339(),
            r.events_applied
        ),
        RebuildState::Failed => format!(
            "failed at {}: {}",
            r.finished_at.unwrap_or(r.updated_at).to_rfc3339(),
            r.error.as_deref().unwrap_or("unknown")
        ),
    }
}

/// `till projections rebuild`: one projection after the other, each with a progress
/// bar; Ctrl-C stops the running one (its live tables stay as they were).
async fn rebuild(
    url: &str,
    projections: &[till_read_models::Projection],
    batch_size: Option<i64>,
) -> Result<(), CliError> {
    use till_read_models::{Projection, Rebuild, RebuildPhase, RebuildSettings};
    let chosen: Vec<Projection> = if projections.is_empty() {
        Projection::ALL.to_vec()
    } else {
        projections.to_vec()
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping the rebuild (the live tables stay as they are)");
            let _ = stop_tx.send(true);
        }
    });
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:>16} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta}) {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    let mut outcome = Ok(());
    for p in chosen {
        let defaults = RebuildSettings::default();
        let settings = RebuildSettings {
            batch_size: batch_size.unwrap_or(defaults.batch_size),
            ..defaults
        };
        let rebuild = Rebuild::start(url, p, settings)
            .await
            .map_err(|e| CliError::Failed(format!("{}: {e}", p.name())))?;
        let pb = indicatif::ProgressBar::new(rebuild.total().max(0) as u64);
        pb.set_style(style.clone());
        pb.set_prefix(p.name());
        let mut on_progress = |progress: till_read_models::RebuildProgress| {
            pb.set_length(progress.total.max(0) as u64);
            pb.set_position(progress.applied.max(0) as u64);
            pb.set_message(match progress.phase {
                RebuildPhase::Copying => "copying",
                RebuildPhase::Indexing => "building indexes",
                RebuildPhase::Swapping => "swapping in",
                RebuildPhase::Finished => "swapped in",
            });
        };
        match rebuild.run(&mut on_progress, &stop).await {
            Ok(report) => {
                pb.finish();
                let secs = report.replay.as_secs_f64().max(1e-9);
                println!(
                    "{}: {} events replayed in {:.2}s ({:.0} events/s), {:.2}s in all; swapped in",
                    p.name(),
                    report.events,
                    report.replay.as_secs_f64(),
                    report.events as f64 / secs,
                    report.elapsed.as_secs_f64()
                );
            }
            Err(e) => {
                pb.abandon();
                outcome = Err(CliError::Failed(format!("{}: {e}", p.name())));
                break;
            }
        }
    }
    interrupt.abort();
    outcome
}

pub(super) async fn catch_up(pool: &till_domain::db::PgPool, url: &str) -> Result<(), CliError> {
    let total = {
        ReadSide::builder(pool.clone(), url)
            .build()
            .reads
            .projection_status()
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?
            .iter()
            .map(|s| s.lag_events)
            .sum::<i64>()
    };
    let pb = indicatif::ProgressBar::new(total.max(0) as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>10} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix("projecting");
    let projector = ReadSide::builder(pool.clone(), url)
        .projector(ProjectorSettings {
            batch_size: 2000,
            ..ProjectorSettings::default()
        })
        .build()
        .projector;
    // Projections are independent: catch them up side by side.
    let runs = till_read_models::Projection::ALL.map(|p| {
        let projector = projector.clone();
        let pb = pb.clone();
        async move {
            loop {
                let out = projector.run_batch(p).await?;
                pb.inc(out.applied as u64);
                if out.applied == 0 {
                    return Ok::<_, till_read_models::ReadError>(());
                }
            }
        }
    });
    for result in futures_util::future::join_all(runs).await {
        result.map_err(|e| CliError::Failed(e.to_string()))?;
    }
    projector
        .catch_up_all()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    pb.finish();
    Ok(())
}
