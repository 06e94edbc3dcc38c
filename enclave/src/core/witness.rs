//! Witnessed rounds (writer side) and the witness role (follower side). The protocol and its
//! rules are in [`crate::witness`] and `docs/state.md`.

use std::collections::BTreeSet;

use ekms_wire::msg::{EnclaveResponse, Fault, Round, WitnessStatus};

use super::{Core, Domain, Ledger, Ordering, fresh_nonce, refused};
use crate::witness::{
    self, Answer, Body, Checkpoint, Held, Member, Phase, Verdict, WitnessId, count,
};

/// What kind of round is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Prepared writes.
    Batch,
    /// A change of the enrolled witnesses.
    Enrol,
    /// After a restart: the round whose writes the store already holds.
    Finish,
}

#[derive(Debug)]
struct Inflight {
    id: u64,
    kind: Kind,
    base: Checkpoint,
    next: Checkpoint,
    tokens: Vec<u64>,
    /// Whether the confirmation left the enclave (a resumed round sends it again).
    confirm_released: bool,
}

/// Witness state of one enclave.
#[derive(Debug)]
pub(crate) struct Rounds {
    /// This enclave's witness identity for its life.
    own: WitnessId,
    /// As a witness: what it holds.
    held: Held,
    /// As the writer: the ratified checkpoint (`None` until proved after a restart).
    current: Option<Checkpoint>,
    inflight: Option<Inflight>,
    /// The nonce of the last query.
    query: Option<[u8; 32]>,
    next_round: u64,
    /// The highest counter any witness answered with since this enclave started.
    seen: u64,
}

impl Rounds {
    pub(crate) fn new() -> Self {
        let mut own = [0u8; 16];
        // A failed RNG leaves a zero id; `fresh_nonce` failing would already fail everything.
        let _ = aws_lc_rs::rand::fill(&mut own);
        Self {
            own,
            held: Held::default(),
            current: None,
            inflight: None,
            query: None,
            next_round: 1,
            seen: 0,
        }
    }

    /// Whether the writer holds a proved checkpoint.
    pub(crate) fn fresh(&self) -> bool {
        self.current.is_some()
    }
}

/// The sealed confirmation of a round whose checkpoint is `next`.
fn confirmation(d: &Domain, next: &Checkpoint) -> Vec<u8> {
    witness::seal(
        d.witness_key(),
        &Body::Confirm {
            domain: d.id(),
            next: next.clone(),
        },
    )
}

/// Whether `acks` carry enough of both the old and the new witnesses: a quorum of each, except
/// while the domain has fewer than a quorum enrolled (before it ever could commit a write), when
/// every new witness must acknowledge.
fn enough(base: &Checkpoint, next: &Checkpoint, acks: &BTreeSet<WitnessId>, quorum: usize) -> bool {
    let base_ok = base.members.len() < quorum || count(base, acks) >= quorum;
    let next_ok = !next.members.is_empty() && count(next, acks) >= quorum.min(next.members.len());
    base_ok && next_ok
}

impl Core {
    fn rounds(&self) -> Option<std::sync::MutexGuard<'_, Rounds>> {
        self.rounds.lock().ok()
    }

    /// A fresh view of `domain` after it opened: an empty one at its creation, one waiting for
    /// the host's records (and, when witnessed, its witnesses) otherwise.
    pub(super) fn open_view(&self, domain: &Domain, created: bool) -> Ledger {
        let witnessed = domain.witnesses() > 0;
        let base = if created {
            Ledger::new_ready()
        } else {
            Ledger::loading()
        };
        let ledger = base.keyed(domain.state_key().clone(), witnessed);
        if let Some(mut r) = self.rounds() {
            r.inflight = None;
            r.query = None;
            r.current = None;
        }
        ledger
    }

    /// Records the genesis checkpoint of a new witnessed domain (no witnesses enrolled yet).
    pub(super) fn genesis_checkpoint(&self, domain: &Domain) {
        if domain.witnesses() == 0 {
            return;
        }
        let Ok(acc) = self.ledger().map(|l| l.acc()) else {
            return;
        };
        if let Some(mut r) = self.rounds() {
            r.current = Some(Checkpoint {
                counter: 0,
                acc,
                members: Vec::new(),
            });
        }
    }

    /// Whether a witnessed writer proved its state (true for an unwitnessed domain).
    pub(crate) fn is_fresh(&self, domain: &Domain) -> bool {
        domain.witnesses() == 0 || self.rounds().is_some_and(|r| r.fresh())
    }

    /// The open domain, if this enclave is its witnessed writer.
    fn witnessed_writer(&self) -> Result<std::sync::Arc<Domain>, Box<EnclaveResponse>> {
        let d = self
            .domain()
            .ok_or(Box::new(EnclaveResponse::Fault(Fault::Sealed)))?;
        if d.witnesses() == 0 {
            return Err(Box::new(refused(
                "this domain has no witnesses; commit with Commit",
            )));
        }
        if self.follower.load(Ordering::Relaxed) {
            return Err(Box::new(EnclaveResponse::Fault(Fault::NotWriter)));
        }
        Ok(d)
    }

    /// `Propose`: a round committing the prepared writes that apply.
    pub(super) fn propose(&self, tokens: &[u64]) -> EnclaveResponse {
        let d = match self.witnessed_writer() {
            Ok(d) => d,
            Err(r) => return *r,
        };
        let Ok(ledger) = self.ledger() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let Some(mut r) = self.rounds() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        if r.inflight.is_some() {
            return EnclaveResponse::Fault(Fault::Busy);
        }
        let Some(current) = r.current.clone() else {
            return EnclaveResponse::Fault(Fault::NotFresh);
        };
        if current.members.len() < d.quorum() {
            return refused(format!(
                "this domain commits only with {} of its {} witnesses, and {} are enrolled; \
                 start them (ekms serve --peer WRITER) and list them with --witness",
                d.quorum(),
                d.witnesses(),
                current.members.len()
            ));
        }
        let sim = ledger.simulate(tokens);
        drop(ledger);
        if sim.ok.is_empty() {
            return EnclaveResponse::Proposed {
                round: None,
                refused: sim.refused,
            };
        }
        let next = Checkpoint {
            counter: current.counter + 1,
            acc: sim.acc,
            members: current.members.clone(),
        };
        let round = Self::start(&mut r, &d, Kind::Batch, current, next, sim.ok);
        EnclaveResponse::Proposed {
            round: Some(round),
            refused: sim.refused,
        }
    }

    fn start(
        r: &mut Rounds,
        d: &Domain,
        kind: Kind,
        base: Checkpoint,
        next: Checkpoint,
        tokens: Vec<u64>,
    ) -> Round {
        let id = r.next_round;
        r.next_round += 1;
        let intent = witness::seal(
            d.witness_key(),
            &Body::Intent {
                domain: d.id(),
                base: base.clone(),
                next: next.clone(),
            },
        );
        let confirm_released = kind == Kind::Finish;
        let confirm = if confirm_released {
            confirmation(d, &next)
        } else {
            Vec::new()
        };
        r.inflight = Some(Inflight {
            id,
            kind,
            base,
            next,
            tokens,
            confirm_released,
        });
        Round {
            id,
            intent,
            confirm,
        }
    }

    /// The distinct witnesses whose acknowledgements of `phase` for `next` are authentic.
    fn acked(d: &Domain, acks: &[Vec<u8>], phase: Phase, next: &Checkpoint) -> BTreeSet<WitnessId> {
        acks.iter()
            .filter_map(|a| witness::open(d.witness_key(), d.id(), a).ok())
            .filter_map(|b| match b {
                Body::Ack {
                    witness,
                    phase: p,
                    next: n,
                    ..
                } if p == phase && n == *next => Some(witness.0),
                _ => None,
            })
            .collect()
    }

    /// `Confirm`: a quorum acknowledged the intent; release the confirmation.
    pub(super) fn confirm_round(&self, round: u64, acks: &[Vec<u8>]) -> EnclaveResponse {
        let d = match self.witnessed_writer() {
            Ok(d) => d,
            Err(r) => return *r,
        };
        let Some(mut r) = self.rounds() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let Some(f) = r.inflight.as_mut().filter(|f| f.id == round) else {
            return refused("no such round in flight");
        };
        let acked = Self::acked(&d, acks, Phase::Intent, &f.next);
        if !f.confirm_released && !enough(&f.base, &f.next, &acked, d.quorum()) {
            return refused(format!(
                "{} witnesses acknowledged the intent; {} of the enrolled are needed",
                acked.len(),
                d.quorum()
            ));
        }
        f.confirm_released = true;
        EnclaveResponse::Confirmation {
            message: confirmation(&d, &f.next),
        }
    }

    /// `Ratify`: a quorum holds the round's checkpoint; the view advances.
    pub(super) fn ratify(&self, round: u64, acks: &[Vec<u8>]) -> EnclaveResponse {
        let d = match self.witnessed_writer() {
            Ok(d) => d,
            Err(r) => return *r,
        };
        let Ok(mut ledger) = self.ledger() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let Some(mut r) = self.rounds() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let Some(f) = r.inflight.as_ref().filter(|f| f.id == round) else {
            return refused("no such round in flight");
        };
        if !f.confirm_released {
            return refused("the round's confirmation was never released");
        }
        let acked = Self::acked(&d, acks, Phase::Confirm, &f.next);
        if !enough(&f.base, &f.next, &acked, d.quorum()) {
            return refused(format!(
                "{} witnesses hold the checkpoint; {} of the enrolled are needed",
                acked.len(),
                d.quorum()
            ));
        }
        let Some(f) = r.inflight.take() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        if f.kind == Kind::Batch {
            for t in &f.tokens {
                if ledger.commit(*t).is_err() {
                    tracing::error!("a ratified write no longer applies to the view");
                }
            }
            if ledger.acc() != f.next.acc {
                // Nothing but a witnessed round changes a witnessed view, so this is a bug: stop
                // writing rather than hold a view the witnesses do not.
                tracing::error!("the view differs from the ratified checkpoint; writes stop");
                r.current = None;
                return EnclaveResponse::Fault(Fault::Internal);
            }
        }
        if f.kind == Kind::Finish {
            tracing::info!(
                counter = f.next.counter,
                "the store's last round is confirmed by the witnesses; serving"
            );
        }
        r.current = Some(f.next);
        EnclaveResponse::Committed
    }

    /// `Abandon`: the round found no quorum, or its writes could not be made durable. Allowed
    /// even after its confirmation left (the host sends it only after the writes are durable;
    /// one that sent it anyway and abandoned only stops its own writer: the witnesses that hold
    /// the abandoned checkpoint refuse another at its counter, and a restarted writer refuses
    /// two checkpoints at one counter as a fork).
    pub(super) fn abandon(&self, round: u64) -> EnclaveResponse {
        let Some(mut r) = self.rounds() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        if r.inflight.as_ref().is_some_and(|f| f.id == round) {
            r.inflight = None;
            EnclaveResponse::Abandoned
        } else {
            refused("no such round in flight")
        }
    }

    /// `WitnessQuery`: a fresh query for every witness.
    pub(super) fn witness_query(&self) -> EnclaveResponse {
        let d = match self.witnessed_writer() {
            Ok(d) => d,
            Err(r) => return *r,
        };
        let Ok(nonce) = fresh_nonce() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let mut n = [0u8; 32];
        n.copy_from_slice(&nonce);
        let Some(mut r) = self.rounds() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        r.query = Some(n);
        EnclaveResponse::WitnessQuery {
            message: witness::seal(
                d.witness_key(),
                &Body::Query {
                    domain: d.id(),
                    nonce: n,
                },
            ),
        }
    }

    /// `WitnessAnswers`: prove the loaded state after a restart, then enrol new witnesses.
    pub(super) fn witness_answers(&self, answers: &[Vec<u8>]) -> EnclaveResponse {
        let d = match self.witnessed_writer() {
            Ok(d) => d,
            Err(r) => return *r,
        };
        let Ok(ledger) = self.ledger() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        if !ledger.is_ready() {
            return EnclaveResponse::Fault(Fault::NotLoaded);
        }
        let loaded = ledger.acc();
        drop(ledger);
        let Some(mut r) = self.rounds() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let Some(nonce) = r.query else {
            return refused("no witness query is outstanding");
        };
        let mut seen = BTreeSet::new();
        let verified: Vec<Answer> = answers
            .iter()
            .filter_map(|a| witness::open(d.witness_key(), d.id(), a).ok())
            .filter_map(|b| match b {
                Body::Answer {
                    witness,
                    nonce: n,
                    confirmed,
                    pending,
                    ..
                } if n == nonce && seen.insert(witness.0) => Some(Answer {
                    witness: witness.0,
                    confirmed,
                    pending,
                }),
                _ => None,
            })
            .collect();
        let highest = verified
            .iter()
            .flat_map(|a| {
                a.confirmed
                    .iter()
                    .chain(a.pending.iter().map(|(_, next)| next))
            })
            .map(|c| c.counter)
            .max()
            .unwrap_or(0);
        r.seen = r.seen.max(highest);
        // An enrolment that did not finish changes no record: drop it and decide afresh.
        if r.inflight.as_ref().is_some_and(|f| f.kind == Kind::Enrol) {
            r.inflight = None;
        }
        if let Some(f) = &r.inflight {
            return Self::inflight_status(&r, f, &d);
        }
        match r.current.clone() {
            None => Self::prove(&mut r, &d, &loaded, &verified),
            Some(current) => Self::enrol(&mut r, &d, current, &verified),
        }
    }

    /// A round in flight when the host queries: a `Finish` round is handed out again (its writes
    /// are durable: the loaded state proved it). A batch round is its committer's to finish; a
    /// host that restarted meanwhile cannot know whether it made the writes durable, so it is not
    /// handed out: restarting the enclave resolves it from the witnesses.
    fn inflight_status(r: &Rounds, f: &Inflight, d: &Domain) -> EnclaveResponse {
        let (round, note) = if f.kind == Kind::Finish {
            let round = Round {
                id: f.id,
                intent: Vec::new(),
                confirm: confirmation(d, &f.next),
            };
            (
                Some(round),
                "confirming the round the store already holds".to_owned(),
            )
        } else {
            (
                None,
                format!(
                    "round {} is in flight; if its host restarted, restart the enclave too",
                    f.id
                ),
            )
        };
        EnclaveResponse::WitnessStatus(WitnessStatus {
            fresh: r.fresh(),
            round,
            note,
        })
    }

    /// After a restart: is the loaded state the latest a quorum of witnesses holds?
    fn prove(
        r: &mut Rounds,
        d: &Domain,
        loaded: &crate::ledger::Accumulator,
        verified: &[Answer],
    ) -> EnclaveResponse {
        let (fresh, round, note) = match witness::decide(loaded, verified, d.quorum()) {
            Verdict::Fresh(c) => {
                tracing::info!(
                    counter = c.counter,
                    witnesses = verified.len(),
                    "a quorum of witnesses holds the loaded state; serving"
                );
                r.current = Some(c);
                (
                    true,
                    None,
                    "the loaded state is the latest the witnesses hold".to_owned(),
                )
            }
            Verdict::Finish(base, next) => (
                false,
                Some(Self::start(r, d, Kind::Finish, base, next, Vec::new())),
                "the store holds the round the witnesses last acknowledged; confirming it"
                    .to_owned(),
            ),
            Verdict::Undecided(note) => (false, None, note),
            Verdict::Refused(note) => {
                tracing::warn!(%note, "the loaded state is refused");
                (false, None, note)
            }
        };
        EnclaveResponse::WitnessStatus(WitnessStatus { fresh, round, note })
    }

    /// Serving: enrol answering witnesses that are not enrolled, keeping the enrolled ones that
    /// answered first and the silent ones while there is room.
    fn enrol(
        r: &mut Rounds,
        d: &Domain,
        current: Checkpoint,
        verified: &[Answer],
    ) -> EnclaveResponse {
        let target = usize::from(d.witnesses());
        // A witness holding a higher counter than ours (one that held an older life of this
        // domain before a principal accepted an unwitnessed state) cannot take our rounds.
        let answered: BTreeSet<WitnessId> = verified
            .iter()
            .filter(|a| {
                a.confirmed
                    .as_ref()
                    .is_none_or(|c| c.counter <= current.counter)
            })
            .map(|a| a.witness)
            .collect();
        let mut members: Vec<Member> = current
            .members
            .iter()
            .filter(|m| answered.contains(&m.0))
            .copied()
            .collect();
        for id in &answered {
            if members.len() < target && !current.has(id) && *id != r.own {
                members.push(Member(*id));
            }
        }
        for m in &current.members {
            if members.len() < target && !members.contains(m) {
                members.push(*m);
            }
        }
        members.sort();
        let enrolled = current.members.len();
        if members == current.members {
            let note = if enrolled < d.quorum() {
                format!(
                    "{enrolled} of {target} witnesses enrolled; writes wait until {} are",
                    d.quorum()
                )
            } else {
                format!("{enrolled} of {target} witnesses enrolled")
            };
            return EnclaveResponse::WitnessStatus(WitnessStatus {
                fresh: true,
                round: None,
                note,
            });
        }
        let next = Checkpoint {
            counter: current.counter + 1,
            acc: current.acc,
            members,
        };
        let round = Self::start(r, d, Kind::Enrol, current, next, Vec::new());
        EnclaveResponse::WitnessStatus(WitnessStatus {
            fresh: true,
            round: Some(round),
            note: format!("enrolling witnesses ({enrolled} of {target} enrolled)"),
        })
    }

    /// A principal's decision (`EkmsAcceptUnwitnessedState`): serve the loaded state without
    /// proof, at a checkpoint above every counter a witness answered with, and enrol witnesses
    /// afresh (writes wait until a quorum is enrolled). Returns the records and the counter.
    pub(crate) fn accept_unwitnessed_state(&self) -> Result<(usize, u64), String> {
        self.witnessed_writer()
            .map_err(|_| "this enclave is not the writer of a witnessed domain".to_owned())?;
        let ledger = self.ledger().map_err(|_| "internal error".to_owned())?;
        let mut r = self.rounds().ok_or_else(|| "internal error".to_owned())?;
        if r.current.is_some() {
            return Err(
                "the enclave already serves the latest state its witnesses confirmed".into(),
            );
        }
        let counter = r.seen + 1;
        r.inflight = None;
        r.current = Some(Checkpoint {
            counter,
            acc: ledger.acc(),
            members: Vec::new(),
        });
        Ok((ledger.len(), counter))
    }

    /// `Witness`: a message from the writer, on a witness (a follower of the domain).
    pub(super) fn witness_message(&self, message: &[u8]) -> EnclaveResponse {
        let Some(d) = self.domain() else {
            return EnclaveResponse::Fault(Fault::Sealed);
        };
        if !self.follower.load(Ordering::Relaxed) {
            return refused("this enclave is its domain's writer, not a witness");
        }
        let body = match witness::open(d.witness_key(), d.id(), message) {
            Ok(b) => b,
            Err(why) => return refused(why),
        };
        let Some(mut r) = self.rounds() else {
            return EnclaveResponse::Fault(Fault::Internal);
        };
        let witness = Member(r.own);
        let reply = match body {
            Body::Query { nonce, .. } => Body::Answer {
                domain: d.id(),
                witness,
                nonce,
                confirmed: r.held.confirmed.clone(),
                pending: r.held.pending.clone(),
            },
            Body::Intent { base, next, .. } => match r.held.intent(base, next) {
                Ok(next) => Body::Ack {
                    domain: d.id(),
                    witness,
                    phase: Phase::Intent,
                    next,
                },
                Err(why) => return refused(why),
            },
            Body::Confirm { next, .. } => match r.held.confirm(next) {
                Ok(next) => Body::Ack {
                    domain: d.id(),
                    witness,
                    phase: Phase::Confirm,
                    next,
                },
                Err(why) => return refused(why),
            },
            Body::Ack { .. } | Body::Answer { .. } => {
                return refused("a witness takes intents, confirmations and queries only");
            }
        };
        EnclaveResponse::Witnessed {
            message: witness::seal(d.witness_key(), &reply),
        }
    }
}
