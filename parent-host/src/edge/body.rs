//! Request bodies, read whole before a router sees them: within the listener's limit, and for
//! bodies over [`SMALL_BODY`] within a budget shared by every connection of every listener
//! (`--max-body-memory`), so that a flood of half-sent bodies holds a bounded amount of memory.
//!
//! A body is buffered once, in one allocation of its declared length, and its bytes are handed
//! to the router without a copy.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bodies up to this many bytes are read without drawing on the budget: nearly every KMS and
/// XKS call is far smaller, so they are served while a flood of large bodies holds the budget.
/// What they hold is bounded by the connection caps (connections × this).
pub const SMALL_BODY: usize = 16 * 1024;

/// Default of `--max-body-memory`.
pub const DEFAULT_MAX_BODY_MEMORY: usize = 64 * 1024 * 1024;

/// Bytes of request bodies over [`SMALL_BODY`] that may be buffered at once, across listeners.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl BodyBudget {
    /// A budget of `total` bytes.
    #[must_use]
    pub fn new(total: usize) -> Self {
        let total = total.min(Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The budget's size in bytes.
    #[must_use]
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not held by a body now.
    #[must_use]
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

/// What a body holds of the budget; given back when dropped.
#[derive(Debug, Default)]
pub(super) struct Held {
    permit: Option<OwnedSemaphorePermit>,
}

impl Held {
    /// Makes sure `total` bytes of body are covered (nothing while they are a small body).
    fn cover(&mut self, total: usize, budget: &BodyBudget) -> Result<(), Refusal> {
        let held = self
            .permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits);
        if (held == 0 && total <= SMALL_BODY) || total <= held {
            return Ok(());
        }
        let more = u32::try_from(total - held).map_err(|_| Refusal::Busy)?;
        let permit = Arc::clone(&budget.bytes)
            .try_acquire_many_owned(more)
            .map_err(|_| Refusal::Busy)?;
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }
}

/// Why a body was not read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Over the listener's limit.
    TooLarge,
    /// The budget is spent.
    Busy,
    /// The stream failed (the client went away).
    Broken,
}

/// A body read whole, with its share of the budget.
#[derive(Debug)]
pub(super) struct Whole {
    bytes: Bytes,
    held: Held,
}

impl Whole {
    pub(super) fn into_parts(self) -> (Bytes, Held) {
        (self.bytes, self.held)
    }
}

/// Reads `body` whole: at most `max` bytes; bytes over [`SMALL_BODY`] covered by `budget`
/// (a declared length is covered before a byte is read).
pub(super) async fn read(
    mut body: Incoming,
    max: usize,
    budget: &BodyBudget,
) -> Result<Whole, Refusal> {
    let mut held = Held::default();
    let declared = body.size_hint().exact();
    let mut buf = match declared {
        Some(0) => {
            return Ok(Whole {
                bytes: Bytes::new(),
                held,
            });
        }
        Some(n) => {
            let n = usize::try_from(n).map_err(|_| Refusal::TooLarge)?;
            if n > max {
                return Err(Refusal::TooLarge);
            }
            held.cover(n, budget)?;
            Vec::with_capacity(n)
        }
        None => Vec::new(),
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Refusal::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let total = buf.len().saturating_add(data.len());
        if total > max {
            return Err(Refusal::TooLarge);
        }
        held.cover(total, budget)?;
        buf.extend_from_slice(&data);
    }
    Ok(Whole {
        bytes: Bytes::from(buf),
        held,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_are_free_and_large_ones_draw_their_whole_size() {
        let budget = BodyBudget::new(100 * 1024);
        let mut small = Held::default();
        small.cover(SMALL_BODY, &budget).unwrap();
        assert_eq!(budget.available(), 100 * 1024);
        let mut large = Held::default();
        large.cover(SMALL_BODY + 1, &budget).unwrap();
        assert_eq!(budget.available(), 100 * 1024 - SMALL_BODY - 1);
        // Growing takes only the difference; covering less takes nothing.
        large.cover(40 * 1024, &budget).unwrap();
        large.cover(30 * 1024, &budget).unwrap();
        assert_eq!(budget.available(), 60 * 1024);
        // Past what is left: refused, and nothing more is held.
        let mut other = Held::default();
        assert_eq!(other.cover(61 * 1024, &budget), Err(Refusal::Busy));
        assert_eq!(budget.available(), 60 * 1024);
        other.cover(60 * 1024, &budget).unwrap();
        assert_eq!(budget.available(), 0);
        // Given back when dropped.
        drop((large, other, small));
        assert_eq!(budget.available(), 100 * 1024);
    }
}
