//! The errors of starting a network and of running hosts in it.

/// Why a virtual network could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The process may not create namespaces or TUN devices.
    #[error("missing privileges: {0}")]
    Privileges(String),
    /// A system call or file operation failed.
    #[error("{what}")]
    Setup {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external tool is missing or failed.
    #[error("{tool} failed: {message}")]
    Tool {
        /// The tool.
        tool: String,
        /// What it said.
        message: String,
    },
    /// The topology is inconsistent.
    #[error("bad topology: {0}")]
    Topology(String),
    /// The router thread is gone.
    #[error("the router thread has stopped")]
    RouterGone,
}

/// Why [`crate::run`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The network did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The number of host closures differs from the topology's hosts.
    #[error("the topology has {expected} hosts but {got} host closures were given")]
    HostCount {
        /// Hosts in the topology.
        expected: usize,
        /// Closures given.
        got: usize,
    },
    /// A host's closure panicked.
    #[error("host {host} panicked: {message} (seed {seed}; rerun with NETSIM_SEED={seed})")]
    HostPanicked {
        /// The host's name.
        host: String,
        /// The seed of the run.
        seed: u64,
        /// The panic message.
        message: String,
    },
    /// A host thread could not be started.
    #[error("starting host {host}: {source}")]
    Spawn {
        /// The host's name.
        host: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
