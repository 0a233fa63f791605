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
        .route("/graphiql/assets/{file}", get_or_head().to(asset));
}

fn get_or_head() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

async fn page(data: web::Data<std::sync::Arc<crate::app::AppData>>) -> HttpResponse {
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
    data: web::Data<std::sync::Arc<crate::app::AppData>>,
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
  var defaultQuery = [
    '# Till GraphiQL. Put a token in Headers, e.g.',
    '# {"Authorization": "Bearer <token>"}',
    '{',
    '  categories {',
    '    slug',
    '    name',
    '  }',
    '  products(first: 5) {',
    '    edges {',
    '      node {',
    '        sku',
    '        name',
    '        priceMinor',
    '        available',
    '      }',
    '    }',
    '  }',
    '}',
    ''
  ].join('\n');
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      isHeadersEditorEnabled: true,
      defaultEditorToolsVisibility: 'headers',
      shouldPersistHeaders: false
    })
  );
})();
"#;
