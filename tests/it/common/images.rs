//! Image fixtures on disk for real clients: an OCI image layout (`oci:` in skopeo) built from
//! real gzip tar layers, and readers for the layouts clients write back (`oci:` and `dir:`),
//! which check every blob file against its digest.

use std::fs;
use std::path::Path;
use std::process::Command;

use berth::oci::Digest;
use serde_json::{Value, json};

use super::cmd::{run, run_to_file};
use super::prng::Prng;
use super::{OCI_INDEX, OCI_MANIFEST};

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What an image is made of, by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<Digest>,
    /// The manifest document.
    pub json: Value,
}

/// Write an OCI image layout at `dir` with one image tagged `tag`: a config and two gzip tar
/// layers whose files depend on `seed`, so different seeds give different images.
pub fn write_oci_layout(dir: &Path, tag: &str, seed: u64) -> Image {
    let scratch = tempfile::tempdir().unwrap();
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).unwrap();
    let mut prng = Prng::new(seed);

    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for k in 0..2 {
        let src = scratch.path().join(format!("layer{k}"));
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::create_dir_all(src.join("data")).unwrap();
        fs::write(
            src.join("etc").join(format!("e2e-{k}.txt")),
            format!("layer {k} of image seed {seed}\n"),
        )
        .unwrap();
        fs::write(
            src.join("data").join(format!("{k}.bin")),
            prng.bytes(96 * 1024),
        )
        .unwrap();
        let tar = scratch.path().join(format!("layer{k}.tar"));
        run(Command::new(super::require_tool("tar"))
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .args(["--mtime=@0", "-C"])
            .arg(&src)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        diff_ids.push(Digest::sha256_of(&fs::read(&tar).unwrap()));
        let gz = scratch.path().join(format!("layer{k}.tar.gz"));
        run_to_file(
            Command::new(super::require_tool("gzip"))
                .args(["-n", "-c"])
                .arg(&tar),
            &gz,
        );
        let bytes = fs::read(&gz).unwrap();
        layers.push(store(&blobs, &bytes));
    }

    let config = serde_json::to_vec(&json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [format!("E2E_SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "berth e2e layer 0"}, {"created_by": "berth e2e layer 1"}],
    }))
    .unwrap();
    let config_desc = store(&blobs, &config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_desc.0.to_string(), "size": config_desc.1},
        "layers": layers.iter().map(|(d, size)| json!({
            "mediaType": OCI_LAYER_GZIP, "digest": d.to_string(), "size": size,
        })).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    let (manifest_digest, manifest_size) = store(&blobs, &manifest_bytes);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest_size,
            "annotations": {REF_NAME: tag},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    Image {
        manifest: manifest_digest,
        config: config_desc.0,
        layers: layers.into_iter().map(|(d, _)| d).collect(),
        json: manifest,
    }
}

fn store(blobs: &Path, bytes: &[u8]) -> (Digest, usize) {
    let d = Digest::sha256_of(bytes);
    fs::write(blobs.join(d.hex()), bytes).unwrap();
    (d, bytes.len())
}

/// The image tagged `tag` in the OCI image layout at `dir`, every blob checked.
pub fn read_oci_layout(dir: &Path, tag: &str) -> Image {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["annotations"][REF_NAME] == tag))
        .unwrap_or_else(|| panic!("no manifest tagged {tag} in {}: {index}", dir.display()));
    let manifest = digest(&entry["digest"]);
    let blob = |d: &Digest| dir.join("blobs").join("sha256").join(d.hex());
    let bytes = checked(&blob(&manifest), &manifest);
    image_from(manifest, &bytes, |d| {
        checked(&blob(d), d);
    })
}

/// The image in a skopeo `dir:` folder (`manifest.json`, blobs named by hex), every blob
/// checked.
pub fn read_dir_image(dir: &Path) -> Image {
    let bytes = fs::read(dir.join("manifest.json")).unwrap();
    image_from(Digest::sha256_of(&bytes), &bytes, |d| {
        checked(&dir.join(d.hex()), d);
    })
}

fn image_from(manifest: Digest, bytes: &[u8], check: impl Fn(&Digest)) -> Image {
    let json: Value = serde_json::from_slice(bytes).unwrap();
    let config = digest(&json["config"]["digest"]);
    check(&config);
    let layers: Vec<Digest> = json["layers"]
        .as_array()
        .expect("an image manifest has layers")
        .iter()
        .map(|l| digest(&l["digest"]))
        .collect();
    for l in &layers {
        check(l);
    }
    Image {
        manifest,
        config,
        layers,
        json,
    }
}

fn digest(v: &Value) -> Digest {
    Digest::parse(v.as_str().unwrap_or_else(|| panic!("not a digest: {v}")))
        .unwrap_or_else(|e| panic!("not a digest: {v}: {e}"))
}

/// The bytes of a blob file, which must hash to `d`.
#[track_caller]
fn checked(path: &Path, d: &Digest) -> Vec<u8> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("blob {d} at {}: {e}", path.display()));
    assert_eq!(
        &Digest::sha256_of(&bytes),
        d,
        "{} does not hash to its digest",
        path.display()
    );
    bytes
}

/// Write an OCI image layout at `dir` whose tag `tag` is an image index of one image per
/// platform (`os/arch`), each from its own seed. Returns the index digest and the images.
pub fn write_oci_index_layout(
    dir: &Path,
    tag: &str,
    platforms: &[(&str, u64)],
) -> (Digest, Vec<Image>) {
    let blobs = dir.join("blobs").join("sha256");
    let mut images = Vec::new();
    let mut entries = Vec::new();
    for (platform, seed) in platforms {
        let image = write_oci_layout(dir, "unused", *seed);
        let (os, arch) = platform.split_once('/').unwrap();
        let size = fs::metadata(blobs.join(image.manifest.hex()))
            .unwrap()
            .len();
        entries.push(json!({
            "mediaType": OCI_MANIFEST,
            "digest": image.manifest.to_string(),
            "size": size,
            "platform": {"os": os, "architecture": arch},
        }));
        images.push(image);
    }
    let index = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    }))
    .unwrap();
    let (digest, size) = store(&blobs, &index);
    let top = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_INDEX,
            "digest": digest.to_string(),
            "size": size,
            "annotations": {REF_NAME: tag},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    (digest, images)
}
