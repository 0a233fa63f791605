//! Installs the GraphiQL page's third-party assets from the npm registry and stages the
//! four files the `/graphiql` route embeds under `$OUT_DIR/graphiql/`.
//!
//! `graphiql/package.json` and `graphiql/package-lock.json` pin the versions. The install
//! lives in `$OUT_DIR/npm` (per target directory and profile, so `cargo build --release`
//! and `cargo clippy` never share it) and is redone only when one of the two package files
//! changed since the last successful `npm ci`, or when an asset went missing.

use std::env;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

type BuildResult<T> = Result<T, Box<dyn Error>>;

const PACKAGE_FILES: [&str; 2] = ["package.json", "package-lock.json"];

/// (path inside `node_modules`, file name under `$OUT_DIR/graphiql/`)
const ASSETS: [(&str, &str); 4] = [
    (
        "react/umd/react.production.min.js",
        "react.production.min.js",
    ),
    (
        "react-dom/umd/react-dom.production.min.js",
        "react-dom.production.min.js",
    ),
    ("graphiql/graphiql.min.js", "graphiql.min.js"),
    ("graphiql/graphiql.min.css", "graphiql.min.css"),
];

/// Written after a successful install; holds the package files it installed from.
const STAMP: &str = ".till-installed";

fn main() {
    if let Err(error) = run() {
        // Display, not the Debug a `Result` main prints, so multi-line npm output stays legible.
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run() -> BuildResult<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let source_dir = manifest_dir.join("graphiql");

    println!("cargo:rerun-if-changed=build.rs");
    for file in PACKAGE_FILES {
        println!("cargo:rerun-if-changed={}", source_dir.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=NPM");

    let install_dir = out_dir.join("npm");
    let package_files = read_package_files(&source_dir)?;
    install(&source_dir, &install_dir, &package_files)?;
    stage(&install_dir.join("node_modules"), &out_dir.join("graphiql"))?;

    // Versions the asset URLs so browsers may cache them forever.
    println!(
        "cargo:rustc-env=TILL_GRAPHIQL_ASSETS_REV={:016x}",
        fnv1a(&package_files)
    );
    Ok(())
}

/// Both package files, each preceded by its name, as one comparable blob.
fn read_package_files(source_dir: &Path) -> BuildResult<Vec<u8>> {
    let mut blob = Vec::new();
    for file in PACKAGE_FILES {
        let path = source_dir.join(file);
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        blob.extend_from_slice(file.as_bytes());
        blob.push(0);
        blob.extend_from_slice(&bytes);
        blob.push(0);
    }
    Ok(blob)
}

/// Runs `npm ci` in `install_dir` unless the last successful install used the same
/// package files and all assets are still there.
fn install(source_dir: &Path, install_dir: &Path, wanted: &[u8]) -> BuildResult<()> {
    let stamp = install_dir.join(STAMP);
    let node_modules = install_dir.join("node_modules");
    let up_to_date = fs::read(&stamp).is_ok_and(|installed| installed == wanted)
        && ASSETS
            .iter()
            .all(|(from, _)| node_modules.join(from).is_file());
    if up_to_date {
        return Ok(());
    }

    // Drop the stamp first so an interrupted install is never taken for a good one.
    match fs::remove_file(&stamp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    fs::create_dir_all(install_dir)?;
    for file in PACKAGE_FILES {
        fs::copy(source_dir.join(file), install_dir.join(file))?;
    }

    let npm = npm_program();
    let output = Command::new(&npm)
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
        ])
        .current_dir(install_dir)
        .env("npm_config_update_notifier", "false")
        .output()
        .map_err(|e| {
            format!(
                "could not run `{npm}` ({e}). Building till-api needs Node.js and npm to \
                 fetch the GraphiQL page's assets: install Node.js (20 or newer, which \
                 ships npm), e.g. `apt-get install nodejs npm` or https://nodejs.org, or \
                 set NPM to the npm executable"
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "`{npm} ci` in {} failed ({}). Building till-api needs Node.js and npm with \
             access to the npm registry to fetch the GraphiQL page's assets; install \
             Node.js/npm or fix the registry access.\n--- npm stdout ---\n{}\n--- npm stderr \
             ---\n{}",
            install_dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        )
        .into());
    }

    for (from, _) in ASSETS {
        let path = node_modules.join(from);
        if !path.is_file() {
            return Err(format!(
                "`npm ci` succeeded but {} is missing; check the versions pinned in \
                 api/graphiql/package.json",
                path.display()
            )
            .into());
        }
    }
    fs::write(&stamp, wanted)?;
    Ok(())
}

/// Copies the assets the page embeds into `target_dir`.
fn stage(node_modules: &Path, target_dir: &Path) -> BuildResult<()> {
    fs::create_dir_all(target_dir)?;
    for (from, to) in ASSETS {
        let source = node_modules.join(from);
        let bytes =
            fs::read(&source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
        let target = target_dir.join(to);
        // Rewriting identical bytes would only bump the mtime and force a recompile.
        if fs::read(&target).is_ok_and(|existing| existing == bytes) {
            continue;
        }
        fs::write(&target, bytes)?;
    }
    Ok(())
}

fn npm_program() -> String {
    match env::var("NPM") {
        Ok(npm) if !npm.is_empty() => npm,
        _ if cfg!(windows) => "npm.cmd".to_owned(),
        _ => "npm".to_owned(),
    }
}

/// 64-bit FNV-1a; only needs to change when the package files change.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
