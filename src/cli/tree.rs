//! Drawing a folder tree the way `tree` does, natively (no `tree` command, so it works on
//! Windows too): a root line, then `├── `, `│   ` and `└── ` guides, a bracketed label and
//! the name of each entry, children in name order.

use std::collections::BTreeMap;
use std::io::Write;

/// One entry: its label (shown in brackets, right-aligned) and its children by name.
#[derive(Default)]
pub struct Node {
    pub label: String,
    pub children: BTreeMap<Vec<u8>, Node>,
}

impl Node {
    /// The node at `path` (names from this one down), created with empty labels as needed.
    pub fn at(&mut self, path: &[&[u8]]) -> &mut Node {
        let mut n = self;
        for name in path {
            n = n.children.entry(name.to_vec()).or_default();
        }
        n
    }
}

/// Width inside the brackets: `[     2021-06-15]` as lomo-backup prints it.
const LABEL_WIDTH: usize = 15;

/// Writes `root` as a tree under the line `title`.
pub fn print(out: &mut dyn Write, title: &str, root: &Node) -> std::io::Result<()> {
    writeln!(out, "{title}")?;
    children(out, root, "")
}

fn children(out: &mut dyn Write, node: &Node, indent: &str) -> std::io::Result<()> {
    let n = node.children.len();
    for (i, (name, child)) in node.children.iter().enumerate() {
        let last = i + 1 == n;
        writeln!(
            out,
            "{indent}{}[{:>LABEL_WIDTH$}]  {}",
            if last { "└── " } else { "├── " },
            child.label,
            String::from_utf8_lossy(name)
        )?;
        let deeper = format!("{indent}{}", if last { "    " } else { "│   " });
        children(out, child, &deeper)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_guides_like_tree() {
        let mut root = Node::default();
        root.at(&[b"a"]).label = "2021-06-15".into();
        root.at(&[b"a", b"x"]).label = "2021-06-16".into();
        root.at(&[b"a", b"y"]).label = "2021-06-17".into();
        root.at(&[b"b"]).label = "2024-01-01".into();
        root.at(&[b"b", b"z"]).label = "2024-01-02".into();
        let mut out = Vec::new();
        print(&mut out, "/lib", &root).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "/lib\n\
             ├── [     2021-06-15]  a\n\
             │   ├── [     2021-06-16]  x\n\
             │   └── [     2021-06-17]  y\n\
             └── [     2024-01-01]  b\n\
             \x20   └── [     2024-01-02]  z\n"
        );
    }
}
