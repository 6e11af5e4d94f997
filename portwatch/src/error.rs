//! What ends a run with an error: one enum over the areas' own, each printed as
//! one line with its causes.
use std::io;

use crate::{
    history::schema::HistoryError,
    kernel::{error::LoadError, sockdiag::SockDiagError},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("reading the existing sockets")]
    Snapshot(#[source] SockDiagError),
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
}
