//! What an upload reports as it goes.

/// Reported after each part (and once per part reused from an earlier run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadProgress {
    pub part_number: u32,
    pub part_size: u64,
    /// True when the part was already on the server from an earlier run.
    pub reused: bool,
    pub parts_done: u32,
    pub parts_total: u32,
    pub bytes_done: u64,
    pub bytes_total: u64,
}
