//! Artifacts over HTTP/1.1 with range requests: a server the console runs itself (depot mode)
//! and a resumable client, so a device that loses its link mid-download resumes from the bytes
//! it holds instead of starting again (`docs/PROTOCOL.md`, "Artifacts over HTTP").
//!
//! - [`range`]: the pure rules: which part of a file a `Range` header asks for, and whether a
//!   request path names a file under the root (no `..`, no absolute or encoded traversal).
//! - [`server`]: [`ArtifactServer`], hyper 1 with an axum router (the stack rumqttd already
//!   builds), `GET`/`HEAD`, `Range`, `ETag` (the SHA-256), `If-Range`, bounded connections and a
//!   clean shutdown.
//! - [`accept`]: the one accept loop of every Convoy HTTP server (`convoy serve`, the DDI
//!   endpoint, the artifact server): connection bounds in all and per client address, the
//!   TLS handshake and request head timeouts.
//! - [`client`]: [`download_resumable`], which writes to `DEST.part`, resumes with `Range` and
//!   `If-Range`, and checks length and SHA-256 before renaming into place.
//!
//! Deliberately not here: TLS (the depot server and the client speak plain HTTP on a LAN or
//! 127.0.0.1; artifacts are authenticated by the signed manifest's hashes, not by the channel),
//! multi-range responses (`multipart/byteranges`), compression, and directory listings.

pub mod accept;
pub mod json;
pub mod server;
pub mod tls;

// The client and the range rules live in `convoy_devlink` (shared with the device agent); they
// keep their paths here.
pub use convoy_devlink::http::{client, range};

pub use client::{
    DownloadReport, FetchError, Progress, RetryPolicy, download_resumable, download_with_retries,
};
pub use server::{ArtifactServer, CatalogEntry, Content, ServerConfig, ServerStats, Truncate};
