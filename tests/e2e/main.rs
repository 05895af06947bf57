//! End-to-end tests: the real `lomob` binary against real servers on 127.0.0.1 (moto,
//! `rclone serve s3`, sshd, WebDAV, an SMTP sink, started by `scripts/services.sh`) and the
//! local disk. One test binary with a module per area (ripgrep's layout): the engine and its
//! dependencies are linked once, not once per file.

mod support;

mod alerts;
mod behaviour;
mod check;
mod cli;
mod cloud_fakes;
mod daemon;
mod encryption;
mod iso_cli;
mod iso_interop;
mod listings;
mod messages;
mod restore;
mod safety;
mod serve;
mod site_auth;
mod site_probe;
mod sync;
