//! Witnesses: freshness of the state across a restart, from outside the host.
//!
//! A witness is another enclave of the domain (a follower, joined over the attested peer
//! channel). The writer's commits go through *rounds*: the witnesses acknowledge a round's
//! *intent* (base checkpoint → next checkpoint) before the host makes its writes durable, and its
//! *confirmation* after; the state view advances only with a quorum of confirmations. A restarted
//! writer serves only when a quorum of the witnesses named by the latest checkpoint they hold
//! agrees with what the host loaded. Protocol, rules and limits: `docs/state.md`.
//!
//! Messages are CBOR, authenticated with HMAC-SHA256 under a key derived from the custody secret
//! (every enclave of the domain has it, no host does). Each witness names itself by a random id
//! drawn at its start: a restarted witness is a new witness that knows nothing.

use std::collections::BTreeSet;

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};

use crate::ledger::Accumulator;

/// A witness's identity for one enclave life.
pub type WitnessId = [u8; 16];

/// Label MACed before every message body.
const MAC_LABEL: &[u8] = b"ekms/v1/witness-message";

/// The state a checkpoint names: the round counter, the accumulator of the whole view, and the
/// witnesses enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Rounds ratified since the domain's creation.
    pub counter: u64,
    /// Accumulator of the view ([`crate::ledger::Ledger::acc`]).
    #[serde(with = "serde_bytes")]
    pub acc: Accumulator,
    /// Witnesses enrolled, sorted.
    pub members: Vec<Member>,
}

/// One enrolled witness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member(#[serde(with = "serde_bytes")] pub WitnessId);

impl Checkpoint {
    /// Whether `id` is enrolled.
    #[must_use]
    pub fn has(&self, id: &WitnessId) -> bool {
        self.members.iter().any(|m| m.0 == *id)
    }
}

/// Which acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Of an intent.
    Intent,
    /// Of a confirmation.
    Confirm,
}

/// A witness message (inside an [`Envelope`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Writer → witness: the writer will make `next` durable on top of `base`.
    Intent {
        /// Domain id.
        #[serde(with = "serde_bytes")]
        domain: [u8; 8],
        /// The ratified checkpoint the round starts from.
        base: Checkpoint,
        /// The checkpoint after the round.
        next: Checkpoint,
    },
    /// Writer → witness: `next` is durable; hold it.
    Confirm {
        /// Domain id.
        #[serde(with = "serde_bytes")]
        domain: [u8; 8],
        /// The checkpoint.
        next: Checkpoint,
    },
    /// Writer → witness: what do you hold? (`nonce` is fresh from the writer.)
    Query {
        /// Domain id.
        #[serde(with = "serde_bytes")]
        domain: [u8; 8],
        /// The writer's nonce.
        #[serde(with = "serde_bytes")]
        nonce: [u8; 32],
    },
    /// Witness → writer: acknowledgement of an intent or a confirmation.
    Ack {
        /// Domain id.
        #[serde(with = "serde_bytes")]
        domain: [u8; 8],
        /// The witness.
        witness: Member,
        /// Which message.
        phase: Phase,
        /// The checkpoint acknowledged.
        next: Checkpoint,
    },
    /// Witness → writer: what it holds, for the writer's nonce.
    Answer {
        /// Domain id.
        #[serde(with = "serde_bytes")]
        domain: [u8; 8],
        /// The witness.
        witness: Member,
        /// The writer's nonce.
        #[serde(with = "serde_bytes")]
        nonce: [u8; 32],
        /// The latest confirmed checkpoint it holds.
        confirmed: Option<Checkpoint>,
        /// The latest intent after it (base, next).
        pending: Option<(Checkpoint, Checkpoint)>,
    },
}

/// A body and its MAC.
#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    mac: Vec<u8>,
}

/// Why a witness message was refused (public text).
pub type Refusal = String;

/// Seals `body` for another enclave of the domain.
#[must_use]
pub fn seal(key: &hmac::Key, body: &Body) -> Vec<u8> {
    let body = serde_cbor::to_vec(body).unwrap_or_default();
    let mac = hmac::sign(key, &[MAC_LABEL, &body].concat())
        .as_ref()
        .to_vec();
    serde_cbor::to_vec(&Envelope { body, mac }).unwrap_or_default()
}

/// Opens a message sealed by an enclave of the domain whose id is `domain`.
pub fn open(key: &hmac::Key, domain: [u8; 8], message: &[u8]) -> Result<Body, Refusal> {
    let env: Envelope =
        serde_cbor::from_slice(message).map_err(|_| "not a witness message".to_owned())?;
    hmac::verify(key, &[MAC_LABEL, &env.body].concat(), &env.mac)
        .map_err(|_| "a witness message not made by an enclave of this domain".to_owned())?;
    let body: Body =
        serde_cbor::from_slice(&env.body).map_err(|_| "a malformed witness message".to_owned())?;
    let named = match &body {
        Body::Intent { domain, .. }
        | Body::Confirm { domain, .. }
        | Body::Query { domain, .. }
        | Body::Ack { domain, .. }
        | Body::Answer { domain, .. } => *domain,
    };
    if named != domain {
        return Err("a witness message for another domain".into());
    }
    Ok(body)
}

/// What a witness holds for its domain.
#[derive(Debug, Default, Clone)]
pub struct Held {
    /// The latest confirmed checkpoint.
    pub confirmed: Option<Checkpoint>,
    /// The latest intent after it.
    pub pending: Option<(Checkpoint, Checkpoint)>,
}

impl Held {
    fn confirmed_counter(&self) -> Option<u64> {
        self.confirmed.as_ref().map(|c| c.counter)
    }

    /// Takes an intent; the checkpoint to acknowledge.
    pub fn intent(&mut self, base: Checkpoint, next: Checkpoint) -> Result<Checkpoint, Refusal> {
        if next.counter != base.counter + 1 {
            return Err("an intent must advance the counter by one".into());
        }
        if self.confirmed_counter().is_some_and(|c| next.counter <= c) {
            return Err("an intent at or below the checkpoint this witness holds".into());
        }
        // The writer starts a round only from a ratified checkpoint: a quorum confirmed it, so a
        // witness that missed its confirmation may take it.
        if self.confirmed_counter().is_none_or(|c| base.counter > c) {
            self.confirmed = Some(base.clone());
        }
        self.pending = Some((base, next.clone()));
        Ok(next)
    }

    /// Takes a confirmation; the checkpoint to acknowledge.
    pub fn confirm(&mut self, next: Checkpoint) -> Result<Checkpoint, Refusal> {
        match &self.confirmed {
            Some(c) if c.counter > next.counter => {
                return Err("a confirmation below the checkpoint this witness holds".into());
            }
            Some(c) if c.counter == next.counter && *c != next => {
                return Err("a second checkpoint at the same counter (a fork)".into());
            }
            _ => {}
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|(_, p)| p.counter <= next.counter)
        {
            self.pending = None;
        }
        self.confirmed = Some(next.clone());
        Ok(next)
    }
}

/// A verified answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The witness.
    pub witness: WitnessId,
    /// Its confirmed checkpoint.
    pub confirmed: Option<Checkpoint>,
    /// Its pending intent.
    pub pending: Option<(Checkpoint, Checkpoint)>,
}

/// The outcome of a restarted writer's check of its loaded state against its witnesses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The loaded state is the latest checkpoint.
    Fresh(Checkpoint),
    /// The loaded state is the latest checkpoint plus the one round whose intent a quorum
    /// acknowledged: the store made it durable before the writer stopped. Confirm it (base,
    /// next), then serve.
    Finish(Checkpoint, Checkpoint),
    /// Not enough answers to decide (public text says what is missing).
    Undecided(String),
    /// The loaded state is not the latest: a rollback, a fork, or a lost store.
    Refused(String),
}

/// Decides freshness: `loaded` is the accumulator of the records the host streamed, `answers`
/// are distinct verified answers for this writer's nonce, `quorum` the majority of the domain's
/// witnesses.
///
/// The latest checkpoint any answer holds, `c`, was confirmed by a quorum of `c.members` if
/// ratified; every later ratified checkpoint was confirmed by a quorum of its predecessor's
/// members too (enrolment needs both quorums). So answers from a quorum of `c.members`, none of
/// them above `c`, prove that nothing after `c` was ratified: a witness that is behind cannot
/// lower `c`, and one that lies cannot (it cannot make a MAC).
#[must_use]
pub fn decide(loaded: &Accumulator, answers: &[Answer], quorum: usize) -> Verdict {
    let Some(latest) = answers
        .iter()
        .filter_map(|a| a.confirmed.as_ref())
        .max_by_key(|c| c.counter)
    else {
        return Verdict::Undecided(format!(
            "{} witnesses answered and none holds a checkpoint of this domain",
            answers.len()
        ));
    };
    let at_latest: BTreeSet<&Checkpoint> = answers
        .iter()
        .filter_map(|a| a.confirmed.as_ref())
        .filter(|c| c.counter == latest.counter)
        .collect();
    if at_latest.len() > 1 {
        return Verdict::Refused(format!(
            "witnesses hold two different checkpoints at counter {} (a fork)",
            latest.counter
        ));
    }
    let counted = answers.iter().filter(|a| latest.has(&a.witness)).count();
    if counted < quorum {
        return Verdict::Undecided(format!(
            "{counted} of the {quorum} witnesses needed (of the {} enrolled at checkpoint {}) \
             answered",
            latest.members.len(),
            latest.counter
        ));
    }
    if latest.acc == *loaded {
        return Verdict::Fresh(latest.clone());
    }
    let finish = answers
        .iter()
        .filter_map(|a| a.pending.as_ref())
        .find(|(base, next)| base == latest && next.acc == *loaded);
    if let Some((base, next)) = finish {
        return Verdict::Finish(base.clone(), next.clone());
    }
    Verdict::Refused(format!(
        "the stored records are not the state a quorum of witnesses holds (checkpoint {}): the \
         store was rolled back, forked or lost. Restore the latest store and restart",
        latest.counter
    ))
}

/// Counts distinct witnesses of `set` among `acks`.
#[must_use]
pub fn count(set: &Checkpoint, acks: &BTreeSet<WitnessId>) -> usize {
    acks.iter().filter(|id| set.has(id)).count()
}

impl PartialOrd for Checkpoint {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Checkpoint {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.counter, &self.acc, &self.members).cmp(&(other.counter, &other.acc, &other.members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(counter: u64, acc: u8, members: &[u8]) -> Checkpoint {
        Checkpoint {
            counter,
            acc: [acc; 32],
            members: members.iter().map(|m| Member([*m; 16])).collect(),
        }
    }

    fn answer(w: u8, confirmed: Option<Checkpoint>) -> Answer {
        Answer {
            witness: [w; 16],
            confirmed,
            pending: None,
        }
    }

    #[test]
    fn messages_are_authenticated_and_bound_to_the_domain() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let body = Body::Query {
            domain: [1; 8],
            nonce: [2; 32],
        };
        let m = seal(&key, &body);
        assert_eq!(open(&key, [1; 8], &m), Ok(body));
        assert!(open(&key, [9; 8], &m).is_err());
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"x");
        assert!(open(&other, [1; 8], &m).is_err());
        for i in 0..m.len() {
            let mut t = m.clone();
            t[i] ^= 1;
            assert!(open(&key, [1; 8], &t).is_err(), "byte {i}");
        }
        assert!(open(&key, [1; 8], b"").is_err());
    }

    #[test]
    fn a_witness_only_moves_forward() {
        let mut h = Held::default();
        h.intent(cp(0, 0, &[]), cp(1, 1, &[1])).unwrap();
        h.confirm(cp(1, 1, &[1])).unwrap();
        assert!(h.pending.is_none());
        // Re-confirming is idempotent; an older or a forked one is refused.
        h.confirm(cp(1, 1, &[1])).unwrap();
        assert!(h.confirm(cp(0, 0, &[])).is_err());
        assert!(h.confirm(cp(1, 9, &[1])).is_err());
        assert!(h.intent(cp(0, 0, &[]), cp(1, 7, &[1])).is_err());
        assert!(h.intent(cp(1, 1, &[1]), cp(3, 3, &[1])).is_err());
        // A witness that missed confirmations catches up from the next intent's base.
        h.intent(cp(4, 4, &[1]), cp(5, 5, &[1])).unwrap();
        assert_eq!(h.confirmed, Some(cp(4, 4, &[1])));
    }

    #[test]
    fn freshness_needs_a_quorum_of_the_latest_members_and_their_state() {
        let members = [1, 2, 3];
        let latest = cp(7, 7, &members);
        let older = cp(5, 5, &members);
        // Everyone up to date: fresh only for the latest accumulator.
        let all = [
            answer(1, Some(latest.clone())),
            answer(2, Some(latest.clone())),
            answer(3, Some(latest.clone())),
        ];
        assert_eq!(decide(&[7; 32], &all, 2), Verdict::Fresh(latest.clone()));
        assert!(matches!(decide(&[5; 32], &all, 2), Verdict::Refused(_)));
        // A behind witness cannot lower the latest one.
        let mixed = [
            answer(1, Some(older.clone())),
            answer(2, Some(latest.clone())),
        ];
        assert!(matches!(decide(&[5; 32], &mixed, 2), Verdict::Refused(_)));
        // Too few answers: undecided, whatever they say.
        let one = [answer(1, Some(older.clone()))];
        assert!(matches!(decide(&[5; 32], &one, 2), Verdict::Undecided(_)));
        // Answers from strangers do not count.
        let strangers = [answer(8, Some(older.clone())), answer(9, Some(older))];
        assert!(matches!(
            decide(&[5; 32], &strangers, 2),
            Verdict::Undecided(_)
        ));
        // Nobody holds anything: undecided.
        assert!(matches!(
            decide(&[5; 32], &[answer(1, None), answer(2, None)], 2),
            Verdict::Undecided(_)
        ));
        // Two checkpoints at one counter: refused.
        let fork = [
            answer(1, Some(cp(7, 7, &members))),
            answer(2, Some(cp(7, 8, &members))),
        ];
        assert!(matches!(decide(&[7; 32], &fork, 2), Verdict::Refused(_)));
    }

    #[test]
    fn a_store_one_intended_round_ahead_is_finished() {
        let base = cp(3, 3, &[1, 2, 3]);
        let next = cp(4, 4, &[1, 2, 3]);
        let mut a = answer(1, Some(base.clone()));
        a.pending = Some((base.clone(), next.clone()));
        let answers = [a, answer(2, Some(base.clone()))];
        assert_eq!(
            decide(&[4; 32], &answers, 2),
            Verdict::Finish(base.clone(), next)
        );
        assert_eq!(decide(&[3; 32], &answers, 2), Verdict::Fresh(base));
        assert!(matches!(decide(&[9; 32], &answers, 2), Verdict::Refused(_)));
    }
}
