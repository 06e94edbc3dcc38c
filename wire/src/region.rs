//! Regions: which regions an appliance serves, the region a request is signed for, and how an
//! alias is named in the store per region.
//!
//! Keys are regional, as in AWS. A key's region is sealed in its record (key ids are unique
//! across regions). Alias names are unique only within a region: an alias of the *home* region
//! (the `--region` the appliance ran with before it served several) keeps its plain name as its
//! record name, so stores made before regions need no migration; an alias of another region is
//! stored as `<region>/alias/...`. Both sides compute these names; the enclave checks them.

/// The regions an appliance serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regions {
    /// Any region (the simulation default: local tests sign for whatever region they use).
    Any,
    /// Exactly these.
    Only(Vec<String>),
}

impl Regions {
    /// `*`, or a comma-separated list of region names.
    ///
    /// # Errors
    /// A name that is not a region name (lower-case letters, digits and hyphens, such as
    /// `eu-west-1`), or an empty list.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Self::Any);
        }
        let mut out = Vec::new();
        for r in s.split(',').map(str::trim) {
            if !is_region_name(r) {
                return Err(format!(
                    "'{r}' is not a region name (like us-east-1), nor '*' for any region"
                ));
            }
            if !out.iter().any(|o: &String| o == r) {
                out.push(r.to_owned());
            }
        }
        if out.is_empty() {
            return Err("no region named".into());
        }
        Ok(Self::Only(out))
    }

    /// Whether requests signed for `region` are served.
    #[must_use]
    pub fn allows(&self, region: &str) -> bool {
        match self {
            Self::Any => is_region_name(region),
            Self::Only(list) => list.iter().any(|r| r == region),
        }
    }

    /// The form [`Regions::parse`] reads.
    #[must_use]
    pub fn to_arg(&self) -> String {
        match self {
            Self::Any => "*".into(),
            Self::Only(list) => list.join(","),
        }
    }
}

/// Whether `s` is shaped like an AWS region name (`us-east-1`, `us-gov-west-1`): at most 32
/// characters, lower-case words joined by hyphens, the last one a number. (So no region name is
/// `alias`, nor starts like an alias name.)
#[must_use]
pub fn is_region_name(s: &str) -> bool {
    let mut words = s.split('-');
    let Some(last) = words.next_back() else {
        return false;
    };
    s.len() <= 32
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
        && words.clone().next().is_some()
        && words.all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// The region of the credential scope in a SigV4 `Authorization` header
/// (`Credential=AKID/DATE/REGION/SERVICE/aws4_request`). Only a lookup hint for the host; the
/// enclave verifies the signature over it.
#[must_use]
pub fn scope_region(authorization: &str) -> Option<&str> {
    let rest = authorization.split("Credential=").nth(1)?;
    let scope = rest.split([',', ' ']).next()?;
    let mut parts = scope.split('/');
    parts.nth(2).filter(|r| is_region_name(r))
}

/// The store's name prefix of the aliases of `region`.
#[must_use]
pub fn alias_prefix(home: &str, region: &str) -> String {
    if region == home {
        "alias/".into()
    } else {
        format!("{region}/alias/")
    }
}

/// The store's name of alias `alias` (`alias/...`) of `region`.
#[must_use]
pub fn alias_record(home: &str, region: &str, alias: &str) -> String {
    if region == home {
        alias.to_owned()
    } else {
        format!("{region}/{alias}")
    }
}

/// The region part of the usage record (`GetKeyLastUsage`) of key `key_id` used in `region`:
/// empty for a single-Region key (it has one region) and for a multi-Region key's home-region
/// copy, else the region. AWS tracks the use of each replica apart.
#[must_use]
pub fn usage_region<'a>(home: &str, region: &'a str, key_id: &str) -> &'a str {
    if region == home || !crate::plan::is_multi_region(key_id) {
        ""
    } else {
        region
    }
}

/// The store's name of a usage record: the key id, after `REGION/` when the region part
/// ([`usage_region`]) is not empty.
#[must_use]
pub fn usage_record(region_part: &str, key_id: &str) -> String {
    if region_part.is_empty() {
        key_id.to_owned()
    } else {
        format!("{region_part}/{key_id}")
    }
}

/// The alias name (`alias/...`) of a store name made by [`alias_record`].
#[must_use]
pub fn alias_display(record: &str) -> &str {
    if record.starts_with("alias/") {
        record
    } else {
        record.split_once('/').map_or(record, |(_, a)| a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_lists_parse_and_refuse_what_is_not_a_region() {
        assert_eq!(Regions::parse("*"), Ok(Regions::Any));
        assert_eq!(
            Regions::parse("us-east-1, eu-west-1,us-east-1"),
            Ok(Regions::Only(vec!["us-east-1".into(), "eu-west-1".into()]))
        );
        for bad in [
            "",
            "US-EAST-1",
            "us_east_1",
            "eu-west-1,",
            "a/b",
            "-x",
            "x-",
            "alias",
            "local",
            "1",
            "us--1",
        ] {
            assert!(Regions::parse(bad).is_err(), "{bad}");
        }
        let only = Regions::parse("eu-west-1").unwrap();
        assert!(only.allows("eu-west-1") && !only.allows("us-east-1"));
        assert!(Regions::Any.allows("ap-south-2") && !Regions::Any.allows("../x"));
        assert!(Regions::Any.allows("us-gov-west-1"));
        assert_eq!(only.to_arg(), "eu-west-1");
    }

    #[test]
    fn the_scope_region_is_read_from_the_authorization_header() {
        let h = "AWS4-HMAC-SHA256 Credential=AKID/20261130/eu-west-1/kms/aws4_request, SignedHeaders=host, Signature=00";
        assert_eq!(scope_region(h), Some("eu-west-1"));
        assert_eq!(scope_region("Credential=AKID/20261130"), None);
        assert_eq!(
            scope_region("Credential=A/D/Bad Region/kms/aws4_request"),
            None
        );
        assert_eq!(scope_region("nothing"), None);
    }

    #[test]
    fn alias_names_are_plain_in_the_home_region_and_prefixed_elsewhere() {
        assert_eq!(alias_record("us-east-1", "us-east-1", "alias/a"), "alias/a");
        assert_eq!(
            alias_record("us-east-1", "eu-west-1", "alias/a/b"),
            "eu-west-1/alias/a/b"
        );
        assert_eq!(alias_display("eu-west-1/alias/a/b"), "alias/a/b");
        assert_eq!(alias_display("alias/a/b"), "alias/a/b");
        assert!(
            alias_record("h", "eu-west-1", "alias/x").starts_with(&alias_prefix("h", "eu-west-1"))
        );
        assert!(alias_record("h", "h", "alias/x").starts_with(&alias_prefix("h", "h")));
    }

    #[test]
    fn usage_records_are_per_region_only_for_multi_region_keys_outside_home() {
        let mrk = "mrk-0123456789abcdef0123456789abcdef";
        let single = "01234567-89ab-cdef-0123-456789abcdef";
        assert_eq!(usage_region("us-east-1", "eu-west-1", single), "");
        assert_eq!(usage_region("us-east-1", "us-east-1", mrk), "");
        assert_eq!(usage_region("us-east-1", "eu-west-1", mrk), "eu-west-1");
        assert_eq!(usage_record("", single), single);
        assert_eq!(usage_record("eu-west-1", mrk), format!("eu-west-1/{mrk}"));
    }
}
