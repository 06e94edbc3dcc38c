//! What both sides need of STS's AWS Query protocol: the operation name a request's signed
//! `Action` gives (the host plans with it, the enclave dispatches on it), and XML text escaping
//! for STS's answers and errors.

/// Prefix of the operation name of an STS request (`sts:GetCallerIdentity`).
pub const PREFIX: &str = "sts:";

/// STS's XML namespace.
pub const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// The operation name of an STS request with form body `body`: [`PREFIX`] and its `Action`
/// (empty when it has none).
#[must_use]
pub fn operation(body: &[u8]) -> String {
    let action = form_urlencoded::parse(body)
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    format!("{PREFIX}{action}")
}

/// XML character data.
#[must_use]
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn actions_name_operations_and_markup_is_escaped() {
        assert_eq!(
            super::operation(b"Action=GetCallerIdentity&Version=2011-06-15"),
            "sts:GetCallerIdentity"
        );
        assert_eq!(super::operation(b"Version=2011-06-15"), "sts:");
        assert_eq!(super::escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
