//! End-to-end tests that measure time or race a process (kill -9 at a chosen moment, a hang
//! bounded in time, an achieved bandwidth): a binary of their own, run after the others and
//! one test at a time, so no other test's load skews them.

#[path = "../e2e/support/mod.rs"]
mod support;

mod bandwidth;
mod daemon_stop;
mod hang;
mod kill;
