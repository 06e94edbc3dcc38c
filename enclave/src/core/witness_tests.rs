//! Witnessed rounds through host requests: a writer and three witness enclaves of one domain,
//! with the host's relaying done by the test (which plays the hostile host where it says so).

use super::tests::{Ceremony, call, init_with, peer, restarted, submit};
use super::*;
use ekms_wire::msg::{Round, WitnessStatus};

const EXE: &[u8] = b"enclave v1";

/// A witnessed domain (3 witnesses): the writer, the ceremony, three joined followers.
fn witnessed() -> (Core, Ceremony, Vec<Core>) {
    let (writer, cer) = init_with(1, 1, 3);
    let witnesses = (0..3).map(|_| joined(&writer, &cer)).collect();
    (writer, cer, witnesses)
}

fn joined(writer: &Core, cer: &Ceremony) -> Core {
    let w = restarted(cer, EXE);
    assert!(matches!(
        peer(writer, &w),
        EnclaveResponse::Custody(CustodyState::Unsealed { .. })
    ));
    w
}

/// Sends `message` to each witness; their authentic replies.
fn relay(witnesses: &[&Core], message: &[u8]) -> Vec<Vec<u8>> {
    witnesses
        .iter()
        .filter_map(|w| {
            match call(
                w,
                HostRequest::Witness {
                    message: message.to_vec(),
                },
            ) {
                EnclaveResponse::Witnessed { message } => Some(message),
                _ => None,
            }
        })
        .collect()
}

/// Runs `round` as an honest host does, with `witnesses` reachable.
fn run(writer: &Core, witnesses: &[&Core], round: &Round) -> EnclaveResponse {
    let confirm = if round.confirm.is_empty() {
        let acks = relay(witnesses, &round.intent);
        match call(
            writer,
            HostRequest::Confirm {
                round: round.id,
                acks,
            },
        ) {
            EnclaveResponse::Confirmation { message } => message,
            other => return other,
        }
    } else {
        round.confirm.clone()
    };
    let acks = relay(witnesses, &confirm);
    call(
        writer,
        HostRequest::Ratify {
            round: round.id,
            acks,
        },
    )
}

/// Queries the witnesses and runs the round the writer asks for, if any.
fn sync(writer: &Core, witnesses: &[&Core]) -> WitnessStatus {
    let EnclaveResponse::WitnessQuery { message } = call(writer, HostRequest::WitnessQuery) else {
        panic!("no query")
    };
    let answers = relay(witnesses, &message);
    let EnclaveResponse::WitnessStatus(status) =
        call(writer, HostRequest::WitnessAnswers { answers })
    else {
        panic!("no status")
    };
    if let Some(round) = &status.round {
        assert!(matches!(
            run(writer, witnesses, round),
            EnclaveResponse::Committed
        ));
    }
    status
}

/// A genuine write: the admin principal re-sealed at a new generation. Returns its record and
/// the token that commits it.
fn touch(writer: &Core, current: &SealedBlob) -> (SealedBlob, u64) {
    let d = writer.domain().unwrap();
    let keys = d.keyring();
    let h = record::peek(&current.0).unwrap();
    let id = h.id.to_owned();
    let mut rec: PrincipalRecord =
        record::open(keys, Kind::Principal, Some(&id), &current.0).unwrap();
    let rid = RecordId::principal(&id);
    let opened = writer.ledger().unwrap().current(&rid).unwrap();
    rec.generation = writer.ledger().unwrap().next_seq();
    let sealed = record::seal(keys.current(), Kind::Principal, &id, &rec).unwrap();
    let token = writer
        .ledger()
        .unwrap()
        .prepare(vec![crate::ledger::Change {
            id: rid,
            expected: Some(opened),
            new: Version {
                seq: rec.generation,
                digest: digest_of(&sealed),
            },
            live: true,
            target: None,
        }]);
    (SealedBlob(sealed), token)
}

/// The round `Propose` starts for `token`.
fn proposed(writer: &Core, token: u64) -> Round {
    let EnclaveResponse::Proposed {
        round: Some(round), ..
    } = call(
        writer,
        HostRequest::Propose {
            tokens: vec![token],
        },
    )
    else {
        panic!("not proposed")
    };
    round
}

/// The confirmation `Confirm` releases for `round` with `acks`.
fn confirmed(writer: &Core, round: &Round, acks: Vec<Vec<u8>>) -> Vec<u8> {
    let EnclaveResponse::Confirmation { message } = call(
        writer,
        HostRequest::Confirm {
            round: round.id,
            acks,
        },
    ) else {
        panic!("not confirmed")
    };
    message
}

/// Writes through a full round; returns the new record.
fn write(writer: &Core, witnesses: &[&Core], current: &SealedBlob) -> SealedBlob {
    let (sealed, token) = touch(writer, current);
    let EnclaveResponse::Proposed {
        round: Some(round),
        refused,
    } = call(
        writer,
        HostRequest::Propose {
            tokens: vec![token],
        },
    )
    else {
        panic!("not proposed")
    };
    assert!(refused.is_empty());
    assert!(matches!(
        run(writer, witnesses, &round),
        EnclaveResponse::Committed
    ));
    sealed
}

fn accepts(core: &Core, sealed: &SealedBlob) -> bool {
    let h = record::peek(&sealed.0).unwrap();
    let rec: PrincipalRecord = record::open(
        core.domain().unwrap().keyring(),
        Kind::Principal,
        Some(h.id),
        &sealed.0,
    )
    .unwrap();
    core.check_current(&RecordId::principal(h.id), rec.generation, &sealed.0)
        .is_ok()
}

fn status(core: &Core) -> StatusInfo {
    let EnclaveResponse::Status(s) = call(core, HostRequest::Status) else {
        panic!()
    };
    s
}

/// The writer restarted and unsealed, with `records` loaded as the store holds them.
fn restart(cer: &Ceremony, records: Vec<SealedBlob>) -> Core {
    let w = restarted(cer, EXE);
    assert!(matches!(
        submit(&w, cer, 0),
        EnclaveResponse::Custody(CustodyState::Unsealed { .. })
    ));
    assert!(matches!(
        call(
            &w,
            HostRequest::LoadRecords {
                records,
                done: true
            }
        ),
        EnclaveResponse::Loaded { ready: true, .. }
    ));
    w
}

#[test]
#[allow(clippy::too_many_lines)]
fn a_witnessed_domain_commits_only_with_a_quorum_of_its_witnesses() {
    let (writer, cer, w) = witnessed();
    let all: Vec<&Core> = w.iter().collect();
    let s = status(&writer);
    assert_eq!((s.witnesses, s.fresh), (3, true));
    // No witness enrolled yet: nothing commits, and the plain commit is refused.
    let (_, token) = touch(&writer, &cer.genesis.principal);
    assert!(matches!(
        call(&writer, HostRequest::Propose { tokens: vec![token] }),
        EnclaveResponse::Refused(why) if why.contains("enrolled")
    ));
    assert!(matches!(
        call(
            &writer,
            HostRequest::Commit {
                tokens: vec![token]
            }
        ),
        EnclaveResponse::Fault(Fault::Witnessed)
    ));
    // Enrol the three.
    let st = sync(&writer, &all);
    assert!(st.round.is_some(), "{st:?}");
    assert!(sync(&writer, &all).round.is_none());
    // The writer itself is no witness.
    assert!(relay(&[&writer], b"x").is_empty());

    let (sealed, token) = touch(&writer, &cer.genesis.principal);
    let round = proposed(&writer, token);
    // One round at a time.
    assert!(matches!(
        call(&writer, HostRequest::Propose { tokens: vec![] }),
        EnclaveResponse::Fault(Fault::Busy)
    ));
    // One intent acknowledgement is not a quorum; the same one twice is still one.
    let one = relay(&all[..1], &round.intent);
    let twice = [one.clone(), one].concat();
    assert!(matches!(
        call(
            &writer,
            HostRequest::Confirm {
                round: round.id,
                acks: twice
            }
        ),
        EnclaveResponse::Refused(_)
    ));
    // A forged acknowledgement does not count.
    let mut forged = relay(&all[1..2], &round.intent);
    *forged[0].last_mut().unwrap() ^= 1;
    let acks = [relay(&all[..1], &round.intent), forged].concat();
    assert!(matches!(
        call(
            &writer,
            HostRequest::Confirm {
                round: round.id,
                acks
            }
        ),
        EnclaveResponse::Refused(_)
    ));
    let acks = relay(&all[..2], &round.intent);
    let message = confirmed(&writer, &round, acks);
    // Intent acknowledgements are not confirmations; the view has not moved yet.
    let intent_acks = relay(&all[2..], &round.intent);
    assert!(matches!(
        call(
            &writer,
            HostRequest::Ratify {
                round: round.id,
                acks: intent_acks
            }
        ),
        EnclaveResponse::Refused(_)
    ));
    assert!(!accepts(&writer, &sealed));
    assert!(matches!(
        call(
            &writer,
            HostRequest::Abandon {
                round: round.id + 1
            }
        ),
        EnclaveResponse::Refused(_)
    ));
    let acks = relay(&all[..2], &message);
    assert!(matches!(
        call(
            &writer,
            HostRequest::Ratify {
                round: round.id,
                acks
            }
        ),
        EnclaveResponse::Committed
    ));
    assert!(accepts(&writer, &sealed));
    assert!(!accepts(&writer, &cer.genesis.principal));
}

#[test]
fn a_restarted_writer_serves_only_the_state_its_witnesses_hold() {
    let (writer, cer, w) = witnessed();
    let all: Vec<&Core> = w.iter().collect();
    sync(&writer, &all);
    let v1 = write(&writer, &all, &cer.genesis.principal);
    let v2 = write(&writer, &all, &v1);

    // The host rolled its store back to v1 and restarted the writer.
    let old = restart(&cer, vec![v1.clone()]);
    assert!(!status(&old).fresh);
    assert!(matches!(
        call(&old, HostRequest::Propose { tokens: vec![] }),
        EnclaveResponse::Fault(Fault::NotFresh)
    ));
    let st = sync(&old, &all);
    assert!(!st.fresh && st.note.contains("rolled back"), "{st:?}");
    // Showing it only the witness that missed the last write (the host dropped its
    // confirmation) is not a quorum.
    let lagging = joined(&writer, &cer);
    let st = sync(&old, &[&lagging]);
    assert!(!st.fresh, "{st:?}");

    // The latest store: fresh, and it writes on.
    let new = restart(&cer, vec![v2.clone()]);
    let st = sync(&new, &all[..2]);
    assert!(st.fresh, "{st:?}");
    assert!(accepts(&new, &v2));
    let v3 = write(&new, &all, &v2);
    assert!(accepts(&new, &v3));
}

#[test]
fn a_witness_behind_or_answers_replayed_cannot_lower_the_state() {
    let (writer, cer, w) = witnessed();
    let all: Vec<&Core> = w.iter().collect();
    sync(&writer, &all);
    let v1 = write(&writer, &all, &cer.genesis.principal);
    // The host keeps the third witness's answer to a query before the next write...
    let EnclaveResponse::WitnessQuery { message } = call(&writer, HostRequest::WitnessQuery) else {
        panic!()
    };
    let stale_answers = relay(&all, &message);
    // ...and keeps it out of the next write.
    let v2 = write(&writer, &all[..2], &v1);

    let old = restart(&cer, vec![v1.clone()]);
    // Answers to an old query are ignored (they answer another nonce).
    let EnclaveResponse::WitnessQuery { .. } = call(&old, HostRequest::WitnessQuery) else {
        panic!()
    };
    let EnclaveResponse::WitnessStatus(st) = call(
        &old,
        HostRequest::WitnessAnswers {
            answers: stale_answers,
        },
    ) else {
        panic!()
    };
    assert!(!st.fresh, "{st:?}");
    // The witness that is behind plus one up to date: the latest wins.
    let st = sync(&old, &[all[2], all[0]]);
    assert!(!st.fresh && st.note.contains("rolled back"), "{st:?}");
    let new = restart(&cer, vec![v2]);
    assert!(sync(&new, &[all[2], all[0]]).fresh);
}

#[test]
fn a_store_one_acknowledged_round_ahead_is_finished_not_refused() {
    let (writer, cer, w) = witnessed();
    let all: Vec<&Core> = w.iter().collect();
    sync(&writer, &all);
    let v1 = write(&writer, &all, &cer.genesis.principal);
    let (v2, token) = touch(&writer, &v1);
    let round = proposed(&writer, token);
    let acks = relay(&all, &round.intent);
    confirmed(&writer, &round, acks);
    // The host crashed here. Had it made v2 durable, the restarted writer finishes the round.
    let ahead = restart(&cer, vec![v2.clone()]);
    let st = sync(&ahead, &all);
    assert!(!st.fresh && st.round.is_some(), "{st:?}");
    assert!(status(&ahead).fresh);
    assert!(accepts(&ahead, &v2));
    // Had it not (a fresh writer on the same witnesses, before the round above finished), the
    // store at v1 is the latest state too.
    let (writer, cer, w) = witnessed();
    let all: Vec<&Core> = w.iter().collect();
    sync(&writer, &all);
    let v1 = write(&writer, &all, &cer.genesis.principal);
    let (_, token) = touch(&writer, &v1);
    let round = proposed(&writer, token);
    relay(&all, &round.intent);
    let behind = restart(&cer, vec![v1.clone()]);
    assert!(sync(&behind, &all).fresh);
    assert!(accepts(&behind, &v1));
}

#[test]
fn a_restarted_witness_is_a_new_one_and_is_enrolled_in_its_place() {
    let (writer, cer, mut w) = witnessed();
    {
        let all: Vec<&Core> = w.iter().collect();
        sync(&writer, &all);
    }
    let v1 = write(
        &writer,
        &w.iter().collect::<Vec<_>>(),
        &cer.genesis.principal,
    );
    // The third witness restarts: it knows nothing and has a new identity.
    w[2] = joined(&writer, &cer);
    let all: Vec<&Core> = w.iter().collect();
    // Writes go on with the two that remain.
    let v2 = write(&writer, &all[..2], &v1);
    let st = sync(&writer, &all);
    assert!(st.round.is_some(), "{st:?}");
    // The new one now holds the latest checkpoint: with the first witness lost too, the
    // restarted writer still finds its quorum.
    let new = restart(&cer, vec![v2]);
    assert!(sync(&new, &all[1..]).fresh);
}

#[test]
fn a_witness_refuses_what_its_writer_did_not_make() {
    let (writer, cer, w) = witnessed();
    let all: Vec<&Core> = w.iter().collect();
    sync(&writer, &all);
    // Garbage, and a message of another domain.
    assert!(matches!(
        call(
            &w[0],
            HostRequest::Witness {
                message: vec![0xa0]
            }
        ),
        EnclaveResponse::Refused(_)
    ));
    let (other, _) = init_with(1, 1, 3);
    let EnclaveResponse::WitnessQuery { message } = call(&other, HostRequest::WitnessQuery) else {
        panic!()
    };
    assert!(relay(&all, &message).is_empty());
    // An answer shown back to a witness is refused.
    let EnclaveResponse::WitnessQuery { message } = call(&writer, HostRequest::WitnessQuery) else {
        panic!()
    };
    let answers = relay(&all[..1], &message);
    assert!(relay(&all[1..2], &answers[0]).is_empty());
    let _ = cer;
}

#[test]
fn a_batch_round_in_flight_is_never_handed_to_a_query() {
    // A host that restarted while its enclave kept running cannot know whether it made the
    // round's writes durable: the enclave does not hand the round out for ratification.
    let (writer, cer, w) = witnessed();
    let all: Vec<&Core> = w.iter().collect();
    sync(&writer, &all);
    let (_, token) = touch(&writer, &cer.genesis.principal);
    let round = proposed(&writer, token);
    let acks = relay(&all, &round.intent);
    confirmed(&writer, &round, acks);
    let st = sync(&writer, &all);
    assert!(
        st.round.is_none() && st.note.contains("restart the enclave"),
        "{st:?}"
    );
    assert!(matches!(
        call(&writer, HostRequest::Propose { tokens: vec![] }),
        EnclaveResponse::Fault(Fault::Busy)
    ));
}
