//! `spawn_app()` and a small GraphQL client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};
use till_api::app::{AppData, Application, Database};
use till_api::config::{Secret, ServeConfig};
use till_domain::commands::{CommandContext, Commands, NewCategory, NewCustomer, NewProduct};
use till_domain::db::testing::TestDb;
use till_domain::types::*;

pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[derive(Parser)]
struct Defaults {
    #[command(flatten)]
    cfg: ServeConfig,
}

pub struct TestApp {
    pub base: String,
    pub data: Arc<AppData>,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub staff_token: String,
}

pub const SECRET: &str = "test-secret-that-is-long-enough-0123456789";

/// Creates an account with `role` through `commands`; returns (id, a bearer token
/// signed with [`SECRET`]).
pub async fn account_on(commands: &Commands, email: &str, role: Role) -> (CustomerId, String) {
    let id = ok(commands
        .create_customer(
            &CommandContext::system("test"),
            NewCustomer {
                email: ok(Email::parse(email)),
                name: ok(Name::parse("name", "Someone")),
                role,
                password_hash: None,
            },
        )
        .await)
    .value;
    let tokens = till_api::auth::TokenService::new(&Secret::new(SECRET));
    (id, ok(tokens.mint(id, role, Duration::from_secs(600))))
}

/// A real `till serve` process (the built binary) on a free port against `database_url`,
/// with `env` on top of test defaults; killed on drop.
pub struct ServerProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its port.
    pub port: u16,
}

impl ServerProcess {
    /// Starts it and waits until `/readyz` answers 200 (60 s at most).
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> Self {
        let port =
            ok(std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())).port();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_till"));
        cmd.arg("serve")
            .env("DATABASE_URL", database_url)
            .env("TILL_LISTEN", format!("127.0.0.1:{port}"))
            .env("TILL_JWT_SECRET", SECRET)
            .env("TILL_SEED_DEMO", "false")
            .env("TILL_JOBS", "false")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = ok(cmd.spawn());
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "server never became ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, base, port }
    }

    /// Stops it as Kubernetes does (SIGTERM) and waits for it to exit (60 s at most).
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        ok(std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = ok(self.child.try_wait()) {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The settings `spawn_app` starts from: the defaults with a test secret, port 0,
/// no demo seed and generous rate limits.
pub fn test_config() -> ServeConfig {
    let mut cfg = Defaults::parse_from(["till"]).cfg;
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.jwt_secret = Some(Secret::new(SECRET));
    cfg.seed_demo = Some(false);
    // Tests run in dev mode on a database of their own (not the embedded default):
    // ask for the conveniences they use by name.
    cfg.introspection = Some(true);
    cfg.fake_provider = Some(true);
    cfg.db.db_pool_size = 30;
    // Hot-row tests queue many requests on one product: they test correctness, not
    // latency, so a slow shared machine must not turn waits into 503s.
    cfg.db.db_acquire_timeout_ms = 30_000;
    cfg.http_workers = 2;
    // Reads with a consistency token wait for the projector: on a slow shared machine
    // (CI once ran the suite at half speed) a round can take seconds, and a test checks
    // what it reads, not how fast.
    cfg.consistency_wait_ms = 15_000;
    // Tests fire many requests from one address; the throttling test sets its own.
    cfg.rate.rate_anonymous_max = 1_000_000;
    cfg.rate.rate_customer_max = 1_000_000;
    cfg.rate.rate_staff_max = 1_000_000;
    cfg.rate.signin_per_ip_max = 1_000_000;
    cfg.rate.signin_per_email_max = 1_000_000;
    cfg
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    spawn_app_on(TestDb::with_pool_size(30).await, tweak).await
}

/// [`spawn_app_with`] on `db` (a database on the replicas' cluster, say).
pub async fn spawn_app_on(db: TestDb, tweak: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let mut cfg = test_config();
    tweak(&mut cfg);
    let app = ok(Application::build(
        cfg,
        Database {
            url: db.url.clone(),
            embedded: None,
            replicas: Vec::new(),
        },
    )
    .await);
    let (port, data, _handle) = app.spawn();
    let staff = ok(data
        .api
        .commands
        .create_customer(
            &CommandContext::system("test"),
            NewCustomer {
                email: ok(Email::parse("staff@example.com")),
                name: ok(Name::parse("name", "Staff")),
                role: Role::Staff,
                password_hash: None,
            },
        )
        .await)
    .value;
    let staff_token = ok(data
        .tokens
        .mint(staff, Role::Staff, Duration::from_secs(600)));
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        data,
        http: reqwest::Client::new(),
        db,
        staff_token,
    }
}

impl TestApp {
    /// Creates a customer account and returns (id, bearer token).
    pub async fn customer(&self, email: &str) -> (CustomerId, String) {
        self.account(email, Role::Customer).await
    }

    /// Creates an account with `role`; returns (id, bearer token).
    pub async fn account(&self, email: &str, role: Role) -> (CustomerId, String) {
        account_on(&self.data.api.commands, email, role).await
    }

    /// Registers an account with a password through `register`; returns its access
    /// token, refresh token and customer id (a signed-in session).
    pub async fn sign_up(&self, email: &str) -> (String, String, String) {
        let (_, body) = self
            .gql(
                None,
                "mutation($i: RegisterInput!) { register(input: $i) { accessToken refreshToken customerId } }",
                json!({ "i": { "email": email, "password": "correct horse battery", "name": "Ann" } }),
            )
            .await;
        let r = &body["data"]["register"];
        let s = |k: &str| r[k].as_str().unwrap_or_else(|| panic!("{body}")).to_owned();
        (s("accessToken"), s("refreshToken"), s("customerId"))
    }

    /// `logout` of the session of `refresh`; asserts that it ended one.
    pub async fn log_out(&self, refresh: &str) {
        let (_, body) = self
            .gql(
                None,
                "mutation($t: String!) { logout(refreshToken: $t) { revoked } }",
                json!({ "t": refresh }),
            )
            .await;
        assert_eq!(body["data"]["logout"]["revoked"], true, "{body}");
    }

    /// Creates an ADMIN account; returns its bearer token.
    pub async fn admin(&self) -> String {
        let email = format!("admin-{}@example.com", uuid::Uuid::new_v4());
        self.account(&email, Role::Admin).await.1
    }

    /// Creates an ACTIVE product with stock; returns its global id.
    pub async fn product(&self, sku: &str, price: i64, stock: i64) -> String {
        let sys = CommandContext::system("test");
        let cat = ok(self
            .data
            .api
            .commands
            .create_category(
                &sys,
                NewCategory {
                    slug: ok(Slug::parse(&format!("cat-{}", sku.to_lowercase()))),
                    name: ok(Name::parse("name", "Cat")),
                    parent: None,
                },
            )
            .await)
        .value;
        let id = ok(self
            .data
            .api
            .commands
            .create_product(
                &sys,
                NewProduct {
                    sku: ok(Sku::parse(sku)),
                    name: ok(Name::parse("name", &format!("Product {sku}"))),
                    description: Description::default(),
                    category: cat,
                    price: ok(Money::price(price)),
                    status: ProductStatus::Active,
                    initial_stock: (stock > 0).then(|| ok(StockDelta::restock(stock))),
                },
            )
            .await)
        .value;
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Product:{id}"))
    }

    /// A product (as `product`), and a consistency token after which the read models
    /// have it (from a restock of one unit, so it has `stock + 1`).
    pub async fn visible_product(&self, sku: &str, price: i64, stock: i64) -> (String, String) {
        let id = self.product(sku, price, stock).await;
        let (_, body) = self
            .gql(
                Some(&self.staff_token),
                "mutation($p: ID!) { restockProduct(input: {productId: $p, quantity: 1}) { consistencyToken } }",
                serde_json::json!({ "p": id }),
            )
            .await;
        (id, consistency_token(&body, "restockProduct"))
    }

    /// `SELECT count(*) AS n ...` against the test's database, with an optional text
    /// parameter `$1`.
    pub async fn count(&self, sql: &str, param: Option<&str>) -> i64 {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = ok(self.db.pool.get().await);
        let query = diesel::sql_query(sql);
        let row: N = match param {
            Some(p) => ok(query
                .bind::<diesel::sql_types::Text, _>(p)
                .get_result(&mut conn)
                .await),
            None => ok(query.get_result(&mut conn).await),
        };
        row.n
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        ok(
            ok(self.http.get(format!("{}/metrics", self.base)).send().await)
                .text()
                .await,
        )
    }

    /// A consistency token for everything written so far.
    pub async fn head_token(&self) -> String {
        let mut conn = ok(self.db.pool.get().await);
        ok(till_domain::event_log::head(&mut conn).await).to_token()
    }

    /// POSTs a GraphQL request; returns (status, body).
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        self.gql_with(token, query, variables, &[]).await
    }

    /// A request that waits until the read models reflect consistency token `ct`.
    pub async fn gql_after(
        &self,
        token: Option<&str>,
        ct: &str,
        query: &str,
        variables: Value,
    ) -> (u16, Value) {
        self.gql_with(token, query, variables, &[("x-consistency-token", ct)])
            .await
    }

    pub async fn gql_with(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/graphql", self.base))
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = ok(req.send().await);
        let status = resp.status().as_u16();
        let body: Value = ok(resp.json().await);
        (status, body)
    }
}

/// The first error's `extensions.code`.
/// The consistency token mutation `field` answered with.
pub fn consistency_token(body: &Value, field: &str) -> String {
    body["data"][field]["consistencyToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no consistency token: {body}"))
        .to_owned()
}

pub fn code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

/// The largest value of the series in Prometheus text `metrics` whose line starts with
/// `series_prefix`.
pub fn value_of(metrics: &str, series_prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(series_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(f64::max)
}
