//! `--domain ID`: an operator pins the key domain they mean, and a document or state that names
//! another one (or none) is refused. The enclave's documents name their domain in the user data
//! (`ekms/v1 ... domain=<16 hex> ...`).

use anyhow::{anyhow, bail};

/// A pinned domain id: 16 hex digits, kept in lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainPin(String);

impl DomainPin {
    /// Parses `--domain ID`.
    pub fn parse(id: &str) -> anyhow::Result<Self> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("--domain wants a domain id of 16 hex digits, not {id:?}");
        }
        Ok(Self(id))
    }

    /// The id, lower-case hex.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Refuses `named` unless it is this domain; `what` says where the name came from.
    pub fn check(&self, named: Option<&str>, what: &str) -> anyhow::Result<()> {
        match named {
            Some(d) if d.eq_ignore_ascii_case(&self.0) => Ok(()),
            Some(d) => Err(anyhow!(
                "{what} names domain {d}, not the domain {} you pinned with --domain",
                self.0
            )),
            None => Err(anyhow!(
                "{what} names no domain; you pinned domain {} with --domain",
                self.0
            )),
        }
    }

    /// Refuses an attestation document's user data unless it names this domain.
    pub fn check_user_data(&self, user_data: Option<&[u8]>) -> anyhow::Result<()> {
        self.check(user_data.and_then(named_domain), "the attestation document")
    }
}

/// The domain named in an enclave document's user data (`domain=<id>` among its words); `none`
/// (an enclave without a domain) names none.
#[must_use]
pub fn named_domain(user_data: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(user_data).ok()?;
    if !text.starts_with("ekms/v1 ") {
        return None;
    }
    text.split(' ')
        .find_map(|w| w.strip_prefix("domain="))
        .filter(|d| *d != "none")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_of_another_domain_or_none_are_refused() {
        let pin = DomainPin::parse("0102030405060708").unwrap();
        pin.check_user_data(Some(&b"ekms/v1 domain=0102030405060708 state=sealed"[..]))
            .unwrap();
        pin.check_user_data(Some(
            &b"ekms/v1 credential domain=0102030405060708 akid=A digest=00"[..],
        ))
        .unwrap();
        for refused in [
            &b"ekms/v1 domain=1111111111111111 state=unsealed"[..],
            b"ekms/v1 domain=none state=uninitialised",
            b"ekms/v1 credential domain=1111111111111111 akid=A digest=00",
            b"other domain=0102030405060708",
            b"\xff",
        ] {
            assert!(pin.check_user_data(Some(refused)).is_err());
        }
        assert!(pin.check_user_data(None).is_err());
        assert_eq!(
            DomainPin::parse("0102030405060708 ").unwrap(),
            DomainPin::parse("0102030405060708").unwrap()
        );
        assert!(DomainPin::parse("01020304").is_err());
        assert!(DomainPin::parse("zz02030405060708").is_err());
    }
}
