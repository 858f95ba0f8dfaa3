//! `Index::verify`: the whole-file checks that opening leaves out. Opening reads the manifest,
//! the file sizes, the graph's header, levels and upper lists, the items' catalogue and the
//! log, so that it costs the same at any size; this reads everything else once.

use serde::Serialize;

use super::{Engine, Index};
use crate::error::{Error, Result};
use crate::index::items::Items;
use crate::index::rows::{Mapped, Rows};
use crate::index::vector_index::VectorIndex;

/// What [`Index::verify`] read.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// Data files whose sha256 matched the manifest.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Slots in the data files (items whose line, id, label and vector were checked).
    pub slots: usize,
    /// Graph nodes whose level-0 links were checked (0 without an HNSW graph).
    pub graph_nodes: usize,
}

impl Verified {
    /// One line for people.
    pub fn summary(&self) -> String {
        format!(
            "ok: {} data files ({:.1} MB) match their checksums; {} items and {} graph nodes checked",
            self.files,
            self.bytes as f64 / 1e6,
            self.slots,
            self.graph_nodes
        )
    }
}

impl Index {
    /// Check this index's data files whole, beyond what opening reads: every file's sha256
    /// against the manifest, every stored vector finite, every line of the items file parsed
    /// and agreeing with the catalogue (id and label), every level-0 link list of the graph
    /// (count and links), and the vectors in the graph's blocks equal to the vectors file.
    /// The first problem found is an error naming its file.
    pub fn verify(&self) -> Result<Verified> {
        let (dir, m) = (&self.dir, &self.manifest);
        let f = &m.files;
        let n = m.slot_count;
        let stored = Rows::check_vectors(dir, &f.vectors, n, m.dim)?;
        let rest = [Some(&f.items), Some(&f.tombstones), f.graph.as_ref()];
        let rest = rest.into_iter().chain([f.catalog.as_ref()]).flatten();
        let mut bytes = f.vectors.bytes;
        let mut files = 1;
        for e in rest {
            let mapped = Mapped::open_checked(&dir.join(&e.name), e)?;
            mapped.release();
            files += 1;
            bytes += e.bytes;
        }
        let (ids, items) = Items::map(dir, &f.items)?;
        let cat = dir.join(f.catalog.as_ref().unwrap_or(&f.items).name.as_str());
        if ids[..] != self.ids[..n] {
            return Err(Error::corrupt(
                &cat,
                format!("the ids differ from those of {}", f.items.name),
            ));
        }
        if let Some(s) = (0..n).find(|&s| items.label(s) != self.items.label(s)) {
            return Err(Error::corrupt(
                &cat,
                format!("slot {s}'s label differs from that in {}", f.items.name),
            ));
        }
        let mut graph_nodes = 0;
        if let (Engine::Hnsw(g), Some(ge)) = (&self.engine, &f.graph) {
            let gpath = dir.join(&ge.name);
            g.check_level0()
                .map_err(|(_, msg)| Error::corrupt(&gpath, msg))?;
            graph_nodes = g.len();
            if !g.is_quantized() {
                let e = self.engine.get();
                if let Some(s) = (0..n).find(|&s| e.vector(s) != Some(stored.row(s))) {
                    return Err(Error::corrupt(
                        &gpath,
                        format!("node {s}'s vector differs from {}", f.vectors.name),
                    ));
                }
                stored.release();
            }
        }
        Ok(Verified {
            files,
            bytes,
            slots: n,
            graph_nodes,
        })
    }
}
