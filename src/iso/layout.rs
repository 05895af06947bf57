//! Planning: from a list of files to a complete, fixed layout of the image.
//!
//! Everything is decided here before a single content byte is read: the directory trees
//! (primary with Rock Ridge, and Joliet), their names, the sector of every structure and of
//! every file's data, the catalog, and so the exact image size. The metadata sectors are
//! rendered once into memory (a few hundred bytes per file); file contents are not touched.
//! That is what lets [`super::ImageReader`] stream the image from any offset, and makes the
//! image a pure function of (file list, contents, [`VolumeInfo`]).
//!
//! Image order: system area (0-15), primary + Joliet + terminator descriptors (16-18), the
//! four path tables, primary directories (each directly followed by the sectors holding its
//! Rock Ridge continuation areas), Joliet directories, file data in path order, and last the
//! catalog (so that its size, which depends on the data offsets it lists, cannot move them).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::catalog::{Catalog, CatalogFile, CatalogVolume, CATALOG_FORMAT, CATALOG_VERSION};
use super::error::{lossy, IsoError};
use super::joliet;
use super::names;
use super::records::{
    path_record_len, su_offset, terminator, write_path_record, DirRecord, VolumeDescriptor,
    FLAG_DIR, FLAG_MULTI_EXTENT, MAX_EXTENT, SECTOR,
};
use super::rockridge::{self, PackedSu, S_IFDIR, S_IFREG};

/// One file to pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoFile {
    /// Path inside the image: '/'-separated, relative, raw bytes (need not be UTF-8).
    pub path: Vec<u8>,
    /// Where to read the content from.
    pub source: PathBuf,
    pub size: u64,
    /// Modification time, unix seconds.
    pub mtime: i64,
    /// POSIX permission bits for Rock Ridge PX (the file type bits are ignored).
    pub mode: u32,
    /// Expected SHA-256 of the content, checked while streaming.
    pub sha256: [u8; 32],
    /// lomob's content id (xxh3-128), written to the catalog so that recovery from
    /// catalogs alone knows the contents by the same ids as the stage and a rescan.
    pub content: Option<[u8; 16]>,
}

/// Volume-wide information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Volume label (mapped to d-characters, 32 at most, in the primary descriptor; up to 16
    /// characters in the Joliet one).
    pub volume_id: String,
    /// Creation time, unix seconds: the only time the image contains besides file mtimes.
    pub created: i64,
}

/// Where one file's data sits in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Index of the [`IsoFile`] this placement came from, in the order given to the plan.
    pub input: usize,
    pub path: Vec<u8>,
    /// Byte offset of the first data byte in the image (0 for empty files, which have none).
    /// Multi-extent files are contiguous, so the data is `offset..offset + size`.
    pub offset: u64,
    pub size: u64,
    pub sha256: [u8; 32],
    /// lomob's content id (xxh3-128 of the bytes), when the file came from the manifest:
    /// streaming then checks the bytes against it, which costs a tenth of a SHA-256 pass.
    pub content: Option<[u8; 16]>,
    pub source: PathBuf,
    /// The path as Joliet readers (Windows, 7-Zip) show it; it may be truncated or have
    /// characters replaced.
    pub joliet_path: String,
}

/// A range of the image that holds file data (everything else is metadata or zero padding).
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub offset: u64,
    pub size: u64,
    /// Index into `placements`, or `None` for the catalog.
    pub placement: Option<usize>,
}

#[derive(Debug)]
pub(crate) struct PlanInner {
    pub meta: Vec<u8>,
    pub segments: Vec<Segment>,
    pub image_size: u64,
    pub placements: Vec<Placement>,
    pub catalog: Catalog,
    pub catalog_bytes: Vec<u8>,
    pub catalog_offset: u64,
}

/// A computed image layout. Cheap to clone (shared); readers created from it are `Send`.
#[derive(Debug, Clone)]
pub struct IsoPlan {
    pub(crate) inner: Arc<PlanInner>,
}

impl IsoPlan {
    /// Plans an image. Pure: validates paths and computes the layout, without reading any
    /// file content (the sizes and hashes given are trusted and checked while streaming).
    pub fn new(files: Vec<IsoFile>, vol: VolumeInfo) -> Result<IsoPlan, IsoError> {
        build(files, vol).map(|inner| IsoPlan {
            inner: Arc::new(inner),
        })
    }

    /// Exact size of the image in bytes (a multiple of 2048).
    pub fn image_size(&self) -> u64 {
        self.inner.image_size
    }

    /// Data placement of every file, in image order (which is path order).
    pub fn placements(&self) -> &[Placement] {
        &self.inner.placements
    }

    /// The catalog written into the image.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The catalog exactly as stored in the image.
    pub fn catalog_bytes(&self) -> &[u8] {
        &self.inner.catalog_bytes
    }

    /// Identifies the image before a byte of it is read: SHA-256 over the layout's version,
    /// the image size and the catalog, which lists the volume and every file's path, size,
    /// mtime, mode, SHA-256 and offset. The image is a pure function of these, so equal
    /// fingerprints mean equal images. Stored with the archived object, it ties a resumed
    /// or already finished upload to the same bytes.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"lomob-iso-layout-1\0");
        h.update(self.inner.image_size.to_le_bytes());
        h.update(&self.inner.catalog_bytes);
        h.finalize().into()
    }

    /// Byte offset of `/LOMOB/CATALOG.JSON`'s data inside the image.
    pub fn catalog_offset(&self) -> u64 {
        self.inner.catalog_offset
    }

    /// Size of the metadata region at the start of the image (descriptors, path tables,
    /// directories, continuation areas); file data starts after it.
    pub fn metadata_size(&self) -> u64 {
        self.inner.meta.len() as u64
    }

    /// A reader streaming the image from byte `offset` (clamped to the image size).
    pub fn reader_at(&self, offset: u64) -> super::ImageReader {
        super::ImageReader::new(self.inner.clone(), offset)
    }
}

// ---------------------------------------------------------------------------------------------

/// Internal file description: user files plus the catalog.
struct FileSpec {
    path: Vec<u8>,
    size: u64,
    mtime: i64,
    mode: u32,
    /// Index in the user's list, `None` for the catalog.
    user: Option<usize>,
    data_sector: u32,
}

impl FileSpec {
    fn extents(&self) -> u64 {
        self.size.div_ceil(MAX_EXTENT).max(1)
    }
}

struct Node {
    name: Vec<u8>,
    parent: usize,
    /// Children in raw-name order (deterministic).
    children: Vec<usize>,
    file: Option<usize>,
    iso_key: Vec<u8>,
    joliet: Vec<u16>,
}

impl Node {
    fn is_dir(&self) -> bool {
        self.file.is_none()
    }
}

#[derive(Clone, Copy)]
enum Target {
    Dir(usize),
    Extent { node: usize, index: u64 },
}

struct Rec {
    target: Target,
    name: Vec<u8>,
    su: PackedSu,
    /// Sector and offset of the continuation area, when `su.cont` is not empty.
    ce: (u32, u32),
}

impl Rec {
    fn len(&self) -> usize {
        super::records::dir_record_len(self.name.len(), self.su.inline_len())
    }
}

/// One directory extent of one tree.
struct DirExt {
    node: usize,
    recs: Vec<Rec>,
    /// Byte offset of each record inside the extent.
    offsets: Vec<usize>,
    sector: u32,
    sectors: u32,
}

/// One tree (primary or Joliet): its directories in path table order.
struct Tree {
    dirs: Vec<DirExt>,
    /// node -> index in `dirs`.
    index: HashMap<usize, usize>,
    path_table_size: usize,
    l_sector: u32,
    m_sector: u32,
}

/// Splits and validates a path.
fn components(path: &[u8]) -> Result<Vec<&[u8]>, IsoError> {
    let bad = |reason: &str| IsoError::InvalidPath {
        path: lossy(path),
        reason: reason.to_string(),
    };
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path[0] == b'/' {
        return Err(bad("absolute path"));
    }
    if path.contains(&0) {
        return Err(bad("NUL byte"));
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        if c.is_empty() {
            return Err(bad("empty component"));
        }
        if c == b"." || c == b".." {
            return Err(bad("'.' or '..' component"));
        }
        if c.len() > 255 {
            return Err(IsoError::NameTooLong {
                path: lossy(path),
                len: c.len(),
            });
        }
        out.push(c);
    }
    Ok(out)
}

fn sectors_for(bytes: u64) -> u64 {
    bytes.div_ceil(SECTOR)
}

/// Lays out an image: the directory tree, names, sector positions of every directory and
/// file, the catalog, and the rendered metadata sectors.
fn build(user_files: Vec<IsoFile>, vol: VolumeInfo) -> Result<PlanInner, IsoError> {
    let (mut nodes, mut files, catalog_idx) = file_tree(&user_files, &vol)?;
    assign_names(&mut nodes);
    let dir_count = nodes.iter().filter(|n| n.is_dir()).count();
    if dir_count > u16::MAX as usize {
        return Err(IsoError::Limit(format!(
            "{dir_count} directories (path tables allow 65535)"
        )));
    }
    let mut primary = make_tree(&nodes, &files, &vol, false);
    let mut jtree = make_tree(&nodes, &files, &vol, true);
    let meta_sectors = place_directories(&mut primary, &mut jtree)?;
    let data = place_data(
        &nodes,
        &mut files,
        catalog_idx,
        &user_files,
        &vol,
        meta_sectors,
    )?;
    let mut meta = vec![0u8; (meta_sectors * SECTOR) as usize];
    let r = Renderer {
        nodes: &nodes,
        files: &files,
        vol: &vol,
    };
    r.render(&mut meta, &primary, &jtree, data.total_sectors);
    Ok(PlanInner {
        meta,
        segments: data.segments,
        image_size: u64::from(data.total_sectors) * SECTOR,
        placements: data.placements,
        catalog: data.catalog,
        catalog_bytes: data.catalog_bytes,
        catalog_offset: data.catalog_offset,
    })
}

/// The directory tree of the user's files plus the catalog (last); returns the nodes, the
/// files and the catalog's index among them.
fn file_tree(
    user_files: &[IsoFile],
    vol: &VolumeInfo,
) -> Result<(Vec<Node>, Vec<FileSpec>, usize), IsoError> {
    let mut t = TreeBuilder {
        nodes: vec![Node {
            name: Vec::new(),
            parent: 0,
            children: Vec::new(),
            file: None,
            iso_key: Vec::new(),
            joliet: Vec::new(),
        }],
        lookup: HashMap::new(),
        files: Vec::with_capacity(user_files.len() + 1),
    };
    for (i, f) in user_files.iter().enumerate() {
        if f.size > (u32::MAX as u64) * SECTOR {
            return Err(IsoError::Limit(format!(
                "file {} is too large",
                lossy(&f.path)
            )));
        }
        t.insert(
            FileSpec {
                path: f.path.clone(),
                size: f.size,
                mtime: f.mtime,
                mode: f.mode & 0o7777,
                user: Some(i),
                data_sector: 0,
            },
            false,
        )?;
    }
    t.insert(
        FileSpec {
            path: super::catalog::CATALOG_PATH.to_vec(),
            size: 0, // known once the data offsets are
            mtime: vol.created,
            mode: 0o444,
            user: None,
            data_sector: 0,
        },
        true,
    )?;
    let catalog_idx = t.files.len() - 1;
    Ok((t.nodes, t.files, catalog_idx))
}

struct TreeBuilder {
    nodes: Vec<Node>,
    lookup: HashMap<(usize, Vec<u8>), usize>,
    files: Vec<FileSpec>,
}

impl TreeBuilder {
    /// Adds a file and the folders above it; a path given twice, or a file where a folder
    /// is (or the other way round), is an error. `reserved`: the catalog's own path.
    fn insert(&mut self, spec: FileSpec, reserved: bool) -> Result<(), IsoError> {
        let comps = components(&spec.path)?;
        let mut cur = 0usize;
        for (i, c) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let prefix =
                || lossy(&spec.path[..comps[..=i].iter().map(|c| c.len() + 1).sum::<usize>() - 1]);
            let conflict = |e: IsoError| {
                if reserved {
                    IsoError::InvalidPath {
                        path: lossy(&spec.path),
                        reason: "this path is reserved for the lomob catalog".into(),
                    }
                } else {
                    e
                }
            };
            match self.lookup.get(&(cur, c.to_vec())) {
                Some(&n) => {
                    if last {
                        return Err(conflict(if self.nodes[n].is_dir() {
                            IsoError::FileDirConflict { path: prefix() }
                        } else {
                            IsoError::DuplicatePath { path: prefix() }
                        }));
                    }
                    if !self.nodes[n].is_dir() {
                        return Err(conflict(IsoError::FileDirConflict { path: prefix() }));
                    }
                    cur = n;
                }
                None => {
                    let id = self.nodes.len();
                    self.nodes.push(Node {
                        name: c.to_vec(),
                        parent: cur,
                        children: Vec::new(),
                        file: if last { Some(self.files.len()) } else { None },
                        iso_key: Vec::new(),
                        joliet: Vec::new(),
                    });
                    self.nodes[cur].children.push(id);
                    self.lookup.insert((cur, c.to_vec()), id);
                    cur = id;
                }
            }
        }
        self.files.push(spec);
        Ok(())
    }
}

/// Sorts every folder's children by raw name (deterministic) and gives them their ISO 9660
/// and Joliet names.
fn assign_names(nodes: &mut [Node]) {
    for n in 0..nodes.len() {
        if !nodes[n].is_dir() {
            continue;
        }
        let mut kids = std::mem::take(&mut nodes[n].children);
        kids.sort_by(|&a, &b| nodes[a].name.cmp(&nodes[b].name));
        let list: Vec<(&[u8], bool)> = kids
            .iter()
            .map(|&k| (nodes[k].name.as_slice(), nodes[k].is_dir()))
            .collect();
        let iso = names::assign_iso_names(&list);
        let jol = joliet::assign_joliet_names(&list);
        for ((&k, i), j) in kids.iter().zip(iso).zip(jol) {
            nodes[k].iso_key = i;
            nodes[k].joliet = j;
        }
        nodes[n].children = kids;
    }
}

/// Gives the path tables and directories of both trees their sectors, after the volume
/// descriptors; returns the first sector after them (where file data starts).
fn place_directories(primary: &mut Tree, jtree: &mut Tree) -> Result<u64, IsoError> {
    let mut cursor: u64 = 19;
    for t in [&mut *primary, &mut *jtree] {
        let s = sectors_for(t.path_table_size as u64).max(1);
        t.l_sector = cursor as u32;
        t.m_sector = (cursor + s) as u32;
        cursor += 2 * s;
    }
    // Primary directories, each followed by its Rock Ridge continuation areas: libarchive
    // reads CE areas only when its sequential position reaches them right after the
    // directory it is reading, so they must not be gathered elsewhere.
    for d in &mut primary.dirs {
        d.sector = u32::try_from(cursor).map_err(|_| too_big())?;
        cursor += d.sectors as u64;
        let mut ce_off = 0u64;
        let mut used = false;
        for r in &mut d.recs {
            let len = r.su.cont.len() as u64;
            if len == 0 {
                continue;
            }
            // Areas never cross a sector boundary.
            if ce_off + len > SECTOR {
                cursor += 1;
                ce_off = 0;
            }
            r.ce = (u32::try_from(cursor).map_err(|_| too_big())?, ce_off as u32);
            ce_off += len;
            ce_off += ce_off % 2;
            used = true;
        }
        if used {
            cursor += 1;
        }
    }
    for d in &mut jtree.dirs {
        d.sector = u32::try_from(cursor).map_err(|_| too_big())?;
        cursor += d.sectors as u64;
    }
    Ok(cursor)
}

/// Where file data goes, and the catalog that describes it.
struct DataLayout {
    placements: Vec<Placement>,
    segments: Vec<Segment>,
    catalog: Catalog,
    catalog_bytes: Vec<u8>,
    catalog_offset: u64,
    total_sectors: u32,
}

/// Places every file's data from sector `first` on, in path order (depth-first over the
/// sorted tree), then the catalog, which lists them all.
fn place_data(
    nodes: &[Node],
    files: &mut [FileSpec],
    catalog_idx: usize,
    user_files: &[IsoFile],
    vol: &VolumeInfo,
    first: u64,
) -> Result<DataLayout, IsoError> {
    let mut cursor = first;
    let mut order = Vec::with_capacity(files.len());
    let mut stack = vec![0usize];
    while let Some(n) = stack.pop() {
        match nodes[n].file {
            Some(f) => {
                if f != catalog_idx {
                    order.push(f)
                }
            }
            None => stack.extend(nodes[n].children.iter().rev()),
        }
    }
    let mut placements = Vec::with_capacity(order.len());
    let mut segments = Vec::with_capacity(order.len() + 1);
    let mut cat_files = Vec::with_capacity(order.len());
    let node_of_file: HashMap<usize, usize> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.file.map(|f| (f, i)))
        .collect();
    for &f in &order {
        let spec = &mut files[f];
        let u = &user_files[spec.user.unwrap_or(0)];
        let offset = if spec.size == 0 {
            0
        } else {
            spec.data_sector = u32::try_from(cursor).map_err(|_| too_big())?;
            let off = cursor * SECTOR;
            cursor += sectors_for(spec.size);
            off
        };
        if spec.size > 0 {
            segments.push(Segment {
                offset,
                size: spec.size,
                placement: Some(placements.len()),
            });
        }
        let mut cf = CatalogFile {
            path: None,
            path_b64: None,
            size: spec.size,
            mtime: spec.mtime,
            mode: spec.mode,
            sha256: hex::encode(u.sha256),
            offset,
            content: u.content.map(hex::encode),
        };
        cf.set_raw_path(&spec.path);
        cat_files.push(cf);
        placements.push(Placement {
            input: spec.user.unwrap_or(0),
            path: spec.path.clone(),
            offset,
            size: spec.size,
            sha256: u.sha256,
            content: u.content,
            source: u.source.clone(),
            joliet_path: joliet_path(nodes, node_of_file[&f]),
        });
    }
    let catalog = Catalog {
        format: CATALOG_FORMAT.to_string(),
        version: CATALOG_VERSION,
        volume: CatalogVolume {
            volume_id: vol.volume_id.clone(),
            created: vol.created,
        },
        files: cat_files,
    };
    let catalog_bytes = catalog.to_json();
    if catalog_bytes.len() as u64 > MAX_EXTENT {
        return Err(IsoError::Limit("catalog larger than 4 GiB".into()));
    }
    files[catalog_idx].size = catalog_bytes.len() as u64;
    files[catalog_idx].data_sector = u32::try_from(cursor).map_err(|_| too_big())?;
    let catalog_offset = cursor * SECTOR;
    segments.push(Segment {
        offset: catalog_offset,
        size: catalog_bytes.len() as u64,
        placement: None,
    });
    cursor += sectors_for(catalog_bytes.len() as u64);
    Ok(DataLayout {
        placements,
        segments,
        catalog,
        catalog_bytes,
        catalog_offset,
        total_sectors: u32::try_from(cursor).map_err(|_| too_big())?,
    })
}

fn too_big() -> IsoError {
    IsoError::Limit("image larger than 2^32 sectors (8 TiB)".into())
}

fn joliet_path(nodes: &[Node], mut n: usize) -> String {
    let mut parts = Vec::new();
    while n != 0 {
        parts.push(String::from_utf16_lossy(&nodes[n].joliet));
        n = nodes[n].parent;
    }
    parts.reverse();
    parts.join("/")
}

fn dir_mode() -> u32 {
    S_IFDIR | 0o755
}

fn subdir_count(nodes: &[Node], n: usize) -> u32 {
    nodes[n]
        .children
        .iter()
        .filter(|&&c| nodes[c].is_dir())
        .count() as u32
}

/// Rock Ridge entries (unpacked) for a record pointing at `node`. The "." and ".." records
/// (`with_name` false) carry no NM, as with mkisofs and xorriso; the root's "." record
/// (`root_dot`) also carries SP first and ER last.
fn rr_entries(
    nodes: &[Node],
    files: &[FileSpec],
    vol: &VolumeInfo,
    node: usize,
    root_dot: bool,
    with_name: bool,
) -> Vec<Vec<u8>> {
    let mut e = Vec::new();
    if root_dot {
        e.push(rockridge::sp());
    }
    match nodes[node].file {
        None => {
            e.push(rockridge::px(dir_mode(), 2 + subdir_count(nodes, node)));
            e.push(rockridge::tf(vol.created));
        }
        Some(f) => {
            e.push(rockridge::px(S_IFREG | files[f].mode, 1));
            e.push(rockridge::tf(files[f].mtime));
        }
    }
    if with_name {
        e.extend(rockridge::nm(&nodes[node].name));
    }
    if root_dot {
        e.push(rockridge::er());
    }
    e
}

fn su_budget(name_len: usize) -> usize {
    // Records are at most 255 bytes and even: 254.
    254 - su_offset(name_len)
}

fn make_tree(nodes: &[Node], files: &[FileSpec], vol: &VolumeInfo, is_joliet: bool) -> Tree {
    // Children of each directory in this tree's identifier order.
    let sorted_children = |n: usize| -> Vec<usize> {
        let mut kids = nodes[n].children.clone();
        if is_joliet {
            kids.sort_by_key(|&k| names::sort_key(&nodes[k].joliet, u16::from(b'.')));
        } else {
            kids.sort_by_key(|&k| names::sort_key(&nodes[k].iso_key, b'.'));
        }
        kids
    };
    let mut dirs = Vec::new();
    let mut index = HashMap::new();
    let mut queue = VecDeque::from([0usize]);
    let mut path_table_size = 0usize;
    while let Some(n) = queue.pop_front() {
        index.insert(n, dirs.len());
        let kids = sorted_children(n);
        let name_len = if n == 0 {
            1
        } else if is_joliet {
            nodes[n].joliet.len() * 2
        } else {
            nodes[n].iso_key.len()
        };
        path_table_size += path_record_len(name_len);
        let mut recs = Vec::new();
        for (dot, target) in [(0u8, n), (1u8, nodes[n].parent)] {
            let su = if is_joliet {
                PackedSu::default()
            } else {
                let e = rr_entries(nodes, files, vol, target, n == 0 && dot == 0, false);
                rockridge::pack(&e, su_budget(1))
            };
            recs.push(Rec {
                target: Target::Dir(target),
                name: vec![dot],
                su,
                ce: (0, 0),
            });
        }
        for &k in &kids {
            let name = if is_joliet {
                joliet::to_be_bytes(&nodes[k].joliet)
            } else {
                names::iso_record_name(&nodes[k].iso_key, nodes[k].is_dir())
            };
            let su = if is_joliet {
                PackedSu::default()
            } else {
                let e = rr_entries(nodes, files, vol, k, false, true);
                rockridge::pack(&e, su_budget(name.len()))
            };
            match nodes[k].file {
                None => {
                    queue.push_back(k);
                    recs.push(Rec {
                        target: Target::Dir(k),
                        name,
                        su,
                        ce: (0, 0),
                    });
                }
                Some(f) => {
                    // Every extent record repeats the full Rock Ridge entries.
                    for index in 0..files[f].extents() {
                        recs.push(Rec {
                            target: Target::Extent { node: k, index },
                            name: name.clone(),
                            su: su.clone(),
                            ce: (0, 0),
                        });
                    }
                }
            }
        }
        // Records never cross a sector boundary.
        let mut offsets = Vec::with_capacity(recs.len());
        let mut off = 0usize;
        for r in &recs {
            let len = r.len();
            if off % SECTOR as usize + len > SECTOR as usize {
                off = off.div_ceil(SECTOR as usize) * SECTOR as usize;
            }
            offsets.push(off);
            off += len;
        }
        let sectors = (sectors_for(off as u64).max(1)) as u32;
        dirs.push(DirExt {
            node: n,
            recs,
            offsets,
            sector: 0,
            sectors,
        });
    }
    Tree {
        dirs,
        index,
        path_table_size,
        l_sector: 0,
        m_sector: 0,
    }
}

struct Renderer<'a> {
    nodes: &'a [Node],
    files: &'a [FileSpec],
    vol: &'a VolumeInfo,
}

impl Renderer<'_> {
    fn render(&self, meta: &mut [u8], primary: &Tree, jtree: &Tree, total_sectors: u32) {
        let s = SECTOR as usize;
        for (k, t) in [(1u8, primary), (2u8, jtree)] {
            let joliet = k == 2;
            let root = &t.dirs[0];
            let mut root_rec = Vec::new();
            DirRecord {
                extent: root.sector,
                size: root.sectors * SECTOR as u32,
                mtime: self.vol.created,
                flags: FLAG_DIR,
                name: &[0],
                su: &[],
            }
            .write(&mut root_rec);
            let (vid, sys, app) = if joliet {
                let v: Vec<u16> = self.vol.volume_id.encode_utf16().take(16).collect();
                (
                    joliet::to_be_bytes(&v),
                    Vec::new(),
                    joliet::to_be_bytes(&"LOMOB".encode_utf16().collect::<Vec<_>>()),
                )
            } else {
                (
                    names::volume_id_d(&self.vol.volume_id),
                    Vec::new(),
                    b"LOMOB".to_vec(),
                )
            };
            let vd = VolumeDescriptor {
                kind: k,
                volume_id: &vid,
                system_id: &sys,
                application_id: &app,
                space_sectors: total_sectors,
                path_table_size: t.path_table_size as u32,
                l_table_sector: t.l_sector,
                m_table_sector: t.m_sector,
                root_record: &root_rec,
                created: self.vol.created,
                joliet,
            }
            .render();
            let at = (15 + k as usize) * s;
            meta[at..at + s].copy_from_slice(&vd);
            // Path tables.
            for big in [false, true] {
                let mut pt = Vec::with_capacity(t.path_table_size);
                for d in &t.dirs {
                    let name = if d.node == 0 {
                        vec![0]
                    } else if joliet {
                        joliet::to_be_bytes(&self.nodes[d.node].joliet)
                    } else {
                        self.nodes[d.node].iso_key.clone()
                    };
                    let parent = t.index[&self.nodes[d.node].parent] as u16 + 1;
                    write_path_record(&mut pt, &name, d.sector, parent, big);
                }
                let at = (if big { t.m_sector } else { t.l_sector }) as usize * s;
                meta[at..at + pt.len()].copy_from_slice(&pt);
            }
            // Directories.
            for d in &t.dirs {
                let base = d.sector as usize * s;
                for (r, &off) in d.recs.iter().zip(&d.offsets) {
                    let mut buf = Vec::with_capacity(255);
                    self.record(t, r, &mut buf);
                    meta[base + off..base + off + buf.len()].copy_from_slice(&buf);
                    if !r.su.cont.is_empty() {
                        let at = r.ce.0 as usize * s + r.ce.1 as usize;
                        meta[at..at + r.su.cont.len()].copy_from_slice(&r.su.cont);
                    }
                }
            }
        }
        meta[18 * s..19 * s].copy_from_slice(&terminator());
    }

    fn record(&self, t: &Tree, r: &Rec, out: &mut Vec<u8>) {
        let mut su = r.su.inline.clone();
        if !r.su.cont.is_empty() {
            su.extend(rockridge::ce(r.ce.0, r.ce.1, r.su.cont.len() as u32));
        }
        let (extent, size, mtime, flags) = match r.target {
            Target::Dir(n) => {
                let d = &t.dirs[t.index[&n]];
                (
                    d.sector,
                    d.sectors * SECTOR as u32,
                    self.vol.created,
                    FLAG_DIR,
                )
            }
            Target::Extent { node, index } => {
                let f = &self.files[self.nodes[node].file.unwrap_or(0)];
                let n_ext = f.extents();
                let start = index * MAX_EXTENT;
                let len = (f.size - start.min(f.size)).min(MAX_EXTENT) as u32;
                let sector = if f.size == 0 {
                    0
                } else {
                    f.data_sector + (start / SECTOR) as u32
                };
                let flags = if index + 1 < n_ext {
                    FLAG_MULTI_EXTENT
                } else {
                    0
                };
                (sector, len, f.mtime, flags)
            }
        };
        DirRecord {
            extent,
            size,
            mtime,
            flags,
            name: &r.name,
            su: &su,
        }
        .write(out);
    }
}

/// SHA-256 of a byte slice (helper for tests and callers building [`IsoFile`]s).
pub fn sha256_bytes(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}
