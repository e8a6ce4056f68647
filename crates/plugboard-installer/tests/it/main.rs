//! Installer integration tests.
