//! Pure OCI types: digests, names, tags, references and manifests.
//!
//! No I/O and no HTTP here. Everything above (`storage`, `db`, `core`, `registry`) relies on
//! these types having been validated when they were built.

pub mod digest;
pub mod manifest;
pub mod name;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use name::{Reference, RepoName, Tag, UploadId};
