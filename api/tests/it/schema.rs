//! `schema.graphql` at the repository root is the contract for frontends: it must be
//! exactly what the server exports. Run with `UPDATE_SCHEMA=1` to rewrite it.

#[test]
fn checked_in_schema_is_fresh() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let current = till_api::graphql::sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        if let Err(e) = std::fs::write(&path, &current) {
            panic!("cannot write {}: {e}", path.display());
        }
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == current,
        "schema.graphql is stale: run `UPDATE_SCHEMA=1 cargo test -p till-api --test it schema` and commit it"
    );
}
