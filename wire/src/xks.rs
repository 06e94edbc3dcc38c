//! The External Key Store (XKS) proxy API's shapes that host and enclave share: the request path
//! (`/{prefix}/kms/xks/v1/health`, `/{prefix}/kms/xks/v1/keys/{keyId}/{metadata|encrypt|decrypt}`),
//! what a URI prefix may be, and the name of a prefix's credential record.

/// The path segments between the URI prefix and the operation.
pub const API_PATH: &str = "kms/xks/v1";
/// Longest URI prefix accepted (AWS: the whole XKS URI path is at most 128 characters).
pub const MAX_PREFIX: usize = 128;
/// Longest XKS key id in a path.
pub const MAX_KEY_ID: usize = 128;

/// An XKS operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XksOp {
    /// `GetHealthStatus` (`health`).
    Health,
    /// `GetKeyMetadata` (`keys/{keyId}/metadata`).
    Metadata,
    /// `Encrypt` (`keys/{keyId}/encrypt`).
    Encrypt,
    /// `Decrypt` (`keys/{keyId}/decrypt`).
    Decrypt,
}

impl XksOp {
    /// The specification's name of the operation.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Health => "GetHealthStatus",
            Self::Metadata => "GetKeyMetadata",
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
        }
    }
}

/// A request path of the XKS API, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XksPath<'a> {
    /// The URI prefix (one or more segments, no leading or trailing slash).
    pub prefix: &'a str,
    /// The operation.
    pub op: XksOp,
    /// The key id, for the key operations.
    pub key_id: Option<&'a str>,
}

/// Whether `prefix` is a URI prefix: one or more non-empty segments of unreserved URI
/// characters (`A-Z a-z 0-9 - . _ ~`) joined by `/`, at most [`MAX_PREFIX`] characters.
#[must_use]
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX
        && prefix.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        })
}

/// Parses the path of an XKS request (the query string, if any, is not part of it). `None` for
/// any other path.
#[must_use]
pub fn parse_path(path: &str) -> Option<XksPath<'_>> {
    let path = path.strip_prefix('/')?;
    let at = path.find(&format!("/{API_PATH}/"))?;
    let prefix = path.get(..at)?;
    let rest = path.get(at + API_PATH.len() + 2..)?;
    if !valid_prefix(prefix) {
        return None;
    }
    let (op, key_id) = if rest == "health" {
        (XksOp::Health, None)
    } else {
        let rest = rest.strip_prefix("keys/")?;
        let (key, op) = rest.rsplit_once('/')?;
        let op = match op {
            "metadata" => XksOp::Metadata,
            "encrypt" => XksOp::Encrypt,
            "decrypt" => XksOp::Decrypt,
            _ => return None,
        };
        if key.is_empty() || key.len() > MAX_KEY_ID || key.contains('/') {
            return None;
        }
        (op, Some(key))
    };
    Some(XksPath { prefix, op, key_id })
}

/// The name of the principal record that holds a URI prefix's credentials (`xks:` is not a
/// character of any user name, so no user can take it).
#[must_use]
pub fn credential_record(prefix: &str) -> String {
    format!("xks:{prefix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_into_prefix_operation_and_key() {
        assert_eq!(
            parse_path("/example/uri/path/prefix/kms/xks/v1/health"),
            Some(XksPath {
                prefix: "example/uri/path/prefix",
                op: XksOp::Health,
                key_id: None
            })
        );
        assert_eq!(
            parse_path("/p/kms/xks/v1/keys/abc-123/encrypt"),
            Some(XksPath {
                prefix: "p",
                op: XksOp::Encrypt,
                key_id: Some("abc-123")
            })
        );
        for bad in [
            "/kms/xks/v1/health",
            "p/kms/xks/v1/health",
            "/p/kms/xks/v1/healthz",
            "/p/kms/xks/v1/keys//encrypt",
            "/p/kms/xks/v1/keys/a/b/encrypt",
            "/p/kms/xks/v1/keys/a/sign",
            "/p//q/kms/xks/v1/health",
            "/p/kms/xks/v2/health",
            "",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
        assert!(valid_prefix("a/b.c/d_e-f~g"));
        assert!(!valid_prefix("a/"));
        assert!(!valid_prefix("/a"));
        assert!(!valid_prefix("a b"));
        assert!(!valid_prefix(&"a".repeat(129)));
    }
}
