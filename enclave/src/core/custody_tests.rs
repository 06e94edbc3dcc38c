//! The custody ceremony as an attacker on the network would try it: forged, misplaced,
//! replayed and stale submissions, a flood of anonymous attestation requests and peer
//! challenges, a damaged share file, and a version 1 domain record.

use super::tests::{Ceremony, call, init, opens_admin, peer, restarted, submit};
use super::*;
use ekms_custody::{CustodianKey, ShareFile};

fn identity(core: &Core) -> P384PublicKey {
    P384PublicKey::from_sec1(core.attestor.identity_public()).unwrap()
}

/// A submission of `share` signed by `signer`, sealed to `core`'s identity key for `session`.
fn signed(
    core: &Core,
    domain: [u8; 8],
    share: &Share,
    signer: &CustodianKey,
    session: &[u8],
) -> String {
    SubmittedShare::encrypt_for_enclave(share, signer, &identity(core), domain, session)
        .unwrap()
        .to_json()
        .unwrap()
}

fn submit_json(core: &Core, session: &[u8], share: String) -> EnclaveResponse {
    call(
        core,
        HostRequest::SubmitShare {
            session: session.to_vec(),
            share,
        },
    )
}

fn have(core: &Core) -> u8 {
    match core.custody_state() {
        CustodyState::Sealed { have, .. } => have,
        other => panic!("{other:?}"),
    }
}

fn share_of(cer: &Ceremony, i: usize) -> Share {
    ShareFile::from_json(&cer.shares[i])
        .unwrap()
        .decrypt(&cer.custodians[i])
        .unwrap()
}

fn domain_of(cer: &Ceremony) -> [u8; 8] {
    peek_domain(&cer.sealed.0).unwrap().domain
}

fn refusal(r: EnclaveResponse) -> String {
    match r {
        EnclaveResponse::Refused(why) => why,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn forged_misplaced_and_foreign_submissions_take_no_slot_and_discard_nothing() {
    let (_, cer) = init(2, 3);
    let core = restarted(&cer, b"enclave v1");
    let id = domain_of(&cer);
    // A good share first: nothing below may take it away.
    assert!(matches!(
        submit(&core, &cer, 0),
        EnclaveResponse::Custody(CustodyState::Sealed { have: 1, .. })
    ));

    // Garbage.
    for junk in ["", "{}", "null", "[1,2]", &"x".repeat(5000)] {
        let why = refusal(submit_json(&core, b"s", junk.to_owned()));
        assert!(why.contains("does not parse"), "{why}");
    }
    // An old, unsigned (version 1) submission is named as such.
    let v1 = r#"{"kind":"ekms-submitted-share","version":1,"domain_id":"0011223344556677","index":2,"threshold":2,"total":3,"sealed_share":"AAAA"}"#;
    assert!(refusal(submit_json(&core, b"s", v1.into())).contains("unsigned"));

    // An attacker seals a share of its own to the enclave's real identity key, signed with its
    // own key: not the custodian of index 2.
    let mallory = CustodianKey::generate().unwrap();
    let fake = Share::new(2, 2, 3, [7; 32]).unwrap();
    let why = refusal(submit_json(
        &core,
        b"m1",
        signed(&core, id, &fake, &mallory, b"m1"),
    ));
    assert!(why.contains("belongs to custodian"), "{why}");
    // It names bob's public key as the signer, with its own signature.
    let mut claims: serde_json::Value =
        serde_json::from_str(&signed(&core, id, &fake, &mallory, b"m2")).unwrap();
    claims["custodian_key"] = hex(cer.custodians[1].public_key().key().sec1()).into();
    let why = refusal(submit_json(&core, b"m2", claims.to_string()));
    assert!(why.contains("signature does not verify"), "{why}");
    // Bob's real submission, with the session the host relays changed.
    let bob = signed(&core, id, &share_of(&cer, 1), &cer.custodians[1], b"bob-1");
    let why = refusal(submit_json(&core, b"bob-2", bob.clone()));
    assert!(why.contains("signature does not verify"), "{why}");
    // Misplaced: alice signs her own share value as index 3 (carol's position).
    let alice_as_3 = Share::new(3, 2, 3, *share_of(&cer, 0).expose()).unwrap();
    let why = refusal(submit_json(
        &core,
        b"a3",
        signed(&core, id, &alice_as_3, &cer.custodians[0], b"a3"),
    ));
    assert!(why.contains("share 3 belongs to custodian"), "{why}");
    // Another domain: a custodian of this one signs a share labelled with another domain id.
    let why = refusal(submit_json(
        &core,
        b"d",
        signed(
            &core,
            [0xee; 8],
            &share_of(&cer, 1),
            &cer.custodians[1],
            b"d",
        ),
    ));
    assert!(why.contains("domain"), "{why}");
    // Another sharing (2-of-2 claimed for a 2-of-3 domain).
    let other_sharing = Share::new(2, 2, 2, *share_of(&cer, 1).expose()).unwrap();
    let why = refusal(submit_json(
        &core,
        b"o",
        signed(&core, id, &other_sharing, &cer.custodians[1], b"o"),
    ));
    assert!(why.contains("2-of-2"), "{why}");

    // None of it took a slot or discarded alice's share; bob's genuine submission unseals.
    assert_eq!(have(&core), 1);
    assert!(matches!(
        submit_json(&core, b"bob-1", bob),
        EnclaveResponse::Custody(CustodyState::Unsealed { .. })
    ));
    assert!(opens_admin(&core, &cer));
}

#[test]
fn replays_in_this_start_and_from_an_earlier_start_are_refused() {
    let (_, cer) = init(2, 3);
    let earlier = restarted(&cer, b"enclave v1");
    let id = domain_of(&cer);
    let captured = signed(&earlier, id, &share_of(&cer, 1), &cer.custodians[1], b"old");
    let core = restarted(&cer, b"enclave v1");
    // Sealed to the identity key of an earlier start: named as such, no slot taken.
    let why = refusal(submit_json(&core, b"old", captured));
    assert!(why.contains("earlier start"), "{why}");
    assert_eq!(have(&core), 0);

    // This start: alice's submission is taken once; the same bytes again are a replay.
    let alice = signed(&core, id, &share_of(&cer, 0), &cer.custodians[0], b"a");
    assert!(matches!(
        submit_json(&core, b"a", alice.clone()),
        EnclaveResponse::Custody(CustodyState::Sealed { have: 1, .. })
    ));
    let why = refusal(submit_json(&core, b"a", alice));
    assert!(why.contains("already used"), "{why}");
    // A fresh session of hers for the same slot: already received, still one share.
    let again = signed(&core, id, &share_of(&cer, 0), &cer.custodians[0], b"a2");
    let why = refusal(submit_json(&core, b"a2", again));
    assert!(why.contains("already received"), "{why}");
    assert_eq!(have(&core), 1);
    // A replay of a refused attempt is still a replay, and takes nothing.
    let early = signed(&core, id, &share_of(&cer, 2), &cer.custodians[2], b"c");
    let why = refusal(submit_json(&core, b"c-other", early.clone()));
    assert!(why.contains("signature"), "{why}");
    assert!(matches!(
        submit_json(&core, b"c", early.clone()),
        EnclaveResponse::Custody(CustodyState::Unsealed { .. })
    ));
}

#[test]
fn a_damaged_share_keeps_the_good_ones_and_a_later_custodian_completes_the_unseal() {
    let (_, cer) = init(2, 3);
    let core = restarted(&cer, b"enclave v1");
    let id = domain_of(&cer);
    assert!(matches!(
        submit(&core, &cer, 0),
        EnclaveResponse::Custody(CustodyState::Sealed { have: 1, .. })
    ));
    // Bob's share file is damaged: his tool submits a wrong value, properly signed.
    let damaged = Share::new(2, 2, 3, [0x5a; 32]).unwrap();
    let why = refusal(submit_json(
        &core,
        b"b",
        signed(&core, id, &damaged, &cer.custodians[1], b"b"),
    ));
    assert!(why.contains("kept"), "{why}");
    assert_eq!(have(&core), 2);
    // Carol's share together with alice's opens it.
    assert!(matches!(
        submit(&core, &cer, 2),
        EnclaveResponse::Custody(CustodyState::Unsealed { .. })
    ));
    assert!(opens_admin(&core, &cer));
}

#[test]
fn when_every_share_is_held_and_none_fit_they_are_discarded_once() {
    let (_, cer) = init(2, 2);
    let core = restarted(&cer, b"enclave v1");
    let id = domain_of(&cer);
    assert_eq!(have(&core), 0);
    assert!(matches!(
        submit(&core, &cer, 0),
        EnclaveResponse::Custody(CustodyState::Sealed { have: 1, .. })
    ));
    let damaged = Share::new(2, 2, 2, [0x5a; 32]).unwrap();
    let why = refusal(submit_json(
        &core,
        b"b",
        signed(&core, id, &damaged, &cer.custodians[1], b"b"),
    ));
    assert!(why.contains("every custodian's share is held"), "{why}");
    assert_eq!(have(&core), 0);
    // The custodians submit again (fresh sessions) and it opens.
    assert!(matches!(
        submit(&core, &cer, 1),
        EnclaveResponse::Custody(_)
    ));
    assert!(matches!(
        submit(&core, &cer, 0),
        EnclaveResponse::Custody(CustodyState::Unsealed { .. })
    ));
}

#[test]
fn a_host_that_lists_its_own_keys_can_block_but_never_unseal() {
    let (_, cer) = init(2, 2);
    let core = Core::new(
        super::tests::config(),
        super::test_attestor_for(&cer.ca, b"enclave v1"),
    );
    // The host edits the header: mallory's keys in place of the custodians'.
    let mallory = [
        CustodianKey::generate().unwrap(),
        CustodianKey::generate().unwrap(),
    ];
    let mut edited = cer.sealed.0.clone();
    for (i, m) in mallory.iter().enumerate() {
        let at = ekms_wire::sealed::DOMAIN_HEADER_LEN + 16 * i;
        edited[at..at + 16].copy_from_slice(&m.public_key().fingerprint());
    }
    assert!(matches!(
        call(
            &core,
            HostRequest::LoadDomain {
                domain: SealedBlob(edited)
            }
        ),
        EnclaveResponse::Custody(CustodyState::Sealed { .. })
    ));
    let id = domain_of(&cer);
    for (i, m) in mallory.iter().enumerate() {
        let s = Share::new(u8::try_from(i + 1).unwrap(), 2, 2, [9; 32]).unwrap();
        let session = [u8::try_from(i).unwrap(); 8];
        let _ = submit_json(&core, &session, signed(&core, id, &s, m, &session));
    }
    assert!(matches!(core.custody_state(), CustodyState::Sealed { .. }));
    assert!(!opens_admin(&core, &cer));
    // The genuine record again: the shares its list does not name are let go, and the real
    // custodians unseal.
    assert!(matches!(
        call(
            &core,
            HostRequest::LoadDomain {
                domain: cer.sealed.clone()
            }
        ),
        EnclaveResponse::Custody(CustodyState::Sealed { have: 0, .. })
    ));
    submit(&core, &cer, 0);
    assert!(matches!(
        submit(&core, &cer, 1),
        EnclaveResponse::Custody(CustodyState::Unsealed { .. })
    ));
}

#[test]
fn anonymous_attestations_and_peer_challenges_flush_no_session() {
    let (running, cer) = init(2, 3);
    let joining = restarted(&cer, b"enclave v1");
    let id = domain_of(&cer);
    // Outstanding: a custodian's prepared submission to the joining enclave, the running
    // enclave's challenge to it, and the joining enclave's challenge back.
    let prepared = signed(
        &joining,
        id,
        &share_of(&cer, 0),
        &cer.custodians[0],
        b"alice-nonce",
    );
    let EnclaveResponse::Challenge { nonce } = call(&running, HostRequest::PeerChallenge) else {
        panic!()
    };
    let EnclaveResponse::PeerHello {
        document,
        challenge,
    } = call(&joining, HostRequest::PeerHello { challenge: nonce })
    else {
        panic!()
    };
    // 2,000 strangers on each enclave.
    for i in 0u32..2000 {
        let nonce = i.to_be_bytes().to_vec();
        for core in [&running, &joining] {
            assert!(matches!(
                call(
                    core,
                    HostRequest::Attest {
                        nonce: nonce.clone()
                    }
                ),
                EnclaveResponse::Attestation { .. }
            ));
        }
        assert!(matches!(
            call(&running, HostRequest::PeerChallenge),
            EnclaveResponse::Challenge { .. }
        ));
    }
    // Every outstanding session still works.
    assert!(matches!(
        submit_json(&joining, b"alice-nonce", prepared),
        EnclaveResponse::Custody(CustodyState::Sealed { have: 1, .. })
    ));
    let EnclaveResponse::PeerGranted { document, grant } = call(
        &running,
        HostRequest::PeerGrant {
            document,
            challenge,
        },
    ) else {
        panic!("the running enclave's challenge was flushed")
    };
    assert!(matches!(
        call(&joining, HostRequest::PeerAccept { document, grant }),
        EnclaveResponse::Custody(CustodyState::Unsealed { .. })
    ));
}

#[test]
fn a_peer_challenge_is_redeemed_once_and_only_at_its_own_step() {
    let (running, cer) = init(2, 3);
    let joining = restarted(&cer, b"enclave v1");
    // A challenge this enclave never minted, in a genuine joiner's document.
    let EnclaveResponse::PeerHello {
        document,
        challenge,
    } = call(
        &joining,
        HostRequest::PeerHello {
            challenge: vec![1; 56],
        },
    )
    else {
        panic!()
    };
    let why = refusal(call(
        &running,
        HostRequest::PeerGrant {
            document,
            challenge: challenge.clone(),
        },
    ));
    assert!(why.contains("no challenge"), "{why}");
    // A document over a challenge the joiner minted (not the running enclave): refused.
    let EnclaveResponse::PeerHello { document, .. } =
        call(&joining, HostRequest::PeerHello { challenge })
    else {
        panic!()
    };
    assert!(
        refusal(call(
            &running,
            HostRequest::PeerGrant {
                document,
                challenge: vec![2; 32]
            }
        ))
        .contains("no challenge")
    );
    // The full exchange still works (and a replayed grant is refused inside `peer`).
    assert!(matches!(
        peer(&running, &joining),
        EnclaveResponse::Custody(CustodyState::Unsealed { .. })
    ));
}

#[test]
fn a_version_1_domain_record_still_unseals_and_is_upgraded() {
    let (_, cer) = init(1, 1);
    let v1 = crate::custody::tests::as_version_1(share_of(&cer, 0).expose(), &cer.sealed.0);
    let core = Core::new(
        super::tests::config(),
        super::test_attestor_for(&cer.ca, b"enclave v1"),
    );
    assert!(matches!(
        call(
            &core,
            HostRequest::LoadDomain {
                domain: SealedBlob(v1)
            }
        ),
        EnclaveResponse::Custody(CustodyState::Sealed { have: 0, .. })
    ));
    assert!(matches!(
        submit(&core, &cer, 0),
        EnclaveResponse::Custody(CustodyState::Unsealed { generation: 1, .. })
    ));
    let EnclaveResponse::DomainStaged { domain } = call(&core, HostRequest::UpgradeDomain) else {
        panic!()
    };
    let h = peek_domain(&domain.0).unwrap();
    assert_eq!((h.version, h.generation), (2, 2));
    assert_eq!(
        h.custodian(1),
        Some(cer.custodians[0].public_key().fingerprint())
    );
}
