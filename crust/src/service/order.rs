//! Delivery order across a switch of connections.
//!
//! When a peer's messages move from one connection (link) to another, the
//! sender finishes the messages it started on the old link while later
//! messages go out on the new one at once; the old link ends with
//! `Close(Superseded)` (see `actor.rs`). The two links may take different
//! times (a relayed circuit against a direct path), so the new link's
//! first messages can arrive before the old link's last ones.
//!
//! So the sender counts the data messages it takes from the peer's queue
//! (`link::PeerQueue`), and when a link takes one after another link did,
//! it first writes `After { sent }` there: what follows comes after the
//! first `sent` messages. The receiver counts the data messages it
//! delivers from the peer, on every link, in one [`DeliveryOrder`]; a
//! reader that reads `After { sent }` waits until that count reaches
//! `sent` (the old link delivered its last messages), then goes on. This
//! holds for every switch, whichever side chose it and however many links
//! come and go.
//!
//! The wait also ends when no other link of the peer is open (an old link
//! that died with messages in flight: those are lost; or the peer
//! restarted and counts from 0 again), and after [`HOLD`] without a
//! message delivered from another link (an old link silent but not yet
//! known dead), after which the links it waited for no longer count. The
//! count then becomes `sent`. What is held is at most one message: the
//! waiting reader reads nothing more, so the sender's transport and our
//! receive budget bound the rest.
//!
//! Calls: the actor [`open`](DeliveryOrder::open)s a link before its
//! reader starts; each reader calls [`after`](DeliveryOrder::after) on
//! `After`, [`delivered`](DeliveryOrder::delivered) after each data
//! message, and [`close`](DeliveryOrder::close) when it ends.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::link::LinkId;

/// The longest a link waits for the others without a message delivered
/// from them.
pub(super) const HOLD: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    /// Data messages delivered from the peer (on the sender's count).
    delivered: u64,
    /// Links whose reader runs and that still count for the order.
    open: Vec<LinkId>,
    /// The last time a message was delivered.
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

    /// `link`'s reader ended, or the link no longer counts for the order
    /// (it is likely dead).
    pub(super) fn close(&self, link: LinkId) {
        self.lock().open.retain(|l| *l != link);
        self.changed.notify_waiters();
    }

    /// A data message was delivered.
    pub(super) fn delivered(&self) {
        let mut state = self.lock();
        state.delivered += 1;
        state.progress_at = Some(Instant::now());
        drop(state);
        self.changed.notify_waiters();
    }

    /// `link` read `After { sent }`: waits until `sent` messages were
    /// delivered, no other link is open, or `hold` passed without a message
    /// delivered (the links waited for then no longer count).
    pub(super) async fn after(&self, link: LinkId, sent: u64, hold: Duration) {
        let started = Instant::now();
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let deadline = {
                let mut state = self.lock();
                let others = state.open.iter().filter(|l| **l != link).count();
                if state.delivered >= sent || others == 0 {
                    if state.delivered < sent {
                        tracing::debug!(
                            link,
                            missing = sent - state.delivered,
                            "earlier connections gone with messages in flight"
                        );
                    }
                    state.delivered = sent;
                    return;
                }
                let since = state.progress_at.map_or(started, |at| at.max(started));
                let deadline = since + hold;
                if Instant::now() >= deadline {
                    tracing::debug!(
                        link,
                        others,
                        missing = sent - state.delivered,
                        "earlier connections silent: delivering"
                    );
                    state.open.retain(|l| *l == link);
                    state.delivered = sent;
                    return;
                }
                deadline
            };
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

    /// Polls a future once; true if it finished.
    fn poller(
        order: &Arc<DeliveryOrder>,
        link: LinkId,
        sent: u64,
        hold: Duration,
    ) -> impl FnMut() -> bool {
        let order = order.clone();
        let mut future = Box::pin(async move { order.after(link, sent, hold).await });
        move || {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            future.as_mut().poll(&mut cx).is_ready()
        }
    }

    #[tokio::test]
    async fn a_new_link_waits_until_the_old_one_delivered_its_share() {
        let order = Arc::new(DeliveryOrder::default());
        order.open(1);
        // The first link: nothing before it.
        assert!(poller(&order, 1, 0, HOLD)());
        order.delivered();
        order.open(2);
        // Link 2 carries what follows the first 3 messages.
        let mut turn = poller(&order, 2, 3, HOLD);
        assert!(!turn());
        order.delivered();
        assert!(!turn());
        order.delivered();
        assert!(turn(), "the old link delivered its 3");
        // And the count goes on from there.
        order.delivered();
        assert!(poller(&order, 1, 4, HOLD)());
    }

    #[tokio::test]
    async fn with_no_other_link_open_the_wait_ends_and_the_count_follows_the_sender() {
        let order = Arc::new(DeliveryOrder::default());
        order.open(1);
        order.delivered();
        order.open(2);
        let mut turn = poller(&order, 2, 10, HOLD);
        assert!(!turn());
        // The old link died with messages in flight.
        order.close(1);
        assert!(turn());
        // The peer restarted: it counts from 0 again.
        order.open(3);
        assert!(poller(&order, 3, 0, HOLD)());
        let mut turn = poller(&order, 2, 1, HOLD);
        assert!(!turn());
        order.delivered();
        assert!(turn());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_old_link_stops_counting_after_the_hold() {
        let order = Arc::new(DeliveryOrder::default());
        order.open(1);
        order.open(2);
        let hold = Duration::from_millis(100);
        let started = Instant::now();
        order.after(2, 5, hold).await;
        assert!(started.elapsed() >= hold);
        // Link 1 no longer counts: a later marker is not held for it.
        assert!(poller(&order, 2, 9, hold)());
    }
}
