//! Many small records stored as few sled values: a sorted map of keys to values kept in
//! pages of a bounded size, each page one sled value keyed by the first key it holds.
//!
//! Why: sled spends 150-300 bytes of its own on every value it stores, more than the
//! records of a file themselves (a file record is ~80 bytes, its content ~55). A million
//! files made a 620 MB manifest, a fully staged one 1 GB. Pages share that cost among
//! dozens of records, and inside a page each key keeps only what differs from the key
//! before it (a path's folders are written once per page, not once per file).
//!
//! The map behaves like a sled tree of its own: lookups, ordered ranges from any key,
//! and batches of writes that become one sled batch (so they go into the manifest's
//! transactions with everything else). Every page holds at least one record, its sled key
//! is its first record's key, and pages never overlap, so the page holding a key is the
//! one with the greatest first key at or below it.

use std::ops::Bound;

use super::{ManifestError, Result};

/// Format byte leading every page, so a future layout can be told apart.
const PAGE_FORMAT: u8 = 1;

/// A sorted map stored in pages of at most `max_page` bytes (a page with one record larger
/// than that holds it alone).
pub(super) struct PagedTree {
    tree: sled::Tree,
    name: &'static str,
    max_page: usize,
}

/// One write of a batch: a value stored, or (`None`) the key removed.
pub(super) type Write = (Vec<u8>, Option<Vec<u8>>);

/// The page writes of a batch, and how many bytes of pages they write.
pub(super) struct PageBatch {
    pub(super) batch: sled::Batch,
    pub(super) bytes: u64,
}

impl PagedTree {
    pub(super) fn open(db: &sled::Db, name: &'static str, max_page: usize) -> Result<PagedTree> {
        Ok(PagedTree {
            tree: db.open_tree(name)?,
            name,
            max_page,
        })
    }

    /// The sled tree of pages, for the manifest's transactions.
    pub(super) fn pages(&self) -> &sled::Tree {
        &self.tree
    }

    pub(super) fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    pub(super) fn clear(&self) -> Result<()> {
        Ok(self.tree.clear()?)
    }

    /// The page that holds `key` if anything does: (first key, page bytes).
    fn page_at(&self, key: &[u8]) -> Result<Option<(sled::IVec, sled::IVec)>> {
        Ok(self
            .tree
            .range::<&[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .transpose()?)
    }

    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some((_, page)) = self.page_at(key)? else {
            return Ok(None);
        };
        let mut reader = PageReader::new(&page, self.name)?;
        while let Some((k, v)) = reader.next_entry()? {
            match k.cmp(key) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Ok(Some(v.to_vec())),
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    pub(super) fn contains_key(&self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Every record from the first key at or after `start`, in key order, read a page at a
    /// time as iterated.
    pub(super) fn range_from(&self, start: &[u8]) -> Entries {
        let first = match self.page_at(start) {
            Ok(Some((k, _))) => k.to_vec(),
            Ok(None) => Vec::new(),
            Err(e) => return Entries::failed(e, self.name),
        };
        Entries {
            pages: Some(Records::from(&self.tree, Bound::Included(first))),
            page: Vec::new(),
            at: 0,
            start: start.to_vec(),
            seen: None,
            name: self.name,
            error: None,
        }
    }

    pub(super) fn iter(&self) -> Entries {
        self.range_from(&[])
    }

    /// Every record whose key starts with `prefix`, in key order.
    pub(super) fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + use<> {
        let prefix = prefix.to_vec();
        self.range_from(&prefix)
            .take_while(move |kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
    }

    /// The page writes that apply `writes` (later writes of a key win), as one sled batch
    /// for the caller to apply, alone or in a transaction. Only one batch may be worked
    /// out and applied at a time: the caller holds the manifest's writer lock.
    pub(super) fn batch(&self, writes: impl IntoIterator<Item = Write>) -> Result<PageBatch> {
        let writes: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            writes.into_iter().collect();
        let mut out = sled::Batch::default();
        let mut bytes = 0u64;
        let mut pending = writes.into_iter().peekable();
        while let Some((key, _)) = pending.peek() {
            // The page this write belongs to: the one holding its key, or the first page
            // when the key sorts before every page. Writes up to the next page's first key
            // go to it too.
            let page = match self.page_at(key)? {
                Some(p) => Some(p),
                None => self.tree.iter().next().transpose()?,
            };
            let next = match &page {
                Some((first, _)) => self
                    .tree
                    .range::<&[u8], _>((Bound::Excluded(first.as_ref()), Bound::Unbounded))
                    .next()
                    .transpose()?
                    .map(|(k, _)| k),
                None => None,
            };
            let mut group = Vec::new();
            while let Some((k, _)) = pending.peek() {
                if next.as_ref().is_some_and(|n| k.as_slice() >= n.as_ref()) {
                    break;
                }
                group.push(pending.next().expect("peeked"));
            }
            let old = match &page {
                Some((first, bytes)) => {
                    out.remove(first.as_ref());
                    decode_page(bytes, self.name)?
                }
                None => Vec::new(),
            };
            for chunk in split(merge(old, group), self.max_page) {
                let page = encode_page(&chunk);
                bytes += page.len() as u64;
                out.insert(chunk[0].0.as_slice(), page);
            }
        }
        Ok(PageBatch { batch: out, bytes })
    }

    /// Applies `writes` at once (outside a transaction).
    pub(super) fn apply(&self, writes: impl IntoIterator<Item = Write>) -> Result<()> {
        let batch = self.batch(writes)?;
        Ok(self.tree.apply_batch(batch.batch)?)
    }
}

/// The records of a sorted page merged with sorted writes.
fn merge(old: Vec<(Vec<u8>, Vec<u8>)>, writes: Vec<Write>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::with_capacity(old.len() + writes.len());
    let mut old = old.into_iter().peekable();
    for (key, value) in writes {
        while let Some((k, _)) = old.peek() {
            if k.as_slice() >= key.as_slice() {
                break;
            }
            out.push(old.next().expect("peeked"));
        }
        if old.peek().is_some_and(|(k, _)| *k == key) {
            old.next();
        }
        if let Some(v) = value {
            out.push((key, v));
        }
    }
    out.extend(old);
    out
}

/// Cuts sorted records into pages of about equal size, none over `max` bytes unless one
/// record is.
fn split(records: Vec<(Vec<u8>, Vec<u8>)>, max: usize) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let cost = |(k, v): &(Vec<u8>, Vec<u8>)| k.len() + v.len() + 4;
    let total: usize = records.iter().map(cost).sum();
    if records.is_empty() {
        return Vec::new();
    }
    // As few pages as fit, filled evenly: a page cut in two halves leaves room on both
    // sides for the next inserts, and appends in key order fill their pages.
    let pages = total.div_ceil(max.max(1)).max(1);
    let target = total.div_ceil(pages);
    let mut out = Vec::with_capacity(pages);
    let mut page = Vec::new();
    let mut size = 0;
    for r in records {
        let c = cost(&r);
        if !page.is_empty() && size + c > target {
            out.push(std::mem::take(&mut page));
            size = 0;
        }
        size += c;
        page.push(r);
    }
    out.push(page);
    out
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn encode_page(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let size: usize = records.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = Vec::with_capacity(size + 1);
    out.push(PAGE_FORMAT);
    let mut previous: &[u8] = &[];
    for (k, v) in records {
        let shared = k.iter().zip(previous).take_while(|(a, b)| a == b).count();
        put_varint(&mut out, shared);
        put_varint(&mut out, k.len() - shared);
        out.extend_from_slice(&k[shared..]);
        put_varint(&mut out, v.len());
        out.extend_from_slice(v);
        previous = k;
    }
    out
}

fn decode_page(page: &[u8], name: &'static str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut reader = PageReader::new(page, name)?;
    let mut out = Vec::new();
    while let Some((k, v)) = reader.next_entry()? {
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

/// Reads a page's records in order, rebuilding each key in one buffer.
struct PageReader<'a> {
    page: &'a [u8],
    at: usize,
    key: Vec<u8>,
    name: &'static str,
}

impl<'a> PageReader<'a> {
    fn new(page: &'a [u8], name: &'static str) -> Result<PageReader<'a>> {
        match page.first() {
            Some(&PAGE_FORMAT) => Ok(PageReader {
                page,
                at: 1,
                key: Vec::new(),
                name,
            }),
            other => Err(bad_page(name, format!("unknown page format {other:?}"))),
        }
    }

    fn varint(&mut self) -> Result<usize> {
        let mut n: usize = 0;
        for shift in (0..64).step_by(7) {
            let b = *self
                .page
                .get(self.at)
                .ok_or_else(|| bad_page(self.name, "page ends inside a length"))?;
            self.at += 1;
            n |= ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(bad_page(self.name, "length longer than 64 bits"))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.page.len())
            .ok_or_else(|| bad_page(self.name, "page ends inside a record"))?;
        let b = &self.page[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn next_entry(&mut self) -> Result<Option<(&[u8], &'a [u8])>> {
        if self.at == self.page.len() {
            return Ok(None);
        }
        let shared = self.varint()?;
        if shared > self.key.len() {
            return Err(bad_page(
                self.name,
                "key shares more than the key before it",
            ));
        }
        let rest = self.varint()?;
        let suffix = self.bytes(rest)?;
        self.key.truncate(shared);
        self.key.extend_from_slice(suffix);
        let len = self.varint()?;
        let value = self.bytes(len)?;
        Ok(Some((&self.key, value)))
    }
}

fn bad_page(name: &str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Corrupt {
        what: format!("{name} page"),
        reason: reason.into(),
    }
}

/// The records of a sled tree in key order from `from`, each found by a lookup of its own.
///
/// Used for every long read instead of one sled iterator: sled 0.34 counts an access to a
/// node in its cache only once 64 accesses have queued in that node's shard (of 256), and
/// an iterator touches each node once, so a tree read through by one iterator stayed
/// decoded in memory whatever the cache size (at a million files, the whole manifest). A
/// lookup per record touches a node once per record it holds, so the queues fill and
/// evict behind the reader.
pub(super) struct Records {
    /// None once finished or failed.
    tree: Option<sled::Tree>,
    next: Bound<Vec<u8>>,
}

impl Records {
    pub(super) fn from(tree: &sled::Tree, from: Bound<Vec<u8>>) -> Records {
        Records {
            tree: Some(tree.clone()),
            next: from,
        }
    }

    pub(super) fn all(tree: &sled::Tree) -> Records {
        Records::from(tree, Bound::Unbounded)
    }
}

impl Iterator for Records {
    type Item = sled::Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        let tree = self.tree.as_ref()?;
        let from = std::mem::replace(&mut self.next, Bound::Unbounded);
        let found = tree.range((from, Bound::Unbounded)).next();
        match &found {
            Some(Ok((k, _))) => self.next = Bound::Excluded(k.to_vec()),
            _ => self.tree = None,
        }
        found
    }
}

/// Records in key order from a start key, read a page at a time.
///
/// Each key comes at most once and in increasing order even while another thread writes
/// (a scan's walkers read folders while its writer applies batches): a page split after it
/// was read is met again further on, so records up to the last key already read are
/// skipped.
pub(super) struct Entries {
    pages: Option<Records>,
    page: Vec<(Vec<u8>, Vec<u8>)>,
    at: usize,
    start: Vec<u8>,
    /// The greatest key read so far (the last of the previous page).
    seen: Option<Vec<u8>>,
    name: &'static str,
    error: Option<ManifestError>,
}

impl Entries {
    fn failed(e: ManifestError, name: &'static str) -> Entries {
        Entries {
            pages: None,
            page: Vec::new(),
            at: 0,
            start: Vec::new(),
            seen: None,
            name,
            error: Some(e),
        }
    }
}

impl Iterator for Entries {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            self.pages = None;
            return Some(Err(e));
        }
        loop {
            if self.at < self.page.len() {
                let kv = std::mem::take(&mut self.page[self.at]);
                self.at += 1;
                return Some(Ok(kv));
            }
            let pages = self.pages.as_mut()?;
            let (_, bytes) = match pages.next()? {
                Ok(p) => p,
                Err(e) => {
                    self.pages = None;
                    return Some(Err(e.into()));
                }
            };
            match decode_page(&bytes, self.name) {
                Ok(records) => self.page = records,
                Err(e) => {
                    self.pages = None;
                    return Some(Err(e));
                }
            }
            self.at = match &self.seen {
                Some(seen) => self.page.partition_point(|(k, _)| k <= seen),
                // Only the first page can hold keys before the start.
                None => self.page.partition_point(|(k, _)| *k < self.start),
            };
            if let Some((last, _)) = self.page.last() {
                if self.seen.as_ref().is_none_or(|s| last > s) {
                    self.seen = Some(last.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tree(max: usize) -> (tempfile::TempDir, PagedTree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, PagedTree::open(&db, "t", max).unwrap())
    }

    /// A small deterministic generator, so a failure replays.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn check_against(t: &PagedTree, model: &BTreeMap<Vec<u8>, Vec<u8>>, rng: &mut Rng) {
        let all: Vec<_> = t.iter().map(Result::unwrap).collect();
        let expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(all, expected);
        // Pages are keyed by their first record and never empty.
        for kv in t.pages().iter() {
            let (first, page) = kv.unwrap();
            let records = decode_page(&page, "t").unwrap();
            assert_eq!(records[0].0, first.to_vec());
        }
        for _ in 0..20 {
            let probe = format!("k{:04}", rng.below(3000)).into_bytes();
            assert_eq!(t.get(&probe).unwrap(), model.get(&probe).cloned());
            let from: Vec<_> = t.range_from(&probe).take(5).map(Result::unwrap).collect();
            let want: Vec<_> = model
                .range(probe.clone()..)
                .take(5)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(from, want, "range from {}", String::from_utf8_lossy(&probe));
        }
    }

    #[test]
    fn random_batches_match_a_sorted_map() {
        for max in [64, 300, 4096] {
            let (_dir, t) = tree(max);
            let mut model = BTreeMap::new();
            let mut rng = Rng(0x9e3779b97f4a7c15 ^ max as u64);
            for round in 0..60 {
                let mut writes = Vec::new();
                for _ in 0..rng.below(80) + 1 {
                    let key = format!("k{:04}", rng.below(3000)).into_bytes();
                    if rng.below(4) == 0 {
                        writes.push((key, None));
                    } else {
                        let len = rng.below(if round % 7 == 0 { 500 } else { 40 }) as usize;
                        writes.push((key, Some(vec![round as u8; len])));
                    }
                }
                for (k, v) in &writes {
                    match v {
                        Some(v) => model.insert(k.clone(), v.clone()),
                        None => model.remove(k),
                    };
                }
                t.apply(writes).unwrap();
                check_against(&t, &model, &mut rng);
            }
            for kv in t.pages().iter() {
                let (_, page) = kv.unwrap();
                let records = decode_page(&page, "t").unwrap();
                assert!(
                    page.len() <= max + 8 || records.len() == 1,
                    "a page of {} bytes over {max}",
                    page.len()
                );
            }
        }
    }

    #[test]
    fn records_are_read_in_order_once_each_while_others_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        for i in (0u32..100).step_by(2) {
            tree.insert(i.to_be_bytes(), &[1]).unwrap();
        }
        let mut got = Vec::new();
        for kv in Records::from(&tree, Bound::Included(10u32.to_be_bytes().to_vec())) {
            let k = u32::from_be_bytes(kv.unwrap().0.as_ref().try_into().unwrap());
            got.push(k);
            // Written behind the reader: never seen. Ahead of it: seen once, in order.
            tree.insert((k - 1).to_be_bytes(), &[2]).unwrap();
            if k < 50 {
                tree.insert((k + 1).to_be_bytes(), &[2]).unwrap();
            }
        }
        let want: Vec<u32> = (10..=50).chain((52..100).step_by(2)).collect();
        assert_eq!(got, want);
        assert!(Records::all(&db.open_tree("empty").unwrap())
            .next()
            .is_none());
    }

    #[test]
    fn a_page_split_while_it_is_read_yields_no_key_twice_and_loses_none() {
        let (_dir, t) = tree(400);
        let key = |i: u32| format!("k{i:05}").into_bytes();
        t.apply((0..200).map(|i| (key(i * 10), Some(vec![1; 20]))))
            .unwrap();
        let mut it = t.iter();
        let mut read = vec![it.next().unwrap().unwrap().0];
        // Between two reads, the page being read and the ones after it split.
        t.apply((0..2000).map(|i| (key(i), Some(vec![2; 20]))))
            .unwrap();
        read.extend(it.map(|kv| kv.unwrap().0));
        assert!(read.windows(2).all(|w| w[0] < w[1]), "in order, once each");
        for i in 0..200 {
            assert!(
                read.contains(&key(i * 10)),
                "{i}: a key present throughout is read"
            );
        }
    }

    #[test]
    fn prefixes_and_empty_trees() {
        let (_dir, t) = tree(100);
        assert!(t.is_empty());
        assert_eq!(t.get(b"a").unwrap(), None);
        assert_eq!(t.iter().count(), 0);
        let writes = (0..50u8).map(|i| {
            let dir = if i % 2 == 0 { "a/" } else { "b/" };
            (format!("{dir}{i:02}").into_bytes(), Some(vec![i]))
        });
        t.apply(writes).unwrap();
        let under_a: Vec<_> = t.scan_prefix(b"a/").map(|kv| kv.unwrap().1[0]).collect();
        assert_eq!(under_a, (0..50).step_by(2).collect::<Vec<u8>>());
        assert!(t.pages().len() > 3, "pages split");
        // Removing everything leaves no page behind.
        t.apply(t.iter().map(|kv| (kv.unwrap().0, None)).collect::<Vec<_>>())
            .unwrap();
        assert!(t.is_empty());
    }

    #[test]
    fn shared_key_prefixes_are_stored_once() {
        let records: Vec<_> = (0..100)
            .map(|i| {
                (
                    format!("2024/holiday in the mountains/IMG_{i:04}.jpg").into_bytes(),
                    vec![1],
                )
            })
            .collect();
        let page = encode_page(&records);
        assert!(page.len() < 100 * 12, "page is {} bytes", page.len());
        assert_eq!(decode_page(&page, "t").unwrap(), records);
    }

    #[test]
    fn a_damaged_page_is_an_error_not_a_panic() {
        let records = vec![(b"abc".to_vec(), b"value".to_vec())];
        let page = encode_page(&records);
        for cut in 0..page.len() {
            assert!(
                decode_page(&page[..cut], "t").is_err() || cut == 1,
                "cut {cut}"
            );
        }
        let mut bad = page.clone();
        bad[1] = 9; // shares more than the (empty) key before it
        assert!(decode_page(&bad, "t").is_err());
    }
}
