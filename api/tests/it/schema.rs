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

/// Every type, field, argument, input field and enum value of the contract says what it
/// is: codegen copies these into the clients' types.
#[test]
fn everything_in_the_schema_is_described() {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    let sdl = till_api::graphql::sdl();
    let doc = async_graphql::parser::parse_schema(&sdl).unwrap();
    let mut missing = Vec::new();
    for def in &doc.definitions {
        let TypeSystemDefinition::Type(ty) = def else {
            continue;
        };
        let ty = &ty.node;
        let name = ty.name.node.as_str();
        let root = matches!(name, "Query" | "Mutation" | "Subscription");
        if ty.description.is_none() && !root {
            missing.push(name.to_owned());
        }
        match &ty.kind {
            TypeKind::Object(o) => {
                for f in &o.fields {
                    let f = &f.node;
                    if f.description.is_none() {
                        missing.push(format!("{name}.{}", f.name.node));
                    }
                    for a in &f.arguments {
                        if a.node.description.is_none() {
                            missing.push(format!("{name}.{}({})", f.name.node, a.node.name.node));
                        }
                    }
                }
            }
            TypeKind::Interface(i) => {
                for f in &i.fields {
                    if f.node.description.is_none() {
                        missing.push(format!("{name}.{}", f.node.name.node));
                    }
                }
            }
            TypeKind::InputObject(i) => {
                for f in &i.fields {
                    if f.node.description.is_none() {
                        missing.push(format!("{name}.{}", f.node.name.node));
                    }
                }
            }
            TypeKind::Enum(e) => {
                for v in &e.values {
                    if v.node.description.is_none() {
                        missing.push(format!("{name}.{}", v.node.value.node));
                    }
                }
            }
            TypeKind::Scalar | TypeKind::Union(_) => {}
        }
    }
    assert!(missing.is_empty(), "undescribed: {missing:?}");
}
