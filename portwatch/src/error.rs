//! What ends a run with an error: one enum over the areas' own, each printed as
//! one line with its causes.
use std::io;

use crate::{
    baseline::file::BaselineError,
    history::schema::HistoryError,
    kernel::{error::LoadError, sockdiag::SockDiagError},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A baseline file that cannot be used: a usage error (exit 2).
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    #[error("reading the existing sockets")]
    Snapshot(#[source] SockDiagError),
    /// `--metrics ADDR:PORT` cannot be served (the address is taken, say).
    #[error("serving metrics on {addr}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    /// `--otlp-endpoint` cannot be used (a usage error, exit 2).
    #[error(transparent)]
    Otlp(#[from] crate::export::otlp::OtlpError),
    /// Writing output, or the event loop's own I/O. A closed stdout is not an
    /// error: [`Error::is_closed_output`].
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// Whoever read stdout went away (`portwatch | head`): the run ends quietly.
    pub fn is_closed_output(&self) -> bool {
        matches!(self, Error::Io(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The exit code: 2 for what the user gave wrong (a baseline file, an OTLP
    /// endpoint), 1 else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Baseline(_) => 2,
            Error::Otlp(e) if !matches!(e, crate::export::otlp::OtlpError::Thread(_)) => 2,
            _ => 1,
        }
    }
}
