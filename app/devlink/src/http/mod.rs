//! Artifacts over HTTP/1.1, the device's side: [`client`], the resumable download
//! ([`download_resumable`]: writes `DEST.part`, resumes with `Range` and `If-Range`, checks length
//! and SHA-256 before renaming into place), and [`range`], the pure rules for `Range` headers and
//! request paths that the client and `convoy`'s artifact server share.
//!
//! Deliberately not here: the servers (they live in `convoy::link::http`), TLS, redirects,
//! proxies and compression (artifacts are authenticated by the signed manifest's hashes).

pub mod client;
pub mod range;

pub use client::{
    DownloadReport, FetchError, Progress, RetryPolicy, download_resumable, download_with_retries,
};
