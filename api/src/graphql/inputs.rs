//! One mutation style: every mutation takes one `input:` object. Mutations that took flat
//! arguments keep them for a release, optional and deprecated; a call gives either
//! `input` or all of its required flat arguments, never both. (The deprecation reason,
//! "use `input`; the flat arguments go in the next release", is a literal in each
//! attribute: async-graphql takes no constant there.)

use async_graphql::Result;

use super::error::{coded, Code};

/// The mutation's input: `input`, or what its deprecated flat arguments make (`flat` is
/// `Some` when all the required ones were given, `any_flat` when any was).
pub(crate) fn one_form<T>(
    mutation: &str,
    input: Option<T>,
    flat: Option<T>,
    any_flat: bool,
) -> Result<T> {
    match (input, flat) {
        (Some(input), None) if !any_flat => Ok(input),
        (None, Some(flat)) => Ok(flat),
        (None, None) if any_flat => Err(coded(
            Code::BadUserInput,
            format!("{mutation}: give `input` (or every one of its deprecated arguments)"),
        )),
        (None, None) => Err(coded(
            Code::BadUserInput,
            format!("{mutation}: `input` is required"),
        )),
        _ => Err(coded(
            Code::BadUserInput,
            format!("{mutation}: give `input` or the deprecated arguments, not both"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::one_form;

    #[test]
    fn exactly_one_form_is_taken() {
        assert_eq!(one_form("m", Some(1), None, false).ok(), Some(1));
        assert_eq!(one_form("m", None, Some(2), true).ok(), Some(2));
        assert!(one_form::<i32>("m", None, None, false).is_err());
        assert!(
            one_form::<i32>("m", None, None, true).is_err(),
            "some flat arguments missing"
        );
        assert!(
            one_form("m", Some(1), None, true).is_err(),
            "input and a flat argument"
        );
        assert!(one_form("m", Some(1), Some(2), true).is_err());
    }
}
