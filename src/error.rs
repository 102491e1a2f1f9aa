//! Errors at the seams, typed so that the exit code comes from what went
//! wrong, never from a message's text.

/// Why a run did not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The run asks for something its target cannot do; nothing was started.
    #[error("refused: {0}")]
    Refused(String),
    /// The user's input (flags, files, addresses) is wrong.
    #[error("{0}")]
    BadInput(String),
}

impl RunError {
    /// The exit code an error of this kind deserves: bad input, 254.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Refused(_) | RunError::BadInput(_) => 254,
        }
    }

    /// The exit code for any error out of a run: its `RunError`'s when it
    /// has one (wherever in the chain of contexts), else internal (255).
    pub fn exit_code_of(e: &anyhow::Error) -> u8 {
        e.chain()
            .find_map(|c| c.downcast_ref::<RunError>())
            .map_or(255, RunError::exit_code)
    }
}
