//! The migrations are embedded by `embed_migrations!`, which cargo does not know reads
//! `migrations/`: rebuild when anything there changes (a new migration included).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
