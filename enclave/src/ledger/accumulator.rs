//! The view's keyed accumulator ([`Accumulator`]): one HMAC term per entry, summed mod 2^256.
//! Witnesses hold its value, so the encoding of a term never changes.

use aws_lc_rs::hmac;

use super::{Accumulator, Entry, RecordId};

/// One entry's term of the accumulator.
pub(super) fn summand(key: &hmac::Key, id: &RecordId, e: &Entry) -> [u64; 4] {
    let mut ctx = hmac::Context::with_key(key);
    match id {
        RecordId::Key(u) => {
            ctx.update(&[1]);
            ctx.update(&u.to_be_bytes());
        }
        RecordId::Mrk(u) => {
            ctx.update(&[6]);
            ctx.update(&u.to_be_bytes());
        }
        RecordId::Alias(n) => {
            ctx.update(&[2]);
            ctx.update(n.as_bytes());
        }
        RecordId::Principal(n) => {
            ctx.update(&[3]);
            ctx.update(n.as_bytes());
        }
        RecordId::Grant(u, g) => {
            ctx.update(&[5]);
            ctx.update(&u.to_be_bytes());
            ctx.update(g.as_bytes());
        }
        RecordId::Usage(u, region) => {
            ctx.update(&[7]);
            ctx.update(&u.to_be_bytes());
            // Nothing for a key's only region: the sum of a view from before replicas were
            // tracked apart is unchanged.
            ctx.update(region.as_bytes());
        }
    }
    // The id above has a fixed length (keys) or is followed by a 0 byte that no name holds.
    ctx.update(&[0]);
    let version = e.version();
    ctx.update(&version.seq.to_be_bytes());
    ctx.update(&version.digest);
    ctx.update(&[u8::from(e.live())]);
    let tag = ctx.sign();
    let mut limbs = [0u64; 4];
    for (limb, chunk) in limbs.iter_mut().zip(tag.as_ref().chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *limb = u64::from_le_bytes(b);
    }
    limbs
}

pub(super) fn add(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    let mut out = [0u64; 4];
    let mut carry = false;
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        let (s1, c1) = x.overflowing_add(y);
        let (s2, c2) = s1.overflowing_add(u64::from(carry));
        *o = s2;
        carry = c1 || c2;
    }
    out
}

pub(super) fn sub(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    let mut out = [0u64; 4];
    let mut borrow = false;
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        let (d1, b1) = x.overflowing_sub(y);
        let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
        *o = d2;
        borrow = b1 || b2;
    }
    out
}

pub(super) fn to_bytes(limbs: [u64; 4]) -> Accumulator {
    let mut out = [0u8; 32];
    for (chunk, limb) in out.chunks_exact_mut(8).zip(limbs) {
        chunk.copy_from_slice(&limb.to_le_bytes());
    }
    out
}
