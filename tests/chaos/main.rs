//! The reliability suite (#15): the real `lomob` binary against the test servers (moto with
//! Deep Archive semantics, sshd for SFTP), hammered with faults a seeded generator chooses:
//! kill -9 at random moments, network faults between lomob and each server, cold-storage
//! faults, full disks, files that change while they are read and a clock that jumps. After
//! every iteration the invariants in [`invariants`] are checked, the strongest being that
//! every file comes back byte-identical through `restore` from each site.
//!
//! Every test prints its seed; `LOMOB_CHAOS_SEED=N` replays the same faults. By default a
//! short pass runs (a few iterations per test, for CI); `LOMOB_CHAOS_ITERATIONS` sets more,
//! and `scripts/chaos.sh --long` runs the long pass and writes its figures into
//! RELIABILITY.md (each test appends a JSON line to `LOMOB_CHAOS_REPORT` when it is set).

#[path = "../e2e/support/mod.rs"]
mod support;

mod cold;
mod invariants;
mod kill;
mod local;
mod network;
mod rig;
