//! The client and operator commands of the `suppressd` binary (everything but `serve`): thin edges
//! that parse arguments, call the library, print, and choose the exit code.

pub mod audit;
pub mod import;
pub mod receipt;
pub mod remote;
