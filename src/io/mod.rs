//! Inputs and outputs outside the engine: Kafka topics for the daemon, recorded JSON-lines
//! files for `kairos replay`.

pub mod kafka;
pub mod replay;
