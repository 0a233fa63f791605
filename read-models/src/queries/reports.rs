//! Back-office reports and projection status.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use till_domain::event_log;
use till_domain::schema::projection_checkpoints as pc;

use super::ReadModels;
use crate::error::ReadError;
use crate::projections::Projection;
use crate::schema::{rm_product_sales, rm_sales_daily};
use crate::views::{DailySales, ProductSales};

/// Where one projection stands.
#[derive(Debug, Clone)]
pub struct ProjectionStatus {
    /// Its name.
    pub name: &'static str,
    /// Last applied log position.
    pub position: i64,
    /// Last applied transaction id.
    pub tx_id: i64,
    /// Events appended after its checkpoint (by position).
    pub lag_events: i64,
    /// Age of the oldest event it has not applied, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// When it last committed a batch.
    pub updated_at: Option<DateTime<Utc>>,
    /// Its last rebuild, if it had one.
    pub rebuild: Option<crate::rebuild::RebuildStatus>,
}

impl ReadModels {
    /// How long the projectors' horizon has been held, in seconds: the age of the
    /// oldest transaction on the cluster that holds a transaction id (a session's, from
    /// `pg_stat_activity`, or a prepared transaction's), 0 when none does. Projectors
    /// read only events older than every such transaction (`event_log::read_after`), so
    /// while one stays open no projection moves past it, on any database of the
    /// cluster. Sessions of other roles count only when Till's role may see them
    /// (`pg_monitor` or `pg_read_all_stats`); otherwise their start reads as unknown.
    pub async fn horizon_age(&self) -> Result<f64, ReadError> {
        #[derive(QueryableByName)]
        struct Age {
            #[diesel(sql_type = diesel::sql_types::Double)]
            seconds: f64,
        }
        let mut conn = self.pool().get().await?;
        let age = diesel::sql_query(
            "SELECT coalesce(extract(epoch FROM clock_timestamp() - least( \
               (SELECT min(xact_start) FROM pg_stat_activity WHERE backend_xid IS NOT NULL \
                  AND pid <> pg_backend_pid()), \
               (SELECT min(prepared) FROM pg_prepared_xacts))), 0)::float8 AS seconds",
        )
        .get_result::<Age>(&mut conn)
        .await?;
        Ok(age.seconds.max(0.0))
    }

    /// Sales per day in `[from, to]` (UTC days), oldest first; days without sales are
    /// omitted.
    pub async fn sales_report(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DailySales>, ReadError> {
        if to < from {
            return Err(ReadError::BadInput("`to` is before `from`".into()));
        }
        if (to - from).num_days() > 3660 {
            return Err(ReadError::BadInput(
                "a report spans at most 10 years".into(),
            ));
        }
        self.read(self.source(), async |conn| {
            Ok(rm_sales_daily::table
                .filter(rm_sales_daily::day.between(from, to))
                .order(rm_sales_daily::day.asc())
                .select(DailySales::as_select())
                .load(conn)
                .await?)
        })
        .await
    }

    /// Best-selling products by units.
    pub async fn top_products(&self, limit: i64) -> Result<Vec<ProductSales>, ReadError> {
        self.read(self.source(), async |conn| {
            Ok(rm_product_sales::table
                .filter(rm_product_sales::units.gt(0))
                .order((
                    rm_product_sales::units.desc(),
                    rm_product_sales::product_id.asc(),
                ))
                .limit(limit)
                .select(ProductSales::as_select())
                .load(conn)
                .await?)
        })
        .await
    }

    /// Checkpoint and lag of every projection (from the primary).
    pub async fn projection_status(&self) -> Result<Vec<ProjectionStatus>, ReadError> {
        let mut conn = self.pool().get().await?;
        let rows: Vec<(String, i64, i64, DateTime<Utc>)> = pc::table
            .select((pc::projection, pc::tx_id, pc::position, pc::updated_at))
            .load(&mut conn)
            .await?;
        let mut rebuilds = crate::rebuild::last_rebuilds(&mut conn).await?;
        let mut out = Vec::with_capacity(Projection::ALL.len());
        for p in Projection::ALL {
            let row = rows.iter().find(|r| r.0 == p.name());
            let (tx_id, position, updated_at) =
                row.map(|r| (r.1, r.2, Some(r.3))).unwrap_or((0, 0, None));
            let lag_events = event_log::count_after(
                &mut conn,
                event_log::LogPoint { tx_id, position },
                LAG_COUNT_CAP,
            )
            .await?;
            let lag_seconds = if lag_events > 0 {
                event_log::age_after(&mut conn, event_log::LogPoint { tx_id, position }).await?
            } else {
                0.0
            };
            out.push(ProjectionStatus {
                name: p.name(),
                position,
                tx_id,
                lag_events,
                lag_seconds,
                updated_at,
                rebuild: rebuilds
                    .iter()
                    .position(|r| r.projection == p)
                    .map(|i| rebuilds.swap_remove(i)),
            });
        }
        Ok(out)
    }
}

/// Lag counts stop at this many events (the exact figure no longer matters then).
const LAG_COUNT_CAP: i64 = 1_000_000;
