//! Which manifests of a repository can come in whole: pure.
//!
//! An image needs every blob it lists; an index needs every manifest it lists, each of which
//! must itself come in. The order puts children before the indexes that list them, so every
//! manifest is stored after what it references, as a push would.

use std::collections::HashMap;

use crate::oci::Digest;

/// Indexes of indexes nest this deep at most (real ones: one or two levels).
const MAX_DEPTH: usize = 16;

/// What a manifest references, or why it cannot be read.
pub type Parsed = Result<Refs, String>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refs {
    pub media_type: String,
    pub blobs: Vec<Digest>,
    pub children: Vec<Digest>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Importable manifests, children first.
    pub order: Vec<Digest>,
    /// Manifests left out, with the reason.
    pub skipped: HashMap<Digest, String>,
}

/// Decide for every manifest of `manifests` (in a stable order: `digests`). `blob_known`
/// says whether a blob's bytes can be had.
pub fn resolve(
    digests: &[Digest],
    manifests: &HashMap<Digest, Parsed>,
    blob_known: impl Fn(&Digest) -> bool,
) -> Resolved {
    let mut out = Resolved::default();
    let mut state: HashMap<Digest, State> = HashMap::new();
    for d in digests {
        visit(d, manifests, &blob_known, &mut state, &mut out, 0);
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Visiting,
    Done,
}

fn visit(
    d: &Digest,
    manifests: &HashMap<Digest, Parsed>,
    blob_known: &impl Fn(&Digest) -> bool,
    state: &mut HashMap<Digest, State>,
    out: &mut Resolved,
    depth: usize,
) {
    if state.contains_key(d) {
        // Done, or a cycle (impossible for real digests): either way nothing more to do.
        return;
    }
    state.insert(d.clone(), State::Visiting);
    let why = match manifests.get(d) {
        None => Some("the repository does not hold it".to_string()),
        Some(Err(why)) => Some(why.clone()),
        Some(Ok(refs)) => {
            let mut why = refs
                .blobs
                .iter()
                .find(|b| !blob_known(b))
                .map(|b| format!("its blob {b} is missing from the source"));
            if why.is_none() {
                for child in &refs.children {
                    if !manifests.contains_key(child) {
                        why = Some(format!(
                            "it lists {child}, which the repository does not hold"
                        ));
                        break;
                    }
                    if state.get(child) == Some(&State::Visiting) {
                        why = Some(format!("it lists itself through {child}"));
                        break;
                    }
                    if depth >= MAX_DEPTH {
                        why = Some(format!("indexes nest deeper than {MAX_DEPTH} levels"));
                        break;
                    }
                    visit(child, manifests, blob_known, state, out, depth + 1);
                    if let Some(child_why) = out.skipped.get(child) {
                        why = Some(format!("it lists {child}, which is left out: {child_why}"));
                        break;
                    }
                }
            }
            why
        }
    };
    match why {
        Some(why) => {
            out.skipped.insert(d.clone(), why);
        }
        None => out.order.push(d.clone()),
    }
    state.insert(d.clone(), State::Done);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    fn image(blobs: &[&str]) -> Parsed {
        Ok(Refs {
            media_type: "m".into(),
            blobs: blobs.iter().map(|b| d(b)).collect(),
            children: vec![],
        })
    }

    fn index(children: &[&str]) -> Parsed {
        Ok(Refs {
            media_type: "i".into(),
            blobs: vec![],
            children: children.iter().map(|c| d(c)).collect(),
        })
    }

    #[test]
    fn children_come_first_and_broken_ones_take_their_indexes_along() {
        let mut m = HashMap::new();
        m.insert(d("amd64"), image(&["l1", "c1"]));
        m.insert(d("arm64"), image(&["l2", "c2"]));
        m.insert(d("broken"), image(&["gone"]));
        m.insert(d("unreadable"), Err("schema1".to_string()));
        m.insert(d("multi"), index(&["amd64", "arm64"]));
        m.insert(d("half"), index(&["amd64", "broken"]));
        m.insert(d("dangling"), index(&["elsewhere"]));
        m.insert(d("outer"), index(&["multi"]));
        // Indexes first in the input: the order still puts children first.
        let digests: Vec<Digest> = [
            "outer",
            "multi",
            "half",
            "dangling",
            "amd64",
            "arm64",
            "broken",
            "unreadable",
        ]
        .iter()
        .map(|s| d(s))
        .collect();
        let r = resolve(&digests, &m, |b| *b != d("gone"));
        assert_eq!(
            r.order,
            vec![d("amd64"), d("arm64"), d("multi"), d("outer")]
        );
        let mut skipped: Vec<_> = r.skipped.keys().cloned().collect();
        skipped.sort();
        let mut want = vec![d("half"), d("dangling"), d("broken"), d("unreadable")];
        want.sort();
        assert_eq!(skipped, want);
        assert!(r.skipped[&d("broken")].contains("missing from the source"));
        assert!(r.skipped[&d("half")].contains("left out"));
        assert!(r.skipped[&d("dangling")].contains("which the repository does not hold"));
        assert_eq!(r.skipped[&d("unreadable")], "schema1");
    }
}
