//! Where each wanted content comes from, and how an image is read: the cheapest readable
//! copy (a staged copy, then a hot archive image, then a cold one that needs a thaw), and
//! for images only the byte ranges of the wanted files, neighbours merged.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use serde::Serialize;

use crate::manifest::{ContentId, Manifest, ManifestError};

/// Neighbouring files closer than this are read with one request.
pub const MERGE_GAP: u64 = 1 << 20;
/// A range longer than this (most of an image) is read with one streamed GET instead of
/// chunks: fewer requests, and servers that read a whole object for every ranged GET
/// read it once. `LOMOB_TEST_STREAM_OVER` (bytes) changes it, for tests.
pub fn stream_over() -> u64 {
    std::env::var("LOMOB_TEST_STREAM_OVER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4 * GET_CHUNK)
}
/// The most bytes one GET asks for: memory stays bounded, and a failed request costs
/// little to repeat.
pub const GET_CHUNK: u64 = 64 << 20;

/// One content to bring back, and the files (indices into the restore's list) that hold it.
#[derive(Clone, Debug)]
pub struct Group {
    pub content: ContentId,
    pub size: u64,
    pub sha256: [u8; 32],
    pub files: Vec<usize>,
}

/// What the plan may use of one site.
#[derive(Clone, Debug)]
pub struct SiteView {
    pub name: String,
    /// The archive needs a thaw before reads (Glacier, Deep Archive).
    pub cold: bool,
}

/// One wanted content inside an image.
#[derive(Clone, Debug)]
pub struct Member {
    pub group: usize,
    pub offset: u64,
    /// Its path inside the image, to check against the catalog.
    pub image_path: Vec<u8>,
}

/// An image to read from.
#[derive(Clone, Debug, Serialize)]
pub struct ImageJob {
    pub site: String,
    pub name: String,
    pub key: String,
    pub image_size: u64,
    pub cold: bool,
    #[serde(skip)]
    pub members: Vec<Member>,
    /// Byte ranges to read, in order.
    pub ranges: Vec<Range<u64>>,
    pub wanted_bytes: u64,
    pub download_bytes: u64,
    /// Why these ranges: one span over most of the image, or merged neighbours.
    pub why: String,
}

impl ImageJob {
    /// GET requests the ranges take.
    pub fn gets(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| match r.end - r.start {
                n if n > stream_over() => 1,
                n => n.div_ceil(GET_CHUNK).max(1),
            })
            .sum()
    }
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Groups of empty files: nothing to fetch.
    pub empty: Vec<usize>,
    /// (group, site, stage key).
    pub staged: Vec<(usize, String, String)>,
    pub images: Vec<ImageJob>,
    /// Groups with no copy on any site considered.
    pub missing: Vec<usize>,
}

/// An image that holds a group: site, image id, offset, path inside the image.
type Candidate = (String, u32, u64, Vec<u8>);

/// Picks a source for each group. `use_stage: false` plans from images only (a staged copy
/// that failed). Images are chosen hot before cold, then by how many wanted contents they
/// hold, so a restore touches (and thaws) as few images as it can.
pub fn plan(
    m: &Manifest,
    groups: &[Group],
    which: &[usize],
    sites: &[SiteView],
    use_stage: bool,
) -> Result<Plan, ManifestError> {
    let allowed: HashMap<&str, bool> = sites.iter().map(|s| (s.name.as_str(), s.cold)).collect();
    let mut staged: HashMap<ContentId, (String, String)> = HashMap::new();
    if use_stage {
        for (site, content, rec) in m.staged(None)? {
            if allowed.contains_key(site.as_str()) {
                staged.entry(content).or_insert((site, rec.key));
            }
        }
    }
    let isos: HashMap<u32, crate::manifest::IsoRecord> =
        m.isos()?.into_iter().map(|i| (i.id, i)).collect();
    let mut archived: HashMap<ContentId, Vec<(String, u32)>> = HashMap::new();
    for (site, content, rec) in m.archived(None)? {
        if allowed.contains_key(site.as_str()) {
            archived.entry(content).or_default().push((site, rec.iso));
        }
    }
    let mut plan = Plan::default();
    // Candidate images per group, and how many groups each image could serve.
    let mut candidates: Vec<Vec<Candidate>> = vec![Vec::new(); groups.len()];
    let mut serves: HashMap<(String, u32), usize> = HashMap::new();
    for &g in which {
        let group = &groups[g];
        if group.size == 0 {
            continue;
        }
        if staged.contains_key(&group.content) {
            continue;
        }
        let placements: HashMap<u32, crate::manifest::PlacementRecord> =
            m.placements_of(&group.content)?.into_iter().collect();
        for (site, iso) in archived.get(&group.content).into_iter().flatten() {
            let (Some(p), Some(rec)) = (placements.get(iso), isos.get(iso)) else {
                continue;
            };
            if !rec.uploads.iter().any(|u| &u.site == site) {
                continue;
            }
            candidates[g].push((site.clone(), *iso, p.offset, p.path.clone()));
            *serves.entry((site.clone(), *iso)).or_default() += 1;
        }
    }
    let mut jobs: BTreeMap<(bool, String, u32), Vec<Member>> = BTreeMap::new();
    for &g in which {
        let group = &groups[g];
        if group.size == 0 {
            plan.empty.push(g);
            continue;
        }
        if let Some((site, key)) = staged.get(&group.content) {
            plan.staged.push((g, site.clone(), key.clone()));
            continue;
        }
        let best = candidates[g].iter().min_by_key(|(site, iso, _, _)| {
            (
                allowed[site.as_str()],
                std::cmp::Reverse(serves[&(site.clone(), *iso)]),
                site.clone(),
                *iso,
            )
        });
        match best {
            Some((site, iso, offset, path)) => jobs
                .entry((allowed[site.as_str()], site.clone(), *iso))
                .or_default()
                .push(Member {
                    group: g,
                    offset: *offset,
                    image_path: path.clone(),
                }),
            None => plan.missing.push(g),
        }
    }
    for ((cold, site, iso), mut members) in jobs {
        let rec = &isos[&iso];
        let upload = rec
            .uploads
            .iter()
            .find(|u| u.site == site)
            .expect("chosen only with an upload on the site");
        members.sort_by_key(|m| m.offset);
        let spans: Vec<(u64, u64)> = members
            .iter()
            .map(|mb| (mb.offset, groups[mb.group].size))
            .collect();
        let (ranges, why) = ranges(&spans, rec.size);
        plan.images.push(ImageJob {
            site,
            name: rec.name.clone(),
            key: upload.key.clone(),
            image_size: rec.size,
            cold,
            wanted_bytes: spans.iter().map(|s| s.1).sum(),
            download_bytes: ranges.iter().map(|r| r.end - r.start).sum(),
            members,
            ranges,
            why,
        });
    }
    Ok(plan)
}

/// The ranges that read `spans` (offset, size; sorted) from an image of `image_size`
/// bytes: neighbours closer than [`MERGE_GAP`] merged; when most of the image is wanted,
/// one span from the first wanted byte to the last.
pub fn ranges(spans: &[(u64, u64)], image_size: u64) -> (Vec<Range<u64>>, String) {
    let wanted: u64 = spans.iter().map(|s| s.1).sum();
    let share = wanted
        .saturating_mul(100)
        .checked_div(image_size)
        .unwrap_or(100);
    let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
        return (Vec::new(), "nothing wanted".into());
    };
    if share >= 90 {
        return (
            std::iter::once(first.0..last.0 + last.1).collect(),
            format!("{share}% of the image is wanted: read in one span"),
        );
    }
    let mut out: Vec<Range<u64>> = Vec::new();
    for &(off, size) in spans {
        match out.last_mut() {
            Some(r) if off <= r.end + MERGE_GAP => r.end = r.end.max(off + size),
            _ => out.push(off..off + size),
        }
    }
    let why = format!(
        "{share}% of the image is wanted: {} range{}, neighbours within {} merged",
        out.len(),
        if out.len() == 1 { "" } else { "s" },
        lomob_backends::ByteSize(MERGE_GAP)
    );
    (out, why)
}

/// Splits a range into the GETs that read it.
pub fn chunks(r: &Range<u64>) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut s = r.start;
    while s < r.end {
        let e = (s + GET_CHUNK).min(r.end);
        out.push(s..e);
        s = e;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_merge_and_far_files_do_not() {
        let spans = [(4096, 100), (8192, 100), (100 << 20, 10)];
        let (r, why) = ranges(&spans, 1 << 30);
        assert_eq!(r, vec![4096..8292, (100 << 20)..((100 << 20) + 10)]);
        assert!(why.contains("2 ranges"), "{why}");
    }

    #[test]
    fn most_of_an_image_is_one_span() {
        let spans = [(2048, 500), (4096, 500)];
        let (r, why) = ranges(&spans, 1100);
        assert_eq!(r, vec![2048..4596]);
        assert!(why.contains("one span"), "{why}");
    }

    #[test]
    fn chunks_cover_the_range_exactly() {
        let r = 10..(GET_CHUNK * 2 + 20);
        let c = chunks(&r);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].start, 10);
        assert_eq!(c[2].end, r.end);
        assert!(c.windows(2).all(|w| w[0].end == w[1].start));
    }
}
