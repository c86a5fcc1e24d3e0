//! Manifest parsing: OCI image manifests and indexes, Docker schema2 manifests and manifest
//! lists, and OCI artifacts. Parsing yields what the registry must check and record: the blobs
//! and child manifests a manifest references, its subject and artifact type.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest manifest berth accepts, as in distribution.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Layers a registry never holds: their bytes live at `urls` elsewhere.
const FOREIGN_LAYER_TYPES: &[&str] = &[
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Image,
    Index,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: Kind,
    /// Config and layer blobs that must be present in the repository.
    pub blobs: Vec<Digest>,
    /// Manifests an index lists, which must be present in the repository.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    /// What the referrers API reports: `artifactType`, else the config media type.
    pub artifact_type: Option<String>,
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("Content-Type {header:?} does not match the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("schemaVersion must be 2")]
    SchemaVersion,
    #[error("{0}")]
    Shape(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: Digest,
    size: i64,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<Map<String, Value>>,
}

/// Strip parameters (`; charset=utf-8`) and surrounding blanks from a Content-Type.
fn bare_media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// Parse and validate a manifest body. `content_type` is the request's Content-Type, if any.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, ManifestError> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    let header = content_type.map(bare_media_type).filter(|s| !s.is_empty());
    let media_type = match (&raw.media_type, header) {
        (Some(body), Some(header)) if body != header => {
            return Err(ManifestError::MediaTypeMismatch {
                header: header.to_string(),
                body: body.clone(),
            });
        }
        (Some(body), _) => body.clone(),
        (None, Some(header)) => header.to_string(),
        // Neither says: read the shape, as clients that omit both expect.
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    let kind = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => Kind::Image,
        OCI_INDEX | DOCKER_LIST => Kind::Index,
        other => return Err(ManifestError::UnsupportedMediaType(other.to_string())),
    };
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let check = |d: &Descriptor, what: &str| -> Result<(), ManifestError> {
        if d.size < 0 {
            return Err(ManifestError::Shape(format!("{what} has a negative size")));
        }
        if d.media_type.as_deref().is_none_or(str::is_empty) {
            return Err(ManifestError::Shape(format!("{what} has no mediaType")));
        }
        Ok(())
    };
    // De-duplicated in linear time: a 4 MiB manifest can list tens of thousands of layers.
    let mut seen = std::collections::HashSet::new();
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let mut artifact_type = raw.artifact_type.clone();
    match kind {
        Kind::Image => {
            if raw.manifests.is_some() {
                return Err(ManifestError::Shape(
                    "an image manifest has no manifests list".into(),
                ));
            }
            let config = raw
                .config
                .as_ref()
                .ok_or_else(|| ManifestError::Shape("config descriptor is missing".into()))?;
            check(config, "config")?;
            let layers = raw
                .layers
                .as_ref()
                .ok_or_else(|| ManifestError::Shape("layers are missing".into()))?;
            seen.insert(&config.digest);
            blobs.push(config.digest.clone());
            for layer in layers {
                check(layer, "layer")?;
                let foreign = layer.urls.as_ref().is_some_and(|u| !u.is_empty())
                    || FOREIGN_LAYER_TYPES.contains(&layer.media_type.as_deref().unwrap_or(""));
                if !foreign && seen.insert(&layer.digest) {
                    blobs.push(layer.digest.clone());
                }
            }
            if artifact_type.is_none() {
                artifact_type = config.media_type.clone();
            }
        }
        Kind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(ManifestError::Shape(
                    "an index has no config or layers".into(),
                ));
            }
            let manifests = raw
                .manifests
                .as_ref()
                .ok_or_else(|| ManifestError::Shape("manifests list is missing".into()))?;
            for m in manifests {
                check(m, "manifest descriptor")?;
                if seen.insert(&m.digest) {
                    children.push(m.digest.clone());
                }
            }
        }
    }
    if let Some(s) = &raw.subject {
        check(s, "subject")?;
    }
    Ok(ParsedManifest {
        media_type,
        kind,
        blobs,
        children,
        subject: raw.subject.map(|s| s.digest),
        artifact_type,
        annotations: raw.annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(media: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":3}},
                      {{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":3}}]}}"#
        )
    }

    #[test]
    fn image_manifest_lists_its_blobs_once() {
        let m = parse(Some(OCI_MANIFEST), image(OCI_MANIFEST).as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(
            m.blobs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [D1, D2]
        );
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let d = parse(None, image(DOCKER_MANIFEST).as_bytes()).unwrap();
        assert_eq!(d.media_type, DOCKER_MANIFEST);
    }

    #[test]
    fn content_type_must_agree_with_body() {
        let err = parse(Some(DOCKER_MANIFEST), image(OCI_MANIFEST).as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::MediaTypeMismatch { .. }));
        // Parameters on the header are ignored.
        assert!(
            parse(
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
                image(OCI_MANIFEST).as_bytes()
            )
            .is_ok()
        );
    }

    #[test]
    fn index_lists_children_and_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","artifactType":"x/y",
            "manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":9}}],
            "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":9}},
            "annotations":{{"a":"b"}}}}"#
        );
        let m = parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.children[0].to_string(), D1);
        assert_eq!(m.subject.unwrap().to_string(), D2);
        assert_eq!(m.artifact_type.as_deref(), Some("x/y"));
        assert_eq!(m.annotations.unwrap()["a"], "b");
    }

    #[test]
    fn rejects_bad_shapes() {
        let cases = [
            "not json".to_string(),
            "[]".to_string(),
            format!(r#"{{"schemaVersion":1,"mediaType":"{OCI_MANIFEST}"}}"#),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#),
            r#"{"schemaVersion":2,"mediaType":"text/plain"}"#.to_string(),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"a/b","digest":"sha256:zz","size":1}},"layers":[]}}"#
            ),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"a/b","digest":"{D1}","size":-1}},"layers":[]}}"#
            ),
            "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v1+prettyjws\"}".to_string(),
        ];
        for c in cases {
            assert!(parse(None, c.as_bytes()).is_err(), "{c}");
        }
    }

    #[test]
    fn foreign_layers_are_not_required() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D2}","size":3,"urls":["https://example.com/x"]}}]}}"#
        );
        assert_eq!(parse(None, body.as_bytes()).unwrap().blobs.len(), 1);
    }
}
