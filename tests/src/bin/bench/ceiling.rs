//! The crypto ceiling: each benchmarked operation's cryptography done in-process with aws-lc-rs,
//! on one thread and on all, for comparison with the appliance's throughput.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::anyhow;
use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey},
    rand,
};

/// One in-process operation of the ceiling, run `n` times.
pub(crate) fn ceiling_op(
    key: &LessSafeKey,
    op: &str,
    sealed: &[u8],
    sealed_nonce: [u8; 12],
    n: usize,
) -> anyhow::Result<()> {
    let rng = || anyhow!("rng failed");
    for _ in 0..n {
        let mut nonce = [0u8; 12];
        if op == "decrypt" {
            {
                let mut buf = [0u8; 48];
                buf.copy_from_slice(sealed);
                let pt = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(sealed_nonce),
                        Aad::empty(),
                        &mut buf,
                    )
                    .map_err(|_| anyhow!("open failed"))?;
                std::hint::black_box(pt);
            }
        } else {
            {
                let mut pt = [7u8; 32];
                if op == "generate-data-key" {
                    rand::fill(&mut pt).map_err(|_| rng())?;
                }
                rand::fill(&mut nonce).map_err(|_| rng())?;
                let tag = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut pt,
                    )
                    .map_err(|_| anyhow!("seal failed"))?;
                std::hint::black_box(&pt);
                std::hint::black_box(tag.as_ref());
            }
        }
    }
    Ok(())
}

/// One operation's in-process work, run many times by [`ceiling`].
type Work = Arc<dyn Fn() -> anyhow::Result<()> + Send + Sync>;

/// The work of benchmarked operation `op`, if it has a ceiling.
fn work_for(op: &str) -> anyhow::Result<Option<Work>> {
    let msg = [0x42u8; 32];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    Ok(Some(match op {
        "encrypt" | "decrypt" | "generate-data-key" => {
            let mut key_bytes = [0u8; 32];
            rand::fill(&mut key_bytes).map_err(|_| anyhow!("rng failed"))?;
            let key = LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &key_bytes).map_err(|_| anyhow!("bad key"))?,
            );
            let nonce = [1u8; 12];
            let mut sealed = vec![7u8; 32];
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .map_err(|_| anyhow!("seal failed"))?;
            let op = op.to_owned();
            Arc::new(move || ceiling_op(&key, &op, &sealed, nonce, 1))
        }
        "sign-ecdsa" | "verify-ecdsa" => {
            use aws_lc_rs::signature::{self, KeyPair as _};
            let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
            let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng)
                .map_err(|_| anyhow!("keygen failed"))?;
            // The enclave keeps parsed keys (enclave/src/parsed_keys.rs), so the ceiling signs
            // with a parsed key too.
            let key = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref())
                .map_err(|_| anyhow!("bad key"))?;
            let public = key.public_key().as_ref().to_vec();
            let sig = key.sign(&rng, &msg).map_err(|_| anyhow!("sign failed"))?;
            let sig = sig.as_ref().to_vec();
            if op == "sign-ecdsa" {
                Arc::new(move || {
                    let s = key.sign(&rng, &msg).map_err(|_| anyhow!("sign failed"))?;
                    std::hint::black_box(s);
                    Ok(())
                })
            } else {
                Arc::new(move || {
                    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &public)
                        .verify(&msg, &sig)
                        .map_err(|_| anyhow!("verify failed"))
                })
            }
        }
        "sign-rsa" => {
            use aws_lc_rs::{rsa, signature};
            let key = rsa::KeyPair::generate(rsa::KeySize::Rsa2048)
                .map_err(|_| anyhow!("keygen failed"))?;
            Arc::new(move || {
                let mut sig = vec![0u8; key.public_modulus_len()];
                key.sign(&signature::RSA_PSS_SHA256, &rng, &msg, &mut sig)
                    .map_err(|_| anyhow!("sign failed"))?;
                std::hint::black_box(sig);
                Ok(())
            })
        }
        "decrypt-rsa" => {
            use aws_lc_rs::rsa;
            let private = rsa::PrivateDecryptingKey::generate(rsa::KeySize::Rsa2048)
                .map_err(|_| anyhow!("keygen failed"))?;
            let public = rsa::OaepPublicEncryptingKey::new(private.public_key())
                .map_err(|_| anyhow!("bad key"))?;
            let mut blob = vec![0u8; public.ciphertext_size()];
            public
                .encrypt(&rsa::OAEP_SHA256_MGF1SHA256, &msg, &mut blob, None)
                .map_err(|_| anyhow!("encrypt failed"))?;
            let key =
                rsa::OaepPrivateDecryptingKey::new(private).map_err(|_| anyhow!("bad key"))?;
            Arc::new(move || {
                let mut out = vec![0u8; key.min_output_size()];
                let pt = key
                    .decrypt(&rsa::OAEP_SHA256_MGF1SHA256, &blob, &mut out, None)
                    .map_err(|_| anyhow!("decrypt failed"))?;
                std::hint::black_box(pt);
                Ok(())
            })
        }
        "generate-mac" => {
            use aws_lc_rs::hmac;
            let mut k = [0u8; 32];
            rand::fill(&mut k).map_err(|_| anyhow!("rng failed"))?;
            Arc::new(move || {
                let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k), &msg);
                std::hint::black_box(tag);
                Ok(())
            })
        }
        _ => return Ok(None),
    }))
}

/// The ceiling of each operation of `ops` that has one: its in-process work on one thread and on
/// all, in operations per second.
pub(crate) fn ceiling(ops: &[String], dur: Duration) -> anyhow::Result<Vec<(String, f64)>> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut out = Vec::new();
    for op in ops {
        let Some(work) = work_for(op)? else { continue };
        for workers in [1, threads] {
            let end = Instant::now() + dur;
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let work = Arc::clone(&work);
                    std::thread::spawn(move || -> anyhow::Result<usize> {
                        let mut n = 0;
                        while Instant::now() < end {
                            for _ in 0..16 {
                                work()?;
                            }
                            n += 16;
                        }
                        Ok(n)
                    })
                })
                .collect();
            let mut total = 0usize;
            for h in handles {
                total += h.join().map_err(|_| anyhow!("ceiling thread panicked"))??;
            }
            #[allow(clippy::cast_precision_loss)]
            out.push((
                format!(
                    "{op} ({workers} thread{})",
                    if workers == 1 { "" } else { "s" }
                ),
                total as f64 / dur.as_secs_f64(),
            ));
        }
    }
    Ok(out)
}
