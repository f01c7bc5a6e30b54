//! Reports to a collector over crust: the envelope, the collector's checks
//! (size, shape, rate per peer), the client's [`submit`], and the
//! [`Summary`] of stored reports.
//!
//! A report travels as one crust message: `CRPR` then a postcard
//! [`Envelope`]. The collector answers every report with
//! [`Envelope::Accepted`] or [`Envelope::Rejected`]; a rejected report is
//! never stored.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::report::{FORMAT_VERSION, Ports, Submission, SynAnswer};
use crate::{Event, Events, PeerId, Priority, Service};

/// Every probe-report message starts with this.
pub const MESSAGE_MAGIC: &[u8; 4] = b"CRPR";
/// The largest report JSON a collector takes.
pub const MAX_REPORT_BYTES: usize = 16 * 1024;

/// A probe-report message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Envelope {
    /// A tester's report: a [`Submission`] as JSON, exactly as shown to
    /// the tester.
    Report {
        /// The JSON.
        json: String,
    },
    /// Stored under this id.
    Accepted {
        /// The row id.
        id: u64,
    },
    /// Not stored, and why.
    Rejected {
        /// For the tester.
        reason: String,
    },
}

impl Envelope {
    /// The message bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MESSAGE_MAGIC.to_vec();
        // Serialising these types cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// `Ok(None)` for messages that are not probe messages at all (other
    /// traffic on the connection); an error for broken ones.
    pub fn decode(bytes: &[u8]) -> Result<Option<Envelope>, Rejection> {
        let Some(body) = bytes.strip_prefix(MESSAGE_MAGIC) else {
            return Ok(None);
        };
        if body.len() > MAX_REPORT_BYTES + 16 {
            return Err(Rejection::TooLarge(body.len()));
        }
        match postcard::take_from_bytes(body) {
            Ok((e, [])) => Ok(Some(e)),
            Ok(_) => Err(Rejection::Malformed(
                "trailing bytes after the envelope".into(),
            )),
            Err(e) => Err(Rejection::Malformed(format!("bad envelope: {e}"))),
        }
    }
}

/// Why a collector refused a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Over [`MAX_REPORT_BYTES`].
    #[error("report too large: {0} bytes (limit {MAX_REPORT_BYTES})")]
    TooLarge(usize),
    /// Not a valid report.
    #[error("malformed report: {0}")]
    Malformed(String),
    /// A format this collector does not know.
    #[error("unsupported report version {0} (this collector takes {FORMAT_VERSION})")]
    Version(u32),
    /// Too many reports from this peer lately.
    #[error("too many reports; try again in {0} s")]
    RateLimited(u64),
    /// The collector could not store it.
    #[error("the collector could not store the report")]
    Storage,
}

/// Checks a report's JSON: size, shape (unknown fields refused), version,
/// and the length of every free-form field.
pub fn validate(json: &str) -> Result<Submission, Rejection> {
    if json.len() > MAX_REPORT_BYTES {
        return Err(Rejection::TooLarge(json.len()));
    }
    let s: Submission =
        serde_json::from_str(json).map_err(|e| Rejection::Malformed(e.to_string()))?;
    if s.version != FORMAT_VERSION {
        return Err(Rejection::Version(s.version));
    }
    let bad = |what: &str| Err(Rejection::Malformed(what.to_owned()));
    if s.client.len() > 64 {
        return bad("client name longer than 64 bytes");
    }
    if s.outcomes.len() > 64 {
        return bad("more than 64 outcomes");
    }
    if s.outcomes.iter().any(|o| o.peer_nat.len() > 32) {
        return bad("an outcome's peer_nat is longer than 32 bytes");
    }
    if s.network.as_ref().is_some_and(|n| n.len() > 64) {
        return bad("network longer than 64 bytes");
    }
    if s.addresses.as_ref().is_some_and(|a| a.local.len() > 16) {
        return bad("more than 16 local addresses");
    }
    if s.findings.predicted.len() > 16 {
        return bad("more than 16 predictions");
    }
    Ok(s)
}

/// Reports per peer: a burst, then one per `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Reports taken at once.
    pub burst: u32,
    /// Then one per this.
    pub every: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            burst: 5,
            every: Duration::from_secs(60),
        }
    }
}

/// The collector's checks, without storage: feed it each probe message
/// with the time; it says what to store and what to answer.
#[derive(Debug)]
pub struct Collector {
    limit: RateLimit,
    /// Per peer: tokens and when they were counted.
    buckets: HashMap<PeerId, (f64, Instant)>,
}

impl Collector {
    /// A collector with this rate limit.
    pub fn new(limit: RateLimit) -> Self {
        Collector {
            limit,
            buckets: HashMap::new(),
        }
    }

    /// Checks a message from `peer`: `Ok(None)` if it is no probe message
    /// (ignore it), `Ok(Some(report))` to store (then answer
    /// [`Envelope::Accepted`]), `Err` to answer [`Envelope::Rejected`].
    pub fn receive(
        &mut self,
        peer: PeerId,
        now: Instant,
        bytes: &[u8],
    ) -> Result<Option<Submission>, Rejection> {
        if !bytes.starts_with(MESSAGE_MAGIC) {
            return Ok(None);
        }
        // Every probe message counts, broken ones too.
        self.take_token(peer, now)?;
        match Envelope::decode(bytes)? {
            Some(Envelope::Report { json }) => validate(&json).map(Some),
            // Answers sent to a collector are no reports; ignore them.
            _ => Ok(None),
        }
    }

    fn take_token(&mut self, peer: PeerId, now: Instant) -> Result<(), Rejection> {
        // Forget peers whose bucket is full again, so the map stays small.
        if self.buckets.len() > 10_000 {
            let full = self.limit.every * self.limit.burst;
            self.buckets
                .retain(|_, (_, t)| now.duration_since(*t) < full);
        }
        let burst = f64::from(self.limit.burst);
        let per = self.limit.every.as_secs_f64().max(1e-9);
        let (tokens, at) = self.buckets.entry(peer).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() / per).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) * per).ceil() as u64;
            Err(Rejection::RateLimited(wait))
        }
    }
}

/// Why [`submit`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The report could not be sent.
    #[error("cannot send the report: {0}")]
    Send(#[from] crate::SendError),
    /// The collector refused it.
    #[error("the collector refused the report: {0}")]
    Rejected(String),
    /// No answer in time.
    #[error("no answer from the collector")]
    Timeout,
    /// The service stopped.
    #[error("the service stopped")]
    Closed,
}

/// Sends `json` (what [`ProbeReport::render_submission`] showed the
/// tester) to `collector`, which must be connected, and waits for its
/// verdict: the stored report's id.
///
/// It reads `events` until the answer comes: meant for a service
/// dedicated to the probe; other events that arrive meanwhile are dropped.
///
/// [`ProbeReport::render_submission`]: super::ProbeReport::render_submission
pub async fn submit(
    service: &Service,
    events: &mut Events,
    collector: PeerId,
    json: String,
    timeout: Duration,
) -> Result<u64, SubmitError> {
    let message = Envelope::Report { json }.encode();
    service.send(&collector, message, Priority::NORMAL).await?;
    let answer = async {
        loop {
            match events.recv().await {
                None => return Err(SubmitError::Closed),
                Some(Event::NewMessage { peer, data }) if peer == collector => {
                    match Envelope::decode(&data) {
                        Ok(Some(Envelope::Accepted { id })) => return Ok(id),
                        Ok(Some(Envelope::Rejected { reason })) => {
                            return Err(SubmitError::Rejected(reason));
                        }
                        _ => {}
                    }
                }
                Some(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| SubmitError::Timeout)?
}

/// Prevalence of each behaviour and the success of each technique per NAT
/// pair, over a set of reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Reports counted.
    pub reports: u64,
    /// Behaviour → value → reports.
    pub behaviours: BTreeMap<&'static str, BTreeMap<String, u64>>,
    /// (own NAT class, peer NAT class, technique) → (successes, attempts).
    pub techniques: BTreeMap<(String, String, String), (u64, u64)>,
}

fn label<T: fmt::Debug>(v: Option<T>) -> String {
    v.map_or_else(|| "unknown".to_owned(), |v| snake(&format!("{v:?}")))
}

fn snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn yes(v: Option<bool>) -> String {
    match v {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "unknown".into(),
    }
}

impl Summary {
    /// Counts `reports`.
    pub fn of<'a>(reports: impl IntoIterator<Item = &'a Submission>) -> Summary {
        let mut s = Summary::default();
        for r in reports {
            s.add(r);
        }
        s
    }

    /// Counts one more report.
    pub fn add(&mut self, r: &Submission) {
        let f = &r.findings;
        self.reports += 1;
        let ports = match f.ports {
            Some(Ports::Sequential { delta }) => format!("sequential (delta {delta})"),
            p => label(p),
        };
        let syn = f.tcp.unsolicited_syn.map(|a| match a {
            SynAnswer::Dropped => "dropped",
            SynAnswer::Rst => "rst",
            SynAnswer::Icmp => "icmp",
            SynAnswer::Accepted => "accepted",
        });
        for (behaviour, value) in [
            ("nat class", f.nat_class()),
            ("udp", label(Some(f.udp))),
            ("mapping", label(f.mapping)),
            ("filtering", label(f.filtering)),
            ("port allocation", ports),
            ("hairpinning", yes(f.hairpinning)),
            ("tcp unsolicited syn", syn.unwrap_or("unknown").to_owned()),
            ("tcp simultaneous open", yes(f.tcp.simultaneous_open)),
            ("upnp present", yes(f.upnp.present)),
            ("upnp reachable", yes(f.upnp.reachable)),
            ("cgnat", yes(f.cgnat)),
            ("ipv6", yes(f.ipv6)),
        ] {
            *self
                .behaviours
                .entry(behaviour)
                .or_default()
                .entry(value)
                .or_default() += 1;
        }
        let own = f.nat_class();
        for o in &r.outcomes {
            let e = self
                .techniques
                .entry((
                    own.clone(),
                    o.peer_nat.clone(),
                    o.technique.name().to_owned(),
                ))
                .or_default();
            e.0 += u64::from(o.success);
            e.1 += 1;
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        let _ = writeln!(s, "{} reports", self.reports);
        let pct = |n: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                100.0 * n as f64 / of as f64
            }
        };
        for (behaviour, values) in &self.behaviours {
            let _ = writeln!(s, "\n{behaviour}:");
            for (value, n) in values {
                let _ = writeln!(s, "  {value:<28} {n:>6}  {:>5.1}%", pct(*n, self.reports));
            }
        }
        let _ = writeln!(s, "\ntechnique success per NAT pair (ours / peer's):");
        if self.techniques.is_empty() {
            let _ = writeln!(s, "  (no outcomes reported)");
        }
        for ((own, peer, technique), (ok, tried)) in &self.techniques {
            let _ = writeln!(
                s,
                "  {:<28} {technique:<22} {ok:>5}/{tried:<5} {:>5.1}%",
                format!("{own} / {peer}"),
                pct(*ok, *tried)
            );
        }
        f.write_str(s.trim_end())
    }
}
