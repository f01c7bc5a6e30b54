//! Delivery order across a switch of connections.
//!
//! When a peer's messages move from one connection (link) to another, the
//! sender finishes the messages it started on the old link and then says
//! `Close(Superseded)` there (the leader when it retires a link; the
//! follower once the leader's `Superseded` reached it, see `actor.rs`),
//! while later messages go out on the new link at once. The two links may
//! take different times (a relayed circuit against a direct path), so the
//! new link's first messages can arrive before the old link's last ones.
//!
//! So each peer has one [`DeliveryOrder`], shared by its links' readers.
//! A reader delivers data at once from any link but the *current* one
//! (the link the leader keeps; the follower predicts it with the same
//! rule): those carry what the sender sent before it switched. Data read
//! on the current link waits while another link of the peer is still
//! open, that is until each other link has delivered its close marker or
//! failed. A dead old link must not stall the peer, so the wait ends
//! after [`HOLD`] without progress (no data delivered from another link),
//! and the links it waited for no longer count. What is held is one
//! message: the waiting reader reads nothing more, so the sender's
//! transport and our receive budget bound the rest.
//!
//! Calls: the actor [`open`](DeliveryOrder::open)s a link before its
//! reader starts and names the [`current`](DeliveryOrder::set_current)
//! one whenever it changes; each reader calls
//! [`turn`](DeliveryOrder::turn) before it delivers data and
//! [`delivered`](DeliveryOrder::delivered) after, and
//! [`close`](DeliveryOrder::close) when it ends.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::link::LinkId;

/// The longest the current link's data waits for another link without
/// progress from it.
pub(super) const HOLD: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    current: Option<LinkId>,
    /// Links whose reader runs and that still count for the order.
    open: Vec<LinkId>,
    /// The last time another link than the current one delivered data.
    progress_at: Option<Instant>,
}

/// The order in which one peer's links deliver data.
#[derive(Default)]
pub(super) struct DeliveryOrder {
    state: Mutex<State>,
    changed: Notify,
}

impl DeliveryOrder {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A link registered; its reader is about to start.
    pub(super) fn open(&self, link: LinkId) {
        let mut state = self.lock();
        if !state.open.contains(&link) {
            state.open.push(link);
        }
    }

    /// `link` is now the one the peer sends on (or will, once its other
    /// links are done).
    pub(super) fn set_current(&self, link: LinkId) {
        self.lock().current = Some(link);
        self.changed.notify_waiters();
    }

    /// `link`'s reader ended: it delivers nothing more.
    pub(super) fn close(&self, link: LinkId) {
        self.lock().open.retain(|l| *l != link);
        self.changed.notify_waiters();
    }

    /// `link` delivered a message.
    pub(super) fn delivered(&self, link: LinkId) {
        let mut state = self.lock();
        if state.current != Some(link) {
            state.progress_at = Some(Instant::now());
        }
    }

    /// Waits until data read on `link` may be delivered: at once unless
    /// `link` is the current one and another link is still open; at most
    /// until `hold` passed without progress from the others (which then no
    /// longer count).
    pub(super) async fn turn(&self, link: LinkId, hold: Duration) {
        let started = Instant::now();
        let mut waited = false;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let deadline = {
                let mut state = self.lock();
                let others = state.open.iter().filter(|l| **l != link).count();
                if state.current != Some(link) || others == 0 {
                    if waited {
                        tracing::trace!(link, waited = ?started.elapsed(),
                            "earlier connections done: delivering");
                    }
                    return;
                }
                let since = state.progress_at.map_or(started, |at| at.max(started));
                let deadline = since + hold;
                if Instant::now() >= deadline {
                    tracing::debug!(link, others, "earlier connections silent: delivering");
                    state.open.retain(|l| *l == link);
                    return;
                }
                deadline
            };
            waited = true;
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ready(order: &Arc<DeliveryOrder>, link: LinkId, hold: Duration) -> bool {
        let order = order.clone();
        let mut turn = tokio_test_poll(async move { order.turn(link, hold).await });
        turn()
    }

    /// Polls a future once; true if it finished.
    fn tokio_test_poll<F: std::future::Future<Output = ()> + Send + 'static>(
        future: F,
    ) -> impl FnMut() -> bool {
        let mut future = Box::pin(future);
        move || {
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            future.as_mut().poll(&mut cx).is_ready()
        }
    }

    #[tokio::test]
    async fn the_current_link_waits_for_the_others_to_close() {
        let order = Arc::new(DeliveryOrder::default());
        order.open(1);
        order.set_current(1);
        assert!(ready(&order, 1, HOLD), "a lone link delivers at once");
        order.open(2);
        order.set_current(2);
        // The old link delivers its tail at once; the new one waits.
        assert!(ready(&order, 1, HOLD));
        let waiting = order.clone();
        let mut turn = tokio_test_poll(async move { waiting.turn(2, HOLD).await });
        assert!(!turn());
        order.delivered(1);
        assert!(!turn());
        order.close(1);
        assert!(turn(), "the old link closed: the new one delivers");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_old_link_stops_counting_after_the_hold() {
        let order = Arc::new(DeliveryOrder::default());
        order.open(1);
        order.open(2);
        order.set_current(2);
        let hold = Duration::from_millis(100);
        let started = tokio::time::Instant::now();
        order.turn(2, hold).await;
        assert!(started.elapsed() >= hold);
        // Link 1 no longer counts: the next message goes at once.
        assert!(ready(&order, 2, hold));
    }
}
