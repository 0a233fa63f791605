//! What a valid access token may still do: its account's current role, and whether its
//! session still exists. Access tokens are short-lived but not revocable by themselves;
//! this check makes `logout` and `grantRole` take effect within moments on every
//! replica, for HTTP requests and open WebSockets alike.
//!
//! Both answers are cached (bounded, with a time to live as a backstop) and dropped
//! when the account commands notify `till_auth` (`s:<session>` when a session ends,
//! `a:<account>` when a role changes); the process's LISTEN connection hands the
//! payloads over, and a reconnect (when notifications may have been lost) drops all.

use std::time::Duration;

use till_domain::channels::AUTH_CHANNEL;
use till_domain::commands::Commands;
use till_domain::db::listen::{Listener, RECONNECTED};
use till_domain::types::{CustomerId, Role};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::AuthError;

/// Most accounts and sessions remembered.
const CAPACITY: u64 = 100_000;
/// Longest an answer is reused should a notification be lost without a reconnect.
const TIME_TO_LIVE: Duration = Duration::from_secs(30);

/// A change that may end or alter what a token can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This session ended.
    Session(Uuid),
    /// This account's role changed.
    Account(Uuid),
    /// Anything may have changed (the notification connection was re-established).
    All,
}

impl Change {
    fn parse(payload: &str) -> Option<Self> {
        if payload == RECONNECTED {
            return Some(Self::All);
        }
        let (kind, id) = payload.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "s" => Some(Self::Session(id)),
            "a" => Some(Self::Account(id)),
            _ => None,
        }
    }

    /// True when it concerns `account` or `session`.
    pub fn touches(self, account: CustomerId, session: Option<Uuid>) -> bool {
        match self {
            Self::All => true,
            Self::Account(id) => id == account.0,
            Self::Session(id) => Some(id) == session,
        }
    }
}

/// The current role of accounts and the state of sessions; cheap to clone.
#[derive(Clone)]
pub struct AccessCheck {
    commands: Commands,
    roles: moka::future::Cache<Uuid, Option<Role>>,
    ended: moka::future::Cache<Uuid, bool>,
    changes: broadcast::Sender<Change>,
}

impl AccessCheck {
    /// A check reading through `commands`.
    pub fn new(commands: Commands) -> Self {
        Self {
            commands,
            roles: moka::future::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(TIME_TO_LIVE)
                .build(),
            ended: moka::future::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(TIME_TO_LIVE)
                .build(),
            changes: broadcast::channel(1024).0,
        }
    }

    /// Follows `till_auth` on `listener` until `stop`, dropping what each notification
    /// makes stale and passing it on to [`AccessCheck::changes`].
    pub fn follow(
        &self,
        listener: &Listener,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let mut payloads = listener.subscribe_payloads(AUTH_CHANNEL, 1024);
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    p = payloads.recv() => match p {
                        Ok(p) => Change::parse(&p),
                        Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::All),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = stop.changed() => return,
                };
                if let Some(change) = change {
                    me.apply(change).await;
                }
            }
        })
    }

    /// Drops what `change` makes stale and tells the open connections.
    pub async fn apply(&self, change: Change) {
        match change {
            Change::Session(id) => self.ended.invalidate(&id).await,
            Change::Account(id) => self.roles.invalidate(&id).await,
            Change::All => {
                self.roles.invalidate_all();
                self.ended.invalidate_all();
            }
        }
        let _ = self.changes.send(change);
    }

    /// Every change from now on (for long-lived connections to re-check themselves).
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// The role `account` has now, when its token's `session` (if it names one) is
    /// still open; `None` when the session ended or the account is gone.
    pub async fn current_role(
        &self,
        account: CustomerId,
        session: Option<Uuid>,
    ) -> Result<Option<Role>, AuthError> {
        if let Some(session) = session {
            let ended = self
                .ended
                .try_get_with(session, self.session_ended(session))
                .await
                .map_err(|_| AuthError::Unavailable)?;
            if ended {
                return Ok(None);
            }
        }
        self.roles
            .try_get_with(account.0, self.role_of(account.0))
            .await
            .map_err(|_| AuthError::Unavailable)
    }

    async fn session_ended(&self, session: Uuid) -> Result<bool, AuthError> {
        self.commands.session_ended(session).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot check a session");
            AuthError::Unavailable
        })
    }

    async fn role_of(&self, account: Uuid) -> Result<Option<Role>, AuthError> {
        self.commands
            .current_role(CustomerId(account))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot read an account's role");
                AuthError::Unavailable
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_what_changed() {
        let id = Uuid::now_v7();
        assert_eq!(Change::parse(&format!("s:{id}")), Some(Change::Session(id)));
        assert_eq!(Change::parse(&format!("a:{id}")), Some(Change::Account(id)));
        assert_eq!(Change::parse(RECONNECTED), Some(Change::All));
        assert_eq!(Change::parse("x:1"), None);
        let account = CustomerId(id);
        assert!(Change::Account(id).touches(account, None));
        assert!(!Change::Session(id).touches(CustomerId::new(), None));
        assert!(Change::Session(id).touches(CustomerId::new(), Some(id)));
    }
}
