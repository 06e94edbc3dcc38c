//! The enclave core through its host requests: ceremonies, peers, rotation, the state view.

use super::*;
use ekms_attestation::SimulationCa;
use ekms_custody::{CustodianKey, P384PublicKey, ShareFile};

pub(super) fn config() -> Config {
    Config {
        region: "us-east-1".into(),
        regions: ekms_wire::region::Regions::Any,
        account: "111122223333".into(),
    }
}

pub(super) fn call(c: &Core, req: HostRequest) -> EnclaveResponse {
    c.handle(req)
}

pub(super) struct Ceremony {
    pub(super) ca: SimulationCa,
    pub(super) custodians: Vec<CustodianKey>,
    pub(super) shares: Vec<String>,
    pub(super) sealed: SealedBlob,
    pub(super) genesis: Genesis,
}

pub(super) fn init(threshold: u8, n: usize) -> (Core, Ceremony) {
    init_with(threshold, n, 0)
}

pub(super) fn init_with(threshold: u8, n: usize, witnesses: u8) -> (Core, Ceremony) {
    let ca = SimulationCa::generate().unwrap();
    let core = Core::new(config(), test_attestor_for(&ca, b"enclave v1"));
    let custodians: Vec<CustodianKey> = (0..n).map(|_| CustodianKey::generate().unwrap()).collect();
    let EnclaveResponse::DomainCreated(created) = call(
        &core,
        HostRequest::InitDomain {
            custodians: custodians
                .iter()
                .map(|k| k.public_key().to_json().unwrap())
                .collect(),
            threshold,
            admin_key: custodians[0].public_key().to_json().unwrap(),
            nonce: vec![3; 32],
            witnesses,
        },
    ) else {
        panic!("init refused")
    };
    let DomainCreated {
        domain,
        shares,
        genesis,
    } = *created;
    (
        core,
        Ceremony {
            ca,
            custodians,
            shares,
            sealed: domain,
            genesis,
        },
    )
}

/// What `ekms custodian unseal` does: attest with a fresh nonce, re-seal the share to the
/// attested key, submit.
pub(super) fn submit(core: &Core, cer: &Ceremony, i: usize) -> EnclaveResponse {
    let nonce = fresh_nonce().unwrap();
    let EnclaveResponse::Attestation { document } = call(
        core,
        HostRequest::Attest {
            nonce: nonce.clone(),
        },
    ) else {
        panic!()
    };
    let v = ekms_attestation::verify(
        &document,
        &cer.ca.trust_root().unwrap(),
        ekms_attestation::ValidationTime::DocumentTimestamp,
    )
    .unwrap();
    let key = P384PublicKey::from_sec1(v.doc().public_key().unwrap()).unwrap();
    let file = ShareFile::from_json(&cer.shares[i]).unwrap();
    let submitted = file
        .reseal_for_enclave(&cer.custodians[i], &key, &nonce)
        .unwrap();
    call(
        core,
        HostRequest::SubmitShare {
            session: nonce,
            share: submitted.to_json().unwrap(),
        },
    )
}

pub(super) fn restarted(cer: &Ceremony, exe: &[u8]) -> Core {
    let core = Core::new(config(), test_attestor_for(&cer.ca, exe));
    assert!(matches!(
        call(
            &core,
            HostRequest::LoadDomain {
                domain: cer.sealed.clone()
            }
        ),
        EnclaveResponse::Custody(CustodyState::Sealed { have: 0, .. })
    ));
    core
}

pub(super) fn opens_admin(core: &Core, cer: &Ceremony) -> bool {
    matches!(
        call(
            core,
            HostRequest::Open {
                sealed: cer.genesis.principal.clone()
            }
        ),
        EnclaveResponse::Opened { .. }
    )
}

#[test]
fn two_of_three_custodians_unseal_a_restarted_enclave() {
    let (first, cer) = init(2, 3);
    assert!(opens_admin(&first, &cer));
    assert!(matches!(
        call(
            &first,
            HostRequest::InitDomain {
                custodians: vec![],
                threshold: 1,
                admin_key: cer.custodians[0].public_key().to_json().unwrap(),
                nonce: vec![3; 32],
                witnesses: 0,
            }
        ),
        EnclaveResponse::Refused(_)
    ));
    let core = restarted(&cer, b"enclave v1");
    assert!(!opens_admin(&core, &cer));
    let EnclaveResponse::Custody(CustodyState::Sealed {
        have: 1,
        need: Some(2),
        ..
    }) = submit(&core, &cer, 2)
    else {
        panic!()
    };
    // The same share again is refused; nothing is unsealed by one share.
    assert!(matches!(
        submit(&core, &cer, 2),
        EnclaveResponse::Refused(_)
    ));
    assert!(!opens_admin(&core, &cer));
    let EnclaveResponse::Custody(CustodyState::Unsealed {
        threshold: 2,
        total: 3,
        ..
    }) = submit(&core, &cer, 0)
    else {
        panic!()
    };
    assert!(opens_admin(&core, &cer));
}

#[test]
fn the_admin_secret_leaves_only_sealed_to_the_admin_key_and_attested() {
    let (core, cer) = init(2, 3);
    let g = &cer.genesis;
    let v = ekms_attestation::verify(
        &g.document,
        &cer.ca.trust_root().unwrap(),
        ekms_attestation::ValidationTime::DocumentTimestamp,
    )
    .unwrap();
    assert_eq!(v.doc().nonce(), Some(&[3u8; 32][..]));
    let id = peek_domain(&cer.sealed.0).unwrap().domain;
    assert!(
        matches!(core.custody_state(), CustodyState::Unsealed { domain, .. } if domain == hex(&id))
    );
    let delivery = ekms_custody::Delivery::credential(id, &g.access_key_id, &[3; 32]).unwrap();
    delivery
        .check_user_data(&g.sealed_secret, v.doc().user_data())
        .unwrap();
    let secret = delivery
        .open(cer.custodians[0].agreement_key(), &g.sealed_secret)
        .unwrap();
    assert_eq!(secret.len(), 40);
    assert!(secret.iter().all(u8::is_ascii_alphanumeric));
    // Another custodian's key does not open it; the secret is nowhere in what the host gets
    // (every field of the answer, as serialized for the wire).
    assert!(
        delivery
            .open(cer.custodians[1].agreement_key(), &g.sealed_secret)
            .is_err()
    );
    let answer = serde_cbor::to_vec(&(&cer.sealed, &cer.shares, g)).unwrap();
    assert!(answer.len() > g.document.len());
    assert!(!answer.windows(secret.len()).any(|w| w == &secret[..]));
    assert!(!format!("{g:?}").contains(std::str::from_utf8(&secret).unwrap()));
}

#[test]
fn init_refuses_a_bad_admin_key_or_nonce_and_creates_nothing() {
    let core = Core::new(config(), test_attestor());
    let custodian = CustodianKey::generate()
        .unwrap()
        .public_key()
        .to_json()
        .unwrap();
    for (admin_key, nonce) in [
        ("not a key".to_owned(), vec![1; 32]),
        (custodian.clone(), vec![]),
        (custodian.clone(), vec![1; 513]),
    ] {
        assert!(matches!(
            call(
                &core,
                HostRequest::InitDomain {
                    custodians: vec![custodian.clone()],
                    threshold: 1,
                    admin_key,
                    nonce,
                    witnesses: 0,
                }
            ),
            EnclaveResponse::Refused(_)
        ));
        assert_eq!(core.custody_state(), CustodyState::Uninitialised);
    }
}

#[test]
fn a_peer_with_the_same_measurements_is_forwarded_the_domain() {
    let (running, cer) = init(2, 3);
    let joining = restarted(&cer, b"enclave v1");
    assert!(matches!(
        peer(&running, &joining),
        EnclaveResponse::Custody(CustodyState::Unsealed { .. })
    ));
    assert!(opens_admin(&joining, &cer));
}

#[test]
fn a_peer_with_other_measurements_is_refused() {
    let (running, cer) = init(2, 3);
    let joining = restarted(&cer, b"enclave v2 (patched)");
    let EnclaveResponse::Refused(why) = peer(&running, &joining) else {
        panic!()
    };
    assert!(why.contains("joining enclave"), "{why}");
    assert!(!opens_admin(&joining, &cer));
}

pub(super) fn peer(running: &Core, joining: &Core) -> EnclaveResponse {
    let EnclaveResponse::Challenge { nonce } = call(running, HostRequest::PeerChallenge) else {
        panic!()
    };
    let EnclaveResponse::PeerHello {
        document,
        challenge,
    } = call(joining, HostRequest::PeerHello { challenge: nonce })
    else {
        panic!()
    };
    match call(
        running,
        HostRequest::PeerGrant {
            document,
            challenge,
        },
    ) {
        EnclaveResponse::PeerGranted { document, grant } => {
            // A grant replaced by the host is refused (the running enclave attested its digest).
            let mut forged = grant.clone();
            forged[120] ^= 1;
            assert!(matches!(
                call(
                    joining,
                    HostRequest::PeerAccept {
                        document: document.clone(),
                        grant: forged
                    }
                ),
                EnclaveResponse::Refused(_)
            ));
            // The refusal spent the challenge: the genuine grant now needs a new round.
            assert!(matches!(
                call(joining, HostRequest::PeerAccept { document, grant }),
                EnclaveResponse::Refused(_)
            ));
            let EnclaveResponse::Challenge { nonce } = call(running, HostRequest::PeerChallenge)
            else {
                panic!()
            };
            let EnclaveResponse::PeerHello {
                document,
                challenge,
            } = call(joining, HostRequest::PeerHello { challenge: nonce })
            else {
                panic!()
            };
            let EnclaveResponse::PeerGranted { document, grant } = call(
                running,
                HostRequest::PeerGrant {
                    document,
                    challenge,
                },
            ) else {
                panic!()
            };
            call(joining, HostRequest::PeerAccept { document, grant })
        }
        other => other,
    }
}

#[test]
fn rotation_is_staged_then_adopted_and_old_records_reseal() {
    let (core, cer) = init(1, 1);
    let EnclaveResponse::DomainStaged { domain } = call(&core, HostRequest::RotateDomain) else {
        panic!()
    };
    // Not in use until the host stored it and loads it back.
    let CustodyState::Unsealed { keys, .. } = core.custody_state() else {
        panic!()
    };
    assert_eq!(keys.len(), 1);
    call(&core, HostRequest::LoadDomain { domain });
    let CustodyState::Unsealed {
        keys,
        generation: 2,
        ..
    } = core.custody_state()
    else {
        panic!()
    };
    assert_eq!(keys.len(), 2);
    assert!(opens_admin(&core, &cer));
    let EnclaveResponse::Resealed(Some((StoreWrite::PutPrincipal { sealed, .. }, token))) = call(
        &core,
        HostRequest::Reseal {
            sealed: cer.genesis.principal.clone(),
        },
    ) else {
        panic!()
    };
    assert!(matches!(
        call(
            &core,
            HostRequest::Commit {
                tokens: vec![token]
            }
        ),
        EnclaveResponse::Committed
    ));
    assert_eq!(hex(&record::peek(&sealed.0).unwrap().domain), keys[1]);
    assert!(matches!(
        call(
            &core,
            HostRequest::Reseal {
                sealed: sealed.clone()
            }
        ),
        EnclaveResponse::Resealed(None)
    ));
    let EnclaveResponse::DomainStaged { domain } = call(&core, HostRequest::RetireDomainKeys)
    else {
        panic!()
    };
    call(&core, HostRequest::LoadDomain { domain });
    let CustodyState::Unsealed {
        keys,
        generation: 3,
        ..
    } = core.custody_state()
    else {
        panic!()
    };
    assert_eq!(keys.len(), 1);
    assert!(!opens_admin(&core, &cer));
    assert!(matches!(
        call(&core, HostRequest::Open { sealed }),
        EnclaveResponse::Opened { .. }
    ));
}

/// A KMS call with no signature and no records.
fn unsigned_call() -> KmsCall {
    KmsCall {
        http: ekms_wire::msg::HttpRequest {
            method: "POST".into(),
            uri: "/".into(),
            ..Default::default()
        },
        ..KmsCall::default()
    }
}

#[test]
fn a_sealed_enclave_refuses_kms_calls_with_a_retryable_error() {
    let (_, cer) = init(2, 3);
    let core = restarted(&cer, b"enclave v1");
    let call_ = unsigned_call();
    let EnclaveResponse::Kms(KmsOutcome::Err { code, message }) =
        call(&core, HostRequest::Kms(Box::new(call_)))
    else {
        panic!()
    };
    assert_eq!(code, KmsErrorCode::KMSInternalException);
    assert!(
        message.contains("sealed") && message.contains("holds 0"),
        "{message}"
    );
}

#[test]
fn a_fresh_domain_serves_and_a_restarted_one_waits_for_its_records() {
    let (core, cer) = init(1, 1);
    let EnclaveResponse::Status(s) = call(&core, HostRequest::Status) else {
        panic!()
    };
    assert!(s.ledger_ready && !s.follower);
    let restarted = restarted(&cer, b"enclave v1");
    assert!(matches!(
        submit(&restarted, &cer, 0),
        EnclaveResponse::Custody(CustodyState::Unsealed { .. })
    ));
    let EnclaveResponse::Status(s) = call(&restarted, HostRequest::Status) else {
        panic!()
    };
    assert!(!s.ledger_ready);
    assert!(matches!(
        call(
            &restarted,
            HostRequest::LoadRecords {
                records: vec![cer.genesis.principal.clone()],
                done: true
            }
        ),
        EnclaveResponse::Loaded {
            records: 1,
            ready: true
        }
    ));
}

#[test]
fn a_shifted_clock_is_refused_outside_simulation() {
    let ahead = crate::clock::Clock::simulation_ahead_by_days(91).unwrap();
    // The mock NSM with the simulation root: the one setup that may shift its clock.
    let sim = Core::new(config(), test_attestor())
        .with_clock(ahead)
        .unwrap();
    assert_eq!(sim.clock, ahead);
    // An attestor whose documents must chain to the AWS Nitro root is real hardware.
    let nitro = Attestor::new(
        Box::new(ekms_attestation::MockNsm::from_executable_bytes(
            SimulationCa::generate().unwrap(),
            b"enclave",
        )),
        ekms_attestation::TrustRoot::aws_nitro().unwrap(),
    )
    .unwrap();
    let core = Core::new(config(), nitro);
    assert!(matches!(
        core.with_clock(ahead),
        Err(EnclaveError::SimulationOnly)
    ));
    // The machine's clock is every enclave's.
    let nitro = Attestor::new(
        Box::new(ekms_attestation::MockNsm::from_executable_bytes(
            SimulationCa::generate().unwrap(),
            b"enclave",
        )),
        ekms_attestation::TrustRoot::aws_nitro().unwrap(),
    )
    .unwrap();
    assert!(
        Core::new(config(), nitro)
            .with_clock(crate::clock::Clock::system())
            .is_ok()
    );
}

#[test]
fn a_host_that_stops_draining_the_audit_log_stops_service_never_a_record() {
    let (core, _) = init(1, 1);
    let unsigned = unsigned_call;
    let drain = |core: &Core| {
        let mut all = Vec::new();
        loop {
            let EnclaveResponse::AuditRecords { blocks, more } =
                call(core, HostRequest::AuditDrain)
            else {
                panic!()
            };
            all.extend(blocks.iter().flat_map(|b| b.records().map(|(seq, ..)| seq)));
            if !more {
                return all;
            }
        }
    };
    // Answered and recorded.
    assert!(matches!(
        call(&core, HostRequest::Kms(Box::new(unsigned()))),
        EnclaveResponse::Kms(KmsOutcome::Err { .. })
    ));
    let first = drain(&core);
    assert!(!first.is_empty());
    // The host collects nothing while calls keep coming, until the backlog is full.
    let domain = core.domain().unwrap();
    while core.audit.has_room() {
        core.audit.append(
            &domain,
            "1",
            &unsigned(),
            &crate::audit::Note::default(),
            crate::audit::Outcome::Success,
            0,
        );
    }
    let EnclaveResponse::Kms(KmsOutcome::Err { code, message }) =
        call(&core, HostRequest::Kms(Box::new(unsigned())))
    else {
        panic!()
    };
    assert_eq!(code, KmsErrorCode::ThrottlingException);
    assert_eq!(message, AUDIT_BACKLOG);
    // Once drained (in order, with no gap), calls are answered again.
    let backlog = drain(&core);
    let seqs: Vec<u64> = first.iter().chain(&backlog).copied().collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap or a reorder"
    );
    assert!(matches!(
        call(&core, HostRequest::Kms(Box::new(unsigned()))),
        EnclaveResponse::Kms(KmsOutcome::Err { code, .. }) if code != KmsErrorCode::ThrottlingException
    ));
    let next = drain(&core);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0], seqs.last().unwrap() + 1);
}
