//! Tests of the public surface as a host sees it, and of the workspace's invariants.
#![allow(clippy::unwrap_used, missing_docs)]

mod architecture;
mod embedding;
