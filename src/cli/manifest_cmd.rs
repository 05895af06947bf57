//! `lomob manifest export|import`: the portable copy of the manifest.

use super::args::ManifestCommand;
use super::Context;
use crate::exit;
use crate::manifest::{self, export};

pub fn run(ctx: &Context, cmd: ManifestCommand) -> anyhow::Result<u8> {
    let m = match cmd {
        ManifestCommand::Import { .. } => ctx.open_manifest_for_import()?,
        ManifestCommand::Export { .. } => ctx.open_manifest()?,
    };
    let (verb, file, counts) = match cmd {
        ManifestCommand::Export { file } => {
            let c = export::export_file(&m, &file, manifest::now())?;
            ("exported", file, c)
        }
        ManifestCommand::Import { file } => {
            let c = export::import_file(&m, &file)?;
            ("imported", file, c)
        }
    };
    if ctx.json {
        super::output::json(&counts)?;
    } else {
        println!(
            "{verb} {} roots, {} contents, {} files, {} images, {} placements, {} runs ({})",
            counts.roots,
            counts.contents,
            counts.files,
            counts.isos,
            counts.placements,
            counts.runs,
            file.display()
        );
    }
    Ok(exit::SUCCESS)
}
