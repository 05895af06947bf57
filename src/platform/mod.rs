//! What differs between Unix and Windows, behind one API, so that the rest of lomob never
//! names `std::os::unix` or libc: names and paths as the manifest's bytes ([`names`]), file
//! facts, permissions and I/O hints ([`file`]), the allocator ([`memory`]), the terminal
//! ([`term`]).
//!
//! Unix keeps its exact behaviour (raw names, inodes, O_DIRECT, syncfs, modes). Windows gets
//! its own form of each (WTF-8 names, volume serial and file index, FILE_FLAG_* hints) or,
//! where it has none and the call is only a hint, nothing.

pub mod file;
pub mod memory;
pub mod names;
pub mod term;
