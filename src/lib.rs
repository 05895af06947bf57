//! lomob: a two-stage off-site backup engine for a family photo and video library.
//!
//! The library crate holds the engine; `src/main.rs` is a thin shell around [`cli`]. The
//! module list reads like the architecture: `scan` feeds the `manifest`; `config` describes
//! the sites whose backends come from the `lomob-backends` crate.

pub mod alert;
pub mod archive;
pub mod check;
pub mod cli;
pub mod config;
pub mod cost;
pub mod crypt;
pub mod daemon;
pub mod exit;
pub mod iso;
pub mod keys;
pub mod manifest;
pub mod pack;
pub mod platform;
pub mod progress;
pub mod restore;
pub mod scan;
pub mod serve;
pub mod site;
pub mod stage;
pub mod store;
pub mod sync;
