//! What a connection is doing, for its timeouts: waiting for (or reading) a request head,
//! serving a request, or idle between requests. The reads of its stream move it from idle to a
//! head; the service moves it to busy and back to idle.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Instant,
};

use super::EdgeLimits;

/// A connection's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// From the connection's start, or from the first byte after an idle phase, until a
    /// request head is complete: bounded by the header timeout.
    Head = 0,
    /// A request in the service (its body is bounded by the body timeout there).
    Busy = 1,
    /// After an answer, no byte of a next request yet: bounded by the idle timeout.
    Idle = 2,
}

/// The phase and when it began (milliseconds since the connection's start).
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    phase: AtomicU8,
    since_ms: AtomicU64,
    /// Told when a phase began whose limit may run out sooner than the one being waited for
    /// (idle after busy, a head after idle).
    pub(super) sooner: Notify,
}

impl Activity {
    /// A connection that started at `now`: waiting for its first request head.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            start: now,
            phase: AtomicU8::new(Phase::Head as u8),
            since_ms: AtomicU64::new(0),
            sooner: Notify::new(),
        }
    }

    pub(super) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Head,
            1 => Phase::Busy,
            _ => Phase::Idle,
        }
    }

    fn enter(&self, phase: Phase, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.start).as_millis())
            .unwrap_or(u64::MAX);
        self.since_ms.store(ms, Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Bytes arrived: an idle connection starts reading a head (one atomic load otherwise).
    fn on_bytes(&self, now: impl FnOnce() -> Instant) {
        if self.phase.load(Ordering::Acquire) == Phase::Idle as u8 {
            self.enter(Phase::Head, now());
            self.sooner.notify_one();
        }
    }

    /// A request is in the service from `now` until the guard drops.
    pub(super) fn busy(self: &Arc<Self>, now: Instant) -> BusyGuard {
        self.enter(Phase::Busy, now);
        BusyGuard(Arc::clone(self))
    }

    /// When the current phase's limit runs out (for a busy connection: when to look again).
    pub(super) fn deadline(&self, limits: &EdgeLimits) -> Instant {
        let since =
            self.start + std::time::Duration::from_millis(self.since_ms.load(Ordering::Acquire));
        since
            + match self.phase() {
                Phase::Head => limits.header_timeout,
                Phase::Busy | Phase::Idle => limits.idle_timeout,
            }
    }

    /// The phase whose limit ran out at `now`, if one did.
    pub(super) fn expired(&self, limits: &EdgeLimits, now: Instant) -> Option<Phase> {
        let phase = self.phase();
        (phase != Phase::Busy && now >= self.deadline(limits)).then_some(phase)
    }
}

/// Holds a connection busy; idle again when dropped (the answer is being written then).
#[derive(Debug)]
pub(super) struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.enter(Phase::Idle, Instant::now());
        self.0.sooner.notify_one();
    }
}

/// A stream whose reads tell its [`Activity`] that bytes arrived.
#[derive(Debug)]
pub(super) struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    pub(super) fn new(inner: I, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_bytes(Instant::now);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> EdgeLimits {
        EdgeLimits {
            header_timeout: Duration::from_secs(2),
            body_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(5),
            max_connections: 1,
        }
    }

    #[test]
    fn phases_follow_the_connection_and_bound_it() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let a = Arc::new(Activity::new(t0));
        let l = limits();
        assert_eq!(a.phase(), Phase::Head);
        assert_eq!(a.deadline(&l), at(2));
        assert_eq!(a.expired(&l, at(1)), None);
        assert_eq!(a.expired(&l, at(3)), Some(Phase::Head));
        let busy = a.busy(at(3));
        // A busy connection never expires here (its body has its own timeout).
        assert_eq!(a.expired(&l, at(60)), None);
        // Bytes of its body change nothing.
        a.on_bytes(|| at(61));
        assert_eq!(a.phase(), Phase::Busy);
        drop(busy);
        assert_eq!(a.phase(), Phase::Idle);
        let idle_since = a.deadline(&l) - l.idle_timeout;
        assert_eq!(a.expired(&l, idle_since + Duration::from_secs(4)), None);
        assert_eq!(
            a.expired(&l, idle_since + Duration::from_secs(5)),
            Some(Phase::Idle)
        );
        // A byte of the next request: a head again, with its own clock.
        let t = idle_since + Duration::from_secs(4);
        a.on_bytes(|| t);
        assert_eq!(a.phase(), Phase::Head);
        assert_eq!(a.expired(&l, t + Duration::from_secs(1)), None);
        assert_eq!(a.expired(&l, t + Duration::from_secs(2)), Some(Phase::Head));
    }
}
