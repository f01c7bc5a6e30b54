//! Round-trip time estimation and the retransmission timeout of RFC 6298:
//! `srtt`, `rttvar`, `rto = max(srtt + 4·rttvar, min_rto)`, doubled per
//! consecutive timeout (capped), with Karn's rule applied by the caller (only
//! packets sent once give samples). Call [`RttEstimator::on_sample`] for each
//! valid sample, [`RttEstimator::on_timeout`] when the RTO fires and
//! [`RttEstimator::on_progress`] when an ACK advances.

use std::time::Duration;

/// RFC 6298 estimator with exponential backoff.
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    latest: Duration,
    min_rtt: Option<Duration>,
    initial_rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
    backoff: u32,
}

impl RttEstimator {
    pub(crate) fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            latest: Duration::ZERO,
            min_rtt: None,
            initial_rto,
            min_rto,
            max_rto,
            backoff: 0,
        }
    }

    pub(crate) fn on_sample(&mut self, sample: Duration) {
        self.latest = sample;
        self.min_rtt = Some(self.min_rtt.map_or(sample, |m| m.min(sample)));
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
    }

    /// An ACK for new data clears the backoff (RFC 6298 5.7 keeps the RTO
    /// until a new sample; a fresh sample recomputes it anyway).
    pub(crate) fn on_progress(&mut self) {
        self.backoff = 0;
    }

    pub(crate) fn on_timeout(&mut self) {
        self.backoff = self.backoff.saturating_add(1).min(16);
    }

    /// The smoothed RTT, or the initial RTO before any sample.
    pub(crate) fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(self.initial_rto)
    }

    pub(crate) fn has_sample(&self) -> bool {
        self.srtt.is_some()
    }

    pub(crate) fn latest(&self) -> Duration {
        self.latest
    }

    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// The current RTO including backoff.
    pub(crate) fn rto(&self) -> Duration {
        let base = match self.srtt {
            None => self.initial_rto,
            Some(srtt) => (srtt + self.rttvar * 4).max(self.min_rto),
        };
        base.saturating_mul(1u32 << self.backoff.min(16))
            .min(self.max_rto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est() -> RttEstimator {
        RttEstimator::new(
            Duration::from_secs(1),
            Duration::from_millis(500),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn initial_rto_is_one_second() {
        assert_eq!(est().rto(), Duration::from_secs(1));
    }

    #[test]
    fn rto_never_below_minimum() {
        let mut e = est();
        for _ in 0..50 {
            e.on_sample(Duration::from_millis(1));
        }
        assert_eq!(e.rto(), Duration::from_millis(500));
    }

    #[test]
    fn rfc6298_first_and_second_sample() {
        let mut e = est();
        e.on_sample(Duration::from_millis(200));
        assert_eq!(e.srtt(), Duration::from_millis(200));
        // rto = 200 + 4 * 100 = 600
        assert_eq!(e.rto(), Duration::from_millis(600));
        e.on_sample(Duration::from_millis(400));
        // rttvar = 3/4*100 + 1/4*200 = 125; srtt = 7/8*200 + 1/8*400 = 225
        assert_eq!(e.srtt(), Duration::from_millis(225));
        assert_eq!(e.rto(), Duration::from_millis(725));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut e = est();
        e.on_timeout();
        assert_eq!(e.rto(), Duration::from_secs(2));
        e.on_timeout();
        assert_eq!(e.rto(), Duration::from_secs(4));
        for _ in 0..20 {
            e.on_timeout();
        }
        assert_eq!(e.rto(), Duration::from_secs(60));
        e.on_progress();
        assert_eq!(e.rto(), Duration::from_secs(1));
    }
}
