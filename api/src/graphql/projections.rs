//! Projections in the back office: `projections` (checkpoint, lag and last rebuild of
//! each) and `rebuildProjection` (ADMIN), which rebuilds one from the whole event log
//! without downtime and reports its progress in `projections`.

use async_graphql::{Context, InputObject, Object, Result};
use till_read_models::Projection;

use super::error::{self, coded, Code};
use super::payloads::ProjectionRebuildPayload;
use super::types::projections::{ProjectionName, ProjectionStatus};
use super::{state, AdminGuard, StaffGuard};

/// Projection reads of the back office.
#[derive(Default)]
pub struct ProjectionsQuery;

/// Projection reads of the back office.
#[Object]
impl ProjectionsQuery {
    /// Checkpoint, lag and last rebuild of each projection (back office).
    #[graphql(guard = "StaffGuard")]
    async fn projections(&self, ctx: &Context<'_>) -> Result<Vec<ProjectionStatus>> {
        let rows = state(ctx)?
            .reads
            .projection_status()
            .await
            .map_err(error::read)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}

/// Projection maintenance of the back office.
#[derive(Default)]
pub struct ProjectionsMutation;

/// Projection maintenance of the back office.
/// Input of `startProjectionRebuild`.
#[derive(Debug, InputObject)]
pub struct StartProjectionRebuildInput {
    /// The projection to rebuild.
    pub projection: ProjectionName,
}

#[Object]
impl ProjectionsMutation {
    /// Rebuilds a projection from the whole event log without downtime (ADMIN only):
    /// new tables are built aside while the live ones keep serving and following the
    /// log, then swapped in; every replica drops what it cached. Returns at once with
    /// the rebuild running; follow it in `projections { rebuild { ... } }`. CONFLICT when
    /// a rebuild of it is already running.
    #[graphql(guard = "AdminGuard", complexity = 50)]
    async fn start_projection_rebuild(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The projection to rebuild.")] input: StartProjectionRebuildInput,
    ) -> Result<ProjectionRebuildPayload> {
        let projection = self.rebuild_projection(ctx, input.projection).await?;
        Ok(ProjectionRebuildPayload { projection })
    }

    /// Rebuilds a projection (ADMIN only); see `startProjectionRebuild`.
    #[graphql(
        guard = "AdminGuard",
        complexity = 50,
        deprecation = "use `startProjectionRebuild`, which returns a payload; this goes in the next release"
    )]
    async fn rebuild_projection(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The projection to rebuild.")] projection: ProjectionName,
    ) -> Result<ProjectionStatus> {
        let st = state(ctx)?;
        let projection = Projection::from(projection);
        st.rebuilds.start(projection).await.map_err(error::read)?;
        st.reads
            .projection_status()
            .await
            .map_err(error::read)?
            .into_iter()
            .find(|s| s.name == projection.name())
            .map(Into::into)
            .ok_or_else(|| coded(Code::Internal, "the projection's status is missing"))
    }
}
