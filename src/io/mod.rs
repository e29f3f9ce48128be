//! Inputs and outputs outside the engine: recorded JSON-lines files for `kairos replay`.

pub mod replay;
