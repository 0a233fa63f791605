//! The GraphiQL page at `/graphiql`, served with self-hosted assets.
//!
//! React, ReactDOM and GraphiQL are vendored in `api/graphiql/vendor/` (the versions
//! pinned in `api/graphiql/package-lock.json`, with their licences; CI checks the bytes
//! against npm with `scripts/graphiql-assets.sh --check`) and embedded in the binary, so
//! the page works without internet access and building needs no Node.js. Asset URLs
//! carry a hash of the files, which lets browsers cache them as immutable.

use actix_web::http::header::{self, CacheControl, CacheDirective, ContentType};
use actix_web::{guard, web, HttpResponse, Route};

/// One year, the longest lifetime caches honour.
const IMMUTABLE_MAX_AGE: u32 = 365 * 24 * 60 * 60;

/// Restricts the page to its own origin: no third-party script, style, font or request
/// can run or leave, which also keeps the page honest about working offline.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    immutable: bool,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: [Asset; 5] = [
    Asset {
        name: "react.production.min.js",
        content_type: JS,
        bytes: include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/graphiql/vendor/react.production.min.js"
        )),
        immutable: true,
    },
    Asset {
        name: "react-dom.production.min.js",
        content_type: JS,
        bytes: include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/graphiql/vendor/react-dom.production.min.js"
        )),
        immutable: true,
    },
    Asset {
        name: "graphiql.min.js",
        content_type: JS,
        bytes: include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/graphiql/vendor/graphiql.min.js"
        )),
        immutable: true,
    },
    Asset {
        name: "graphiql.min.css",
        content_type: CSS,
        bytes: include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/graphiql/vendor/graphiql.min.css"
        )),
        immutable: true,
    },
    // Ours, not versioned by the vendored files' hash, so it is revalidated instead of cached forever.
    Asset {
        name: "till-graphiql.js",
        content_type: JS,
        bytes: INIT_JS.as_bytes(),
        immutable: false,
    },
];

/// Mounts the page (`GET /graphiql`) and its assets (`GET /graphiql/assets/{file}`), both
/// also answering `HEAD`.
///
/// The page talks to `/graphql` on the origin it was loaded from; subscriptions use the
/// same path over WebSocket.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/graphiql", get_or_head().to(page))
        .route("/graphiql/assets/{file}", get_or_head().to(asset))
        .route("/graphiql/demo-tokens", web::get().to(demo_tokens));
}

/// How long the tokens GraphiQL gets for the demo accounts last.
const DEMO_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// `GET /graphiql/demo-tokens`: fresh access tokens of the demo shopper and staff, so the
/// page's tabs come signed in. Dev mode only (it listens on loopback only and prints the
/// same tokens at start-up), with the demo accounts seeded; 404 otherwise.
async fn demo_tokens(data: web::Data<std::sync::Arc<crate::http::state::AppData>>) -> HttpResponse {
    let c = &data.conveniences;
    if !(c.explorer && c.demo_tokens) {
        return HttpResponse::NotFound().finish();
    }
    let mut tokens = serde_json::Map::new();
    for (key, email) in [
        ("shopper", crate::seed::DEMO_SHOPPER_EMAIL),
        ("staff", crate::seed::DEMO_STAFF_EMAIL),
    ] {
        let account = till_domain::write_side_lookups::account_by_email(&data.pool, email).await;
        let token = match account {
            Ok(Some((id, role))) => data.tokens.mint(id, role, DEMO_TOKEN_TTL).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "demo tokens: account lookup failed");
                return HttpResponse::ServiceUnavailable().finish();
            }
        };
        if let Some(token) = token {
            tokens.insert(key.to_owned(), token.into());
        }
    }
    HttpResponse::Ok()
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .json(tokens)
}

fn get_or_head() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

async fn page(data: web::Data<std::sync::Arc<crate::http::state::AppData>>) -> HttpResponse {
    if !data.conveniences.explorer {
        return HttpResponse::NotFound().finish();
    }
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .insert_header((header::CONTENT_SECURITY_POLICY, PAGE_CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(PAGE_HTML)
}

async fn asset(
    file: web::Path<String>,
    data: web::Data<std::sync::Arc<crate::http::state::AppData>>,
) -> HttpResponse {
    if !data.conveniences.explorer {
        return HttpResponse::NotFound().finish();
    }
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == file.as_str()) else {
        return HttpResponse::NotFound()
            .content_type(ContentType::plaintext())
            .body("not found");
    };
    let cache = if asset.immutable {
        vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(IMMUTABLE_MAX_AGE),
            CacheDirective::Extension("immutable".to_owned(), None),
        ]
    } else {
        vec![CacheDirective::NoCache]
    };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .insert_header(CacheControl(cache))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(asset.bytes)
}

/// The page. Vendored asset URLs carry `TILL_GRAPHIQL_ASSETS_REV`, which `build.rs` derives
/// from their bytes.
const PAGE_HTML: &str = concat!(
    r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Till GraphiQL</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/graphiql/assets/graphiql.min.css?v="#,
    env!("TILL_GRAPHIQL_ASSETS_REV"),
    r#"">
<style>html, body, #graphiql { height: 100%; margin: 0; }</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<noscript>GraphiQL needs JavaScript.</noscript>
<script src="/graphiql/assets/react.production.min.js?v="#,
    env!("TILL_GRAPHIQL_ASSETS_REV"),
    r#""></script>
<script src="/graphiql/assets/react-dom.production.min.js?v="#,
    env!("TILL_GRAPHIQL_ASSETS_REV"),
    r#""></script>
<script src="/graphiql/assets/graphiql.min.js?v="#,
    env!("TILL_GRAPHIQL_ASSETS_REV"),
    r#""></script>
<script src="/graphiql/assets/till-graphiql.js"></script>
</body>
</html>
"#
);

/// Renders GraphiQL; a separate file rather than an inline script so the page's CSP can
/// forbid inline scripts.
const INIT_JS: &str = r#"(function () {
  'use strict';
  var origin = window.location.origin;
  var fetcher = GraphiQL.createFetcher({
    url: origin + '/graphql',
    subscriptionUrl: origin.replace(/^http/, 'ws') + '/graphql'
  });
  function lines() { return Array.prototype.slice.call(arguments).join('\n') + '\n'; }
  function headers(token) {
    return token ? JSON.stringify({ Authorization: 'Bearer ' + token }, null, 2) : '';
  }
  function json(response) { return response.ok ? response.json() : null; }
  // The README's tour as tabs; in dev mode with the demo accounts they come signed in.
  function tabs(tokens, product) {
    var shopper = tokens && tokens.shopper;
    var staff = tokens && tokens.staff;
    var signIn = shopper ? '' : lines(
      '# Sign in first (tab SignIn) and put the accessToken in Headers:',
      '# {"Authorization": "Bearer <accessToken>"}');
    var productVars = JSON.stringify({ product: product || '<a product id from Browse>' }, null, 2);
    return [
      { query: lines(
          '# Browse the catalog: no token needed. Pass pageInfo.endCursor as `after`',
          '# for the next page.',
          'query Browse {',
          '  categories { slug name path { slug } }',
          '  products(first: 5, sortBy: PRICE, filter: { inStock: true }) {',
          '    edges { cursor node { id sku name price { amount currency } available categoryPath { name } } }',
          '    pageInfo { hasNextPage endCursor }',
          '  }',
          '}') },
      { query: lines(
          '# The demo accounts shopper@till.dev and staff@till.dev use this password;',
          '# or register(input: {email, password, name}) an account of your own.',
          'mutation SignIn {',
          '  login(input: { email: "shopper@till.dev", password: "till-demo-password" }) {',
          '    accessToken expiresIn refreshToken',
          '  }',
          '}') },
      { query: signIn + lines(
          '# Reserves stock for every line or none (OUT_OF_STOCK names the short product).',
          '# Then read it back in MyOrders with its consistencyToken.',
          'mutation PlaceOrder($product: ID!) {',
          '  placeOrder(input: { lines: [{ productId: $product, quantity: 2 }] }) {',
          '    consistencyToken',
          '    order { id status total { amount } lines { name quantity unitPrice { amount } } }',
          '  }',
          '}'),
        variables: productVars, headers: headers(shopper) },
      { query: signIn + lines(
          '# After PlaceOrder, add its token to Headers, and this read waits for it:',
          '#   "X-Consistency-Token": "<consistencyToken>"',
          'query MyOrders {',
          '  myOrders(first: 10) { edges { node { id status statusHistory { status at } } } }',
          '  me { email ordersCount lifetimeSpend { amount } }',
          '}'),
        headers: headers(shopper) },
      { query: lines(
          '# Run it, then place an order in PlaceOrder: each change of the stock arrives here.',
          'subscription StockChanged($product: ID!) {',
          '  stockChanged(productId: $product) { sku available }',
          '}'),
        variables: productVars },
      { query: (staff ? '' : lines('# Needs a STAFF or ADMIN token in Headers.')) + lines(
          'query BackOffice {',
          '  orders(first: 5) { edges { node { id status customer { email } total { amount } } } }',
          '  projections { name logPosition eventsBehind }',
          '}'),
        headers: headers(staff) }
    ];
  }
  function render(tokens, product) {
    ReactDOM.createRoot(document.getElementById('graphiql')).render(
      React.createElement(GraphiQL, {
        fetcher: fetcher,
        defaultTabs: tabs(tokens, product),
        isHeadersEditorEnabled: true,
        defaultEditorToolsVisibility: 'headers',
        shouldPersistHeaders: false
      })
    );
  }
  var tokens = fetch(origin + '/graphiql/demo-tokens').then(json).catch(function () { return null; });
  var product = fetch(origin + '/graphql', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ query: '{ products(first: 1, filter: { inStock: true }) { edges { node { id } } } }' })
  }).then(json).then(function (r) {
    var edges = r && r.data && r.data.products ? r.data.products.edges : [];
    return edges.length ? edges[0].node.id : null;
  }).catch(function () { return null; });
  Promise.all([tokens, product]).then(function (got) { render(got[0], got[1]); });
})();
"#;
