//! The router probe: what the NAT in front of us does, measured against a
//! probe server with two addresses (RFC 5780), and reports of it sent to a
//! collector.
//!
//! Order: build a [`ProbeConfig`]; [`Plan::new`] says what will run (pure);
//! [`probe`] runs it and returns a [`ProbeReport`] ([`classify`] is the
//! pure step from [`Observations`] to [`Findings`]); show the tester
//! [`ProbeReport::summary`] and [`ProbeReport::render_submission`]; if they
//! agree, [`submit`] those exact bytes to a collector over a crust
//! connection. Servers run [`ProbeServer`]; collectors run a [`Collector`]
//! and keep reports in a [`ReportStore`] (feature `node`), whose
//! [`Summary`] is the prevalence table.

mod classify;
mod collect;
mod plan;
mod report;
mod run;
mod server;
#[cfg(feature = "node")]
mod store;
mod tester;
pub mod wire;

pub use classify::{Observations, UpnpSeen, classify, predict};
pub use collect::{
    Collector, Envelope, MAX_REPORT_BYTES, MESSAGE_MAGIC, RateLimit, Rejection, SubmitError,
    Summary, submit, validate,
};
pub use plan::{Plan, ProbeConfig, Step};
pub use report::{
    Addresses, Behaviour, FORMAT_VERSION, Findings, Lifetime, Outcome, Ports, Prediction,
    ProbeReport, Submission, SynAnswer, TcpFindings, Technique, UdpReach, UpnpFindings, Verdict,
};
pub use run::{ProbeError, probe};
pub use server::{MAX_TCP_TASKS, ProbeServer, ServerError};
#[cfg(feature = "node")]
pub use store::{ReportStore, StoreError};
pub use tester::{TesterArgs, TesterError, ask_on_stdin, run_tester};
