//! The encryption context and its canonical encoding, used as AES-GCM AAD.
//!
//! Encoding: `u32` count, then for each pair sorted by key bytes: `u32` key length, key,
//! `u32` value length, value (all big endian). Length prefixes make it unambiguous:
//! `{"ab":"c"}` and `{"a":"bc"}` encode differently.

use std::collections::BTreeMap;

/// An encryption context (string pairs). A `BTreeMap` keeps the keys sorted and unique.
pub type EncryptionContext = BTreeMap<String, String>;

/// Most characters in an encryption context, AWS's quota: the characters (Unicode scalar
/// values, as the JSON strings hold them) of every key and every value, counted together.
pub const MAX_CHARS: usize = 8192;

/// Refuses a context over [`MAX_CHARS`] with a `ValidationException`.
pub fn check_size(ctx: &EncryptionContext) -> Result<(), crate::error::KmsError> {
    let mut n = 0usize;
    for (k, v) in ctx {
        n = n
            .saturating_add(k.chars().count())
            .saturating_add(v.chars().count());
    }
    if n > MAX_CHARS {
        return Err(crate::error::KmsError::validation(format!(
            "Encryption context exceeds the limit of {MAX_CHARS} characters (its keys and values \
             together have {n})."
        )));
    }
    Ok(())
}

/// Canonical bytes of a context.
#[must_use]
pub fn canonical(ctx: &EncryptionContext) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + ctx
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>(),
    );
    push_len(&mut out, ctx.len());
    for (k, v) in ctx {
        push_len(&mut out, k.len());
        out.extend_from_slice(k.as_bytes());
        push_len(&mut out, v.len());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    // Contexts are bounded far below 4 GiB by the request size limit.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn shifted_boundaries_do_not_collide() {
        assert_ne!(
            canonical(&ctx(&[("ab", "c")])),
            canonical(&ctx(&[("a", "bc")]))
        );
        assert_ne!(canonical(&ctx(&[])), canonical(&ctx(&[("", "")])));
        assert_ne!(
            canonical(&ctx(&[("a", "b"), ("c", "d")])),
            canonical(&ctx(&[("a", "b\0\0\0\x01c\0\0\0\x01d")]))
        );
    }

    proptest! {
        #[test]
        fn distinct_contexts_encode_distinctly(a in proptest::collection::btree_map(".{0,4}", ".{0,4}", 0..4),
                                               b in proptest::collection::btree_map(".{0,4}", ".{0,4}", 0..4)) {
            prop_assert_eq!(a == b, canonical(&a) == canonical(&b));
        }
    }
}
