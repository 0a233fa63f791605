//! Secret settings (keys, passwords in URLs): wrapped so that they never print.

use std::fmt;

/// A secret value that never shows in logs or debug output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Secret {
    /// The value given directly, else the contents of `file` (a mounted Kubernetes or
    /// Docker secret; one trailing newline is dropped). `what` names the setting in
    /// errors; the value itself never appears in them.
    pub fn resolve(
        value: Option<&Secret>,
        file: Option<&std::path::Path>,
        what: &str,
    ) -> Result<Option<Secret>, String> {
        match (value, file) {
            (Some(_), Some(_)) => Err(format!("set {what} or {what}_FILE, not both")),
            (Some(v), None) => Ok(Some(v.clone())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{what}_FILE {}: {e}", path.display()))?;
                let text = text
                    .strip_suffix("\r\n")
                    .or_else(|| text.strip_suffix('\n'))
                    .unwrap_or(&text);
                if text.is_empty() {
                    return Err(format!("{what}_FILE {} is empty", path.display()));
                }
                Ok(Some(Secret::new(text)))
            }
            (None, None) => Ok(None),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}
