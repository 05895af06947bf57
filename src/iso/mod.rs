//! ISO 9660 images for lomob: a deterministic, streaming writer and a hardened reader.
//!
//! lomob packs photos and videos into large ISO images uploaded to cold storage. Images are
//! never written to disk first: the whole layout is computed up front ([`IsoPlan::new`], pure,
//! no content I/O), so the exact size is known and any byte range can be produced again
//! ([`IsoPlan::reader_at`]) to resume an upload. The image is a pure function of (file list,
//! file contents, [`VolumeInfo`]): same inputs, byte-identical image.
//!
//! # Format
//! - ISO 9660 primary volume descriptor, Joliet supplementary descriptor (escape `%/E`),
//!   terminator; L and M path tables for both trees; 2048-byte sectors.
//! - Rock Ridge (RRIP 1.10 "RRIP_1991A" over SUSP: SP and ER on the root's "." record; PX,
//!   TF on every record; NM on every named record; CE continuation areas when a record
//!   overflows): full names up to 255 raw bytes (non-UTF-8 kept), mode bits, mtimes.
//! - Joliet: UTF-16BE names (surrogate pairs kept), at most 64 units, unique per directory
//!   ("~n" suffix), forbidden characters replaced by `_`. 7-Zip and Windows use these names.
//! - Primary names: d-characters, uppercase, at most 30 characters, unique per directory.
//! - ISO level 3 multi-extent: files over 4 GiB − 2048 are split into extents of that size
//!   (flag 0x80 on all but the last record), each record repeating the Rock Ridge entries.
//! - Empty files have extent location 0 and size 0.
//! - `/LOMOB/CATALOG.JSON` ([`Catalog`]): volume info and, for every file, path (UTF-8, or
//!   base64 of the raw bytes), size, mtime, mode, SHA-256 and data offset. Placed after all
//!   file data; its offset is [`IsoPlan::catalog_offset`].
//!
//! # Writer
//! ```no_run
//! use lomob::iso::{IsoFile, IsoPlan, VolumeInfo};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let files = vec![IsoFile {
//!     path: b"2024/IMG_0001.jpg".to_vec(),
//!     source: "/photos/2024/IMG_0001.jpg".into(),
//!     size: 2_000_000,
//!     mtime: 1_700_000_000,
//!     mode: 0o644,
//!     sha256: [0; 32], // from the scan
//!     content: None,
//! }];
//! let plan = IsoPlan::new(files, VolumeInfo { volume_id: "LOMOB_0001".into(), created: 1_700_000_000 })?;
//! let size = plan.image_size(); // known before streaming
//! let mut reader = plan.reader_at(0); // impl Read + Seek + Send
//! std::io::copy(&mut reader, &mut std::io::sink())?;
//! # Ok(()) }
//! ```
//! - [`IsoPlan::new`] validates paths (relative, '/'-separated, no empty / `.` / `..`
//!   components, no NUL, components ≤ 255 bytes, no duplicates, no file-vs-directory
//!   clashes, `LOMOB/CATALOG.JSON` reserved) and lays everything out.
//! - [`IsoPlan::placements`]: per file, path, data offset in the image, size, and the name
//!   Joliet readers show. [`IsoPlan::catalog`], [`IsoPlan::catalog_bytes`].
//! - [`ImageReader`] streams metadata from memory and file data from disk in 1 MiB chunks,
//!   one file open at a time. A file streamed from its start is SHA-256-checked before its
//!   last chunk is released; sizes are always checked. Mismatch: an `io::Error` wrapping
//!   [`IsoError::SourceChanged`] (get it back with [`IsoError::from_io`]); errors are sticky.
//!   A reader created inside a file (resume) does not hash that file, only checks its size.
//!
//! # Reader
//! [`IsoImage::open`] on any `Read + Seek`; [`IsoImage::entries`] lists files and directories
//! with names from Rock Ridge, else Joliet, else ISO 9660 (without ";1"); multi-extent files
//! come back as one [`Entry`] with several [`Extent`]s; CL/RE relocation is followed.
//! [`IsoImage::read_file`], [`IsoImage::catalog`]. [`verify`] checks every catalog file
//! (presence, size, offset, SHA-256). [`extract_all`] / [`extract_paths`] never write outside
//! the target directory. Hostile input gives errors, never panics or unbounded work.

mod catalog;
mod error;
mod extract;
mod joliet;
mod layout;
mod names;
mod reader;
mod records;
mod rockridge;
mod writer;

pub use catalog::{Catalog, CatalogFile, CatalogVolume, CATALOG_PATH};
pub use error::IsoError;
pub use extract::{extract_all, extract_paths, verify, ExtractReport, Mismatch, VerifyReport};
pub use layout::{sha256_bytes, IsoFile, IsoPlan, Placement, VolumeInfo};
pub use reader::{Entry, Extent, IsoImage, NameSource};
pub use writer::ImageReader;

#[cfg(test)]
mod tests;
