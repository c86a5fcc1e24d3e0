//! The tar form of a backup: plain ustar/GNU entries (sizes past 8 GiB in GNU's binary form,
//! which GNU tar and the `tar` crate read), names that are either `berth.db`, `backup.json`
//! or a blob path, never anything a restore would have to sanitise.

use crate::oci::{Algorithm, Digest};

const BLOCK: u64 = 512;

/// The path of a blob inside a backup.
pub fn blob_path(d: &Digest) -> String {
    format!(
        "blobs/{}/{}/{}",
        d.algorithm().as_str(),
        &d.hex()[..2],
        d.hex()
    )
}

/// The digest a blob path names, if it is exactly one.
pub fn parse_blob_path(path: &str) -> Option<Digest> {
    let mut parts = path.split('/');
    let (Some("blobs"), Some(alg), Some(shard), Some(hex), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if ![Algorithm::Sha256.as_str(), Algorithm::Sha512.as_str()].contains(&alg)
        || hex.get(..2) != Some(shard)
    {
        return None;
    }
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

/// The 512-byte header of a regular file entry, mode 0600.
pub fn header(path: &str, size: u64, mtime: i64) -> std::io::Result<[u8; 512]> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(mtime.max(0) as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

/// Zeros that bring an entry of `size` bytes to a whole block.
pub fn padding(size: u64) -> Vec<u8> {
    vec![0u8; ((BLOCK - size % BLOCK) % BLOCK) as usize]
}

/// The end of the archive: two empty blocks.
pub fn end() -> [u8; 1024] {
    [0u8; 1024]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn entries_read_back_with_the_tar_crate() {
        let d = Digest::sha256_of(b"hello");
        let mut out = Vec::new();
        out.extend_from_slice(&header(&blob_path(&d), 5, 1).unwrap());
        out.extend_from_slice(b"hello");
        out.extend_from_slice(&padding(5));
        out.extend_from_slice(&header("berth.db", 0, 1).unwrap());
        out.extend_from_slice(&end());
        let mut archive = tar::Archive::new(&out[..]);
        let mut names = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().to_string();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            names.push((name, body));
        }
        assert_eq!(names[0].0, blob_path(&d));
        assert_eq!(names[0].1, b"hello");
        assert_eq!(names[1], ("berth.db".to_string(), vec![]));
        assert_eq!(parse_blob_path(&names[0].0), Some(d.clone()));
    }

    #[test]
    fn only_exact_blob_paths_parse() {
        let d = Digest::sha256_of(b"x");
        let hex = d.hex();
        assert!(parse_blob_path(&format!("blobs/sha256/{}/{hex}", &hex[..2])).is_some());
        for bad in [
            format!("blobs/sha256/zz/{hex}"),
            format!("blobs/sha256/{}/{hex}/x", &hex[..2]),
            format!("../blobs/sha256/{}/{hex}", &hex[..2]),
            format!("blobs/md5/{}/{hex}", &hex[..2]),
            "blobs/sha256/ab/ab".to_string(),
            "blobs/sha256/a\u{20ac}/a\u{20ac}".to_string(),
        ] {
            assert_eq!(parse_blob_path(&bad), None, "{bad}");
        }
    }
}
