//! The contract of a blob store (`berth::storage::BlobStore`): what every implementation
//! must do, run here against each of them. Today that is the filesystem store, under both
//! durability settings; an object-store implementation gets a `#[tokio::test]` of its own
//! calling `contract`.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::StreamExt as _;

use berth::oci::{Algorithm, Digest, UploadId};
use berth::storage::{BlobStore, FsStore, Progress, Staged, Staging, StoreError, Sync};

#[tokio::test]
async fn filesystem_store_keeps_the_contract() {
    for sync in [Sync::Always, Sync::Never] {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(&dir.path().join("blobs"), sync).unwrap();
        let staging = Staging::open(&dir.path().join("uploads"), sync).unwrap();
        contract(&store, &staging).await;
        // Nothing is left in staging: every commit consumed its staged file.
        assert!(staging.list().await.unwrap().is_empty());
    }
}

/// Every point of the contract, against an empty store.
pub async fn contract(store: &dyn BlobStore, staging: &Staging) {
    let absent = Digest::sha256_of(b"never stored");
    assert!(matches!(
        store.stat(&absent).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.open(&absent, 0, 0).await.map(drop),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete(&absent).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.list(None, 10).await.unwrap().is_empty());

    // Commit, then stat and read back the whole blob and ranges of it.
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (staged, big) = stage(staging, &body).await;
    store.commit(staged, &big).await.unwrap();
    assert_eq!(store.stat(&big).await.unwrap(), body.len() as u64);
    assert_eq!(read(store, &big, 0, body.len() as u64).await, body);
    assert_eq!(read(store, &big, 10, 5).await, &body[10..15]);
    let tail = body.len() as u64 - 7;
    assert_eq!(read(store, &big, tail, 7).await, &body[tail as usize..]);
    assert!(read(store, &big, 0, 0).await.is_empty());
    // A range past the end is an error, before or instead of a short body.
    let past = body.len() as u64;
    assert!(read_result(store, &big, past - 1, 2).await.is_err());

    // Committing the same digest again succeeds, consumes the staged file, keeps one blob.
    let (again, same) = stage(staging, &body).await;
    assert_eq!(same, big);
    store.commit(again, &big).await.unwrap();
    assert_eq!(read(store, &big, 0, body.len() as u64).await, body);
    assert_eq!(store.list(None, 10).await.unwrap().len(), 1);

    // An empty blob is a blob.
    let (staged, empty) = stage(staging, b"").await;
    store.commit(staged, &empty).await.unwrap();
    assert_eq!(store.stat(&empty).await.unwrap(), 0);
    assert!(read(store, &empty, 0, 0).await.is_empty());

    // Listing: digest order, paged by `after`, sizes and times included.
    let mut all = vec![big.clone(), empty.clone()];
    for i in 0..40u32 {
        let (staged, d) = stage(staging, format!("blob {i}").as_bytes()).await;
        store.commit(staged, &d).await.unwrap();
        all.push(d);
    }
    all.sort();
    let mut listed = Vec::new();
    let mut after: Option<Digest> = None;
    loop {
        let page = store.list(after.as_ref(), 7).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = Some(last.digest.clone());
        listed.extend(page);
    }
    let digests: Vec<Digest> = listed.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(digests, all);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for l in &listed {
        assert_eq!(l.size, store.stat(&l.digest).await.unwrap());
        assert!((now - 120..=now + 120).contains(&l.modified), "{l:?}");
    }
    // `after` need not name a stored blob.
    let from_absent = store.list(Some(&absent), 1000).await.unwrap();
    assert_eq!(
        from_absent.len(),
        all.iter().filter(|d| **d > absent).count()
    );

    // Delete frees the blob's bytes once; a reader that opened it first still gets them.
    let open_before = store.open(&big, 0, body.len() as u64).await.unwrap();
    assert_eq!(store.delete(&big).await.unwrap(), body.len() as u64);
    assert!(matches!(store.stat(&big).await, Err(StoreError::NotFound)));
    assert!(matches!(
        store.open(&big, 0, 1).await.map(drop),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete(&big).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(collect(open_before).await.unwrap(), body);
    let listed = store.list(None, 1000).await.unwrap();
    assert_eq!(listed.len(), all.len() - 1);
    assert!(listed.iter().all(|l| l.digest != big));

    // A deleted digest can be stored again.
    let (staged, d) = stage(staging, &body).await;
    store.commit(staged, &d).await.unwrap();
    assert_eq!(read(store, &big, 0, body.len() as u64).await, body);
}

/// Write `bytes` as a new upload and hand it over as a staged file.
async fn stage(staging: &Staging, bytes: &[u8]) -> (Staged, Digest) {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).unwrap();
    let id = UploadId::from_random(raw);
    staging.create(&id).await.unwrap();
    // Several frames, as a request body arrives.
    let frames: Vec<Result<Bytes, Infallible>> = bytes
        .chunks(100_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let (progress, result) = staging
        .append(
            &id,
            Progress::new(Algorithm::Sha256),
            futures_util::stream::iter(frames),
        )
        .await;
    result.unwrap();
    let appended = progress.unwrap();
    assert_eq!(appended.file_len, bytes.len() as u64);
    let progress = appended.progress;
    assert_eq!(progress.len, bytes.len() as u64);
    let digest = progress.hasher.finish();
    assert_eq!(digest, Digest::sha256_of(bytes));
    (staging.staged(&id), digest)
}

async fn read(store: &dyn BlobStore, d: &Digest, start: u64, len: u64) -> Vec<u8> {
    read_result(store, d, start, len).await.unwrap()
}

async fn read_result(
    store: &dyn BlobStore,
    d: &Digest,
    start: u64,
    len: u64,
) -> Result<Vec<u8>, String> {
    let stream = store.open(d, start, len).await.map_err(|e| e.to_string())?;
    let bytes = collect(stream).await.map_err(|e| e.to_string())?;
    if bytes.len() as u64 != len {
        return Err(format!("{} bytes, asked for {len}", bytes.len()));
    }
    Ok(bytes)
}

async fn collect(mut s: berth::storage::BlobStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}
