//! Versions the GraphiQL page's vendored assets (`api/graphiql/vendor/`, embedded by
//! `http::graphiql`): `TILL_GRAPHIQL_ASSETS_REV` is a hash of their bytes, so the asset
//! URLs change when the files do and browsers may cache them forever. No Node.js or npm:
//! `scripts/graphiql-assets.sh` updates the vendored files.

use std::env;
use std::fs;
use std::path::PathBuf;

/// The files the page embeds, under `api/graphiql/vendor/`.
const ASSETS: [&str; 4] = [
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphiql.min.js",
    "graphiql.min.css",
];

fn main() {
    let vendor = match env::var("CARGO_MANIFEST_DIR") {
        Ok(dir) => PathBuf::from(dir).join("graphiql").join("vendor"),
        Err(e) => fail(&format!("CARGO_MANIFEST_DIR: {e}")),
    };
    println!("cargo:rerun-if-changed=build.rs");
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for name in ASSETS {
        let path = vendor.join(name);
        println!("cargo:rerun-if-changed={}", path.display());
        let bytes = fs::read(&path).unwrap_or_else(|e| {
            fail(&format!(
                "cannot read {} ({e}): the GraphiQL assets are vendored in api/graphiql/vendor/; \
                 restore them from git or run scripts/graphiql-assets.sh",
                path.display()
            ))
        });
        hash = fnv1a(hash, name.as_bytes());
        hash = fnv1a(hash, &bytes);
    }
    println!("cargo:rustc-env=TILL_GRAPHIQL_ASSETS_REV={hash:016x}");
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

/// 64-bit FNV-1a, continued from `hash`.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
