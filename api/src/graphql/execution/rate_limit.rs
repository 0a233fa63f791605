//! Cost-based rate limiting. Every operation has a static cost computed before it runs
//! (async-graphql's complexity: one point per field, multiplied by `first` on
//! connections, ten per mutation field; at least one point per request, so even
//! malformed requests are not free). Each principal has a leaky bucket (GCRA, from the
//! `governor` crate) that the cost is paid from; a request that cannot pay is refused
//! with THROTTLED before executing, and HTTP 429 with `Retry-After`. Anonymous callers
//! are keyed by their client network (an IPv6 address by its /64).
//!
//! Every response carries `extensions.cost { requestedQueryCost, throttleStatus {
//! maximumAvailable, currentlyAvailable, restoreRate } }`. Buckets live in a bounded
//! moka cache keyed by principal (account id, else client IP); an idle bucket is
//! dropped once it would be full again, so dropping it gives nobody extra points, and
//! no bucket is ever evicted for room: when the cache holds `max_principals` buckets,
//! newcomers share one overflow bucket per class until idle ones expire.
//!
//! Budgets are global across API replicas, within a tolerance: each replica learns how
//! many replicas are alive (`till_domain::replicas`, a heartbeat every second) and
//! charges `cost x replicas` from its bucket, so behind a round-robin load balancer a
//! client gets about one budget in all, not one per replica. Reports show the client's
//! share (bucket and rate divided by the replica count).
//!
//! Why over 400 lines: a third of it is its unit tests.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_graphql::extensions::ExtensionContext;
use async_graphql::indexmap::IndexMap;
use async_graphql::{Name, Response, ServerError, ValidationResult, Value};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::auth::Principal;
use crate::graphql::error::Code;
use crate::graphql::RequestInfo;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One class of principals' bucket settings.
#[derive(Debug, Clone, Copy)]
pub struct BucketSettings {
    /// Bucket size in points.
    pub max: u32,
    /// Points regained per second.
    pub restore: u32,
}

/// Settings of the limiter.
#[derive(Debug, Clone, Copy)]
pub struct RateSettings {
    /// Signed-in customers.
    pub customer: BucketSettings,
    /// STAFF and ADMIN.
    pub staff: BucketSettings,
    /// Anonymous clients, per IP.
    pub anonymous: BucketSettings,
    /// Most buckets in memory.
    pub max_principals: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(uuid::Uuid),
    Ip(IpAddr),
    Unknown,
}

/// The state of one principal's bucket after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// Cost of the request.
    pub cost: u32,
    /// Bucket size.
    pub maximum: u32,
    /// Points left.
    pub available: u32,
    /// Points regained per second.
    pub restore: u32,
    /// When refused: how long until the cost can be paid.
    pub retry_after: Option<Duration>,
}

/// The report's keys, made once (a `Name` is a shared string).
static KEYS: LazyLock<[Name; 5]> = LazyLock::new(|| {
    [
        "requestedQueryCost",
        "throttleStatus",
        "currentlyAvailable",
        "maximumAvailable",
        "restoreRate",
    ]
    .map(Name::new)
});

impl Charge {
    /// `{ requestedQueryCost, throttleStatus { currentlyAvailable, maximumAvailable,
    /// restoreRate } }`, built directly: going through a JSON value showed in a cached
    /// `product(id:)`'s profile (benches/HISTORY.md).
    fn to_value(self) -> Value {
        let [cost, status, available, maximum, restore] = &*KEYS;
        let throttle = IndexMap::from([
            (available.clone(), Value::from(self.available)),
            (maximum.clone(), Value::from(self.maximum)),
            (restore.clone(), Value::from(self.restore)),
        ]);
        Value::Object(IndexMap::from([
            (cost.clone(), Value::from(self.cost)),
            (status.clone(), Value::Object(throttle)),
        ]))
    }
}

/// The buckets of every principal.
pub struct CostLimiter {
    settings: RateSettings,
    buckets: crate::buckets::Buckets<Key, Arc<Limiter>>,
    /// One clock for every bucket: a new quanta clock reads CPUID, which showed in the
    /// checkout profile when each new bucket made its own.
    clock: DefaultClock,
    /// API replicas alive (at least 1): each client's budget is shared among them.
    replicas: AtomicU32,
}

impl CostLimiter {
    /// An empty set of buckets.
    pub fn new(settings: RateSettings) -> Self {
        let slowest = [settings.customer, settings.staff, settings.anonymous]
            .iter()
            .map(|b| f64::from(b.max) / f64::from(b.restore.max(1)))
            .fold(1.0, f64::max);
        Self {
            settings,
            // Idle this long, any bucket is full again: forgetting it changes nothing.
            buckets: crate::buckets::Buckets::new(
                settings.max_principals,
                Duration::from_secs_f64(slowest.ceil() + 1.0),
            ),
            clock: DefaultClock::default(),
            replicas: AtomicU32::new(1),
        }
    }

    /// Sets how many API replicas share each client's budget.
    pub fn set_replicas(&self, n: u32) {
        self.replicas.store(n.max(1), Ordering::Relaxed);
    }

    /// How many API replicas share each client's budget.
    pub fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed).max(1)
    }

    fn class_name(principal: &Principal) -> &'static str {
        match principal {
            p if p.is_staff() => "staff",
            Principal::User { .. } => "customer",
            Principal::Anonymous => "anonymous",
        }
    }

    /// Buckets of `bucket` per client address alone (every principal is treated as
    /// anonymous): for endpoints outside GraphQL whose callers have no account, such as
    /// inbound webhooks. At most `max_principals` are kept.
    pub fn per_address(bucket: BucketSettings, max_principals: u64) -> Self {
        Self::new(RateSettings {
            customer: bucket,
            staff: bucket,
            anonymous: bucket,
            max_principals,
        })
    }

    fn class(&self, principal: &Principal) -> BucketSettings {
        match principal {
            Principal::Anonymous => self.settings.anonymous,
            p if p.is_staff() => self.settings.staff,
            _ => self.settings.customer,
        }
    }

    /// Pays `cost` from the caller's bucket.
    pub fn charge(&self, principal: &Principal, client_ip: Option<IpAddr>, cost: u32) -> Charge {
        let class = self.class(principal);
        let key = match (principal.user_id(), client_ip) {
            (Some(id), _) => Key::User(id.0),
            (None, Some(ip)) => Key::Ip(crate::networks::network_of(ip)),
            (None, None) => Key::Unknown,
        };
        let max = NonZeroU32::new(class.max).unwrap_or(NonZeroU32::MIN);
        let restore = class.restore.max(1);
        let limiter = self.buckets.get_with(key, Self::class_name(principal), || {
            let period = Duration::from_nanos(1_000_000_000 / u64::from(restore));
            let quota = Quota::with_period(period)
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                .allow_burst(max);
            Arc::new(
                RateLimiter::direct_with_clock(quota, self.clock.clone())
                    .with_middleware::<StateInformationMiddleware>(),
            )
        });
        let cost = cost.max(1);
        // This replica's share of the client's budget: the cost counts `n` times.
        let n = self.replicas();
        let charged = cost.saturating_mul(n);
        let share = |points: u32| points / n;
        let refused = |available: u32, retry_after: Duration| Charge {
            cost,
            maximum: share(max.get()),
            available: share(available),
            restore: share(restore).max(1),
            retry_after: Some(retry_after),
        };
        match limiter.check_n(NonZeroU32::new(charged).unwrap_or(NonZeroU32::MIN)) {
            Ok(Ok(snapshot)) => Charge {
                cost,
                maximum: share(max.get()),
                available: share(snapshot.remaining_burst_capacity()),
                restore: share(restore).max(1),
                retry_after: None,
            },
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                // Points missing = wait x rate; what is there now is the rest of the cost.
                let missing = (wait.as_secs_f64() * f64::from(restore)).ceil() as u32;
                refused(charged.saturating_sub(missing), wait)
            }
            // Costs more than the bucket can ever hold: only a smaller query will do.
            Err(_) => refused(0, Duration::from_secs(u64::from(max.get() / restore) + 1)),
        }
    }

    /// Pays a priced request's `cost` from its caller's bucket: the charge, and
    /// THROTTLED (counted in `till_throttled_requests_total`) when it cannot be paid.
    pub fn pay(&self, info: &RequestInfo, cost: usize) -> (Charge, Result<(), ServerError>) {
        let c = self.charge(
            &info.principal,
            info.client_ip,
            u32::try_from(cost).unwrap_or(u32::MAX),
        );
        if c.retry_after.is_none() {
            return (c, Ok(()));
        }
        let class = Self::class_name(&info.principal);
        metrics::counter!("till_throttled_requests_total", "class" => class).increment(1);
        (c, Err(throttled(&c)))
    }
}

/// Request data of a request that was already charged: a query run again with full
/// validation after its first run raised an input error (see `http::graphql`).
pub struct Charged;

/// One request's charge: priced after validation, reported in the response.
pub(super) struct RequestCharge {
    limiter: Arc<CostLimiter>,
    charged: Mutex<Option<Charge>>,
}

impl RequestCharge {
    pub(super) fn new(limiter: Arc<CostLimiter>) -> Self {
        Self {
            limiter,
            charged: Mutex::new(None),
        }
    }

    /// Pays the validated operation's complexity from the caller's bucket; THROTTLED
    /// when it cannot be paid.
    pub(super) fn pay(
        &self,
        ctx: &ExtensionContext<'_>,
        result: &ValidationResult,
    ) -> Result<(), Vec<ServerError>> {
        let Some(info) = ctx.data_opt::<RequestInfo>() else {
            return Ok(());
        };
        if ctx.data_opt::<Charged>().is_some() {
            return Ok(());
        }
        let (charge, paid) = self.limiter.pay(info, result.complexity);
        if let Ok(mut slot) = self.charged.lock() {
            *slot = Some(charge);
        }
        paid.map_err(|e| vec![e])
    }

    /// Reports the charge in `extensions.cost`. Requests that never reached validation
    /// (parse errors, invalid documents) are charged by the HTTP layer, which knows the
    /// caller: see `charge_unpriced`.
    pub(super) fn report(&self, response: &mut Response) {
        if let Some(c) = self.charged.lock().ok().and_then(|c| *c) {
            report(&c, response);
        }
    }
}

/// Puts a charge in the response's `extensions.cost`.
pub fn report(charge: &Charge, response: &mut Response) {
    response
        .extensions
        .insert("cost".to_owned(), charge.to_value());
}

/// Charges one point for a response that was never priced (it failed before
/// validation), so malformed requests are not free, and reports the bucket.
pub fn charge_unpriced(limiter: &CostLimiter, info: &RequestInfo, response: &mut Response) {
    if !response.extensions.contains_key("cost") {
        report(
            &limiter.charge(&info.principal, info.client_ip, 1),
            response,
        );
    }
}

/// The error of a refused request; `retryAfter` is in whole seconds.
pub fn throttled(charge: &Charge) -> ServerError {
    let secs = charge
        .retry_after
        .map_or(1, |d| d.as_secs_f64().ceil() as u64)
        .max(1);
    let mut e = crate::graphql::error::request(
        Code::Throttled,
        format!(
            "rate limited: this request costs {} points and {} are available; {} come back every second",
            charge.cost, charge.available, charge.restore
        ),
    );
    e.extensions
        .get_or_insert_with(Default::default)
        .set("retryAfter", secs);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use till_domain::types::{CustomerId, Role};

    fn limiter() -> CostLimiter {
        let b = BucketSettings {
            max: 100,
            restore: 10,
        };
        CostLimiter::new(RateSettings {
            customer: b,
            staff: BucketSettings {
                max: 1000,
                restore: 100,
            },
            anonymous: b,
            max_principals: 10,
        })
    }

    #[test]
    fn buckets_drain_refuse_and_are_per_principal() {
        let l = limiter();
        let ann = Principal::User {
            id: CustomerId::new(),
            role: Role::Customer,
        };
        let first = l.charge(&ann, None, 40);
        assert_eq!((first.available, first.retry_after), (60, None));
        let second = l.charge(&ann, None, 40);
        assert!(second.available <= 20, "{second:?}");
        let third = l.charge(&ann, None, 40);
        assert!(third.retry_after.is_some(), "{third:?}");
        assert!(third.available < 40);
        // Another principal has its own bucket; staff have a bigger one.
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(l.charge(&Principal::Anonymous, Some(ip), 40).available, 60);
        let staff = Principal::User {
            id: CustomerId::new(),
            role: Role::Staff,
        };
        assert_eq!(l.charge(&staff, None, 40).maximum, 1000);
        // A cost larger than the bucket can never be paid.
        assert!(l.charge(&staff, None, 5000).retry_after.is_some());
    }

    #[test]
    fn an_ipv6_client_has_one_bucket_for_its_64() {
        let l = limiter();
        let a: IpAddr = "2001:db8:0:1::1".parse().unwrap_or(IpAddr::from([0u8; 4]));
        let b: IpAddr = "2001:db8:0:1:ffff::2"
            .parse()
            .unwrap_or(IpAddr::from([0u8; 4]));
        assert_eq!(l.charge(&Principal::Anonymous, Some(a), 60).available, 40);
        let other_address = l.charge(&Principal::Anonymous, Some(b), 60);
        assert!(other_address.retry_after.is_some(), "{other_address:?}");
    }

    /// Filling the cache with new principals never hands a drained one a full bucket
    /// (it was evicted and started over before).
    #[test]
    fn a_full_cache_never_gives_a_drained_caller_a_fresh_bucket() {
        let l = limiter();
        let drained = Principal::User {
            id: CustomerId::new(),
            role: Role::Customer,
        };
        assert!(l.charge(&drained, None, 100).retry_after.is_none());
        for _ in 0..100 {
            let newcomer = Principal::User {
                id: CustomerId::new(),
                role: Role::Customer,
            };
            l.charge(&newcomer, None, 1);
            l.buckets.run_pending_tasks();
        }
        let again = l.charge(&drained, None, 50);
        assert!(again.retry_after.is_some(), "a fresh bucket: {again:?}");
    }

    /// With two replicas alive each charges a request twice over, so the two together
    /// let a round-robin client spend about one budget.
    #[test]
    fn replicas_share_a_clients_budget() {
        let l = limiter();
        l.set_replicas(2);
        let ann = Principal::User {
            id: CustomerId::new(),
            role: Role::Customer,
        };
        let first = l.charge(&ann, None, 30);
        assert_eq!((first.cost, first.maximum, first.available), (30, 50, 20));
        let second = l.charge(&ann, None, 30);
        assert!(
            second.retry_after.is_some(),
            "60 of a 50-point share: {second:?}"
        );
    }

    #[test]
    fn the_report_keeps_its_shape() {
        let c = Charge {
            cost: 3,
            maximum: 10,
            available: 7,
            restore: 1,
            retry_after: None,
        };
        assert_eq!(
            c.to_value().into_json().ok(),
            Some(serde_json::json!({
                "requestedQueryCost": 3,
                "throttleStatus": {
                    "currentlyAvailable": 7,
                    "maximumAvailable": 10,
                    "restoreRate": 1,
                }
            }))
        );
    }

    #[tokio::test]
    async fn a_request_marked_charged_is_not_charged_again() {
        let schema = crate::graphql::build(
            None,
            crate::graphql::Limits {
                max_depth: 10,
                max_complexity: 100,
                max_aliases: 10,
                max_root_fields: 10,
                introspection: true,
                rate: Some(Arc::new(limiter())),
                query_timeout: None,
            },
        );
        let info = RequestInfo {
            principal: Principal::Anonymous,
            request_id: uuid::Uuid::nil(),
            idempotency: None,
            client_ip: None,
            reads: None,
        };
        let run = |charged: bool| {
            let mut request = async_graphql::Request::new("{ __typename }").data(info.clone());
            if charged {
                request = request.data(Charged);
            }
            let schema = schema.clone();
            async move { schema.execute(request).await }
        };
        let paid = run(false).await;
        assert!(paid.errors.is_empty(), "{:?}", paid.errors);
        assert!(paid.extensions.contains_key("cost"), "charged and reported");
        let again = run(true).await;
        assert!(again.errors.is_empty(), "{:?}", again.errors);
        assert!(!again.extensions.contains_key("cost"), "not charged twice");
    }
}
