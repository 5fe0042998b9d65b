//! The resumable artifact download: what a device (or `convoy artifacts fetch`) does to get an
//! artifact whose length and SHA-256 a signed manifest names.
//!
//! The bytes go to `DEST.part`. After an interruption, the next call asks for the rest with
//! `Range: bytes=N-` and, when the first response carried a strong `ETag` (kept in
//! `DEST.part.etag`), with `If-Range` on it: if the file on the server changed, the server answers
//! with the whole new file and the download starts again from zero instead of splicing two
//! versions. Only when the length and the SHA-256 of the whole are what was expected is the part
//! file renamed to `DEST`; a hash mismatch discards it (the next attempt starts from zero), so a
//! tampered artifact never lands under its final name.
//!
//! Plain `http://` only, over hyper 1's HTTP/1.1 client: artifacts are authenticated by the
//! manifest's hashes, not by the channel. No redirects, no proxies, no compression.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::range::{self, ContentRange};

/// How long to wait for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the response head or the next body bytes before giving up on the
/// connection (the tunnel case); the bytes held so far stay in the part file.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a download stands, for progress bars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes held in the part file, including those from earlier attempts.
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// Where this attempt started.
    pub resumed_from_bytes: u64,
}

/// What a successful download did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadReport {
    /// Bytes already in the part file when this attempt began (0 for a fresh download).
    pub resumed_from_bytes: u64,
    /// Bytes received over the network by this attempt.
    pub fetched_bytes: u64,
    /// The server sent the whole file although a range was asked for (the file changed, or the
    /// server does not do ranges), so the part file was started again.
    pub restarted: bool,
    pub sha256: String,
}

/// Why a download failed. [`FetchError::is_retryable`] says whether trying again (which
/// resumes) can help.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not `http://host[:port]/path`.
    #[error("invalid artifact URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The expected hash given by the caller is not 64 hex digits.
    #[error("expected SHA-256 {0:?} is not 64 hex digits")]
    BadExpectedHash(String),
    /// The TCP connection could not be made.
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: io::Error,
    },
    /// The HTTP exchange failed before any body arrived.
    #[error("HTTP request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: hyper::Error,
    },
    /// Nothing arrived for [`IDLE_TIMEOUT`] (or the connection did not open in time).
    #[error("no answer from {url} for {secs} s")]
    Timeout { url: String, secs: u64 },
    /// A status other than 200, 206 or a usable 416.
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    /// The server answered the range request with a range other than the one asked for.
    #[error("{url} refused the range request from byte {offset}: {detail}")]
    RangeRefused {
        url: String,
        offset: u64,
        detail: String,
    },
    /// The server's file, or what arrived, is not the expected length.
    #[error("length mismatch for {url}: expected {expected} bytes, got {got}")]
    LengthMismatch {
        url: String,
        expected: u64,
        got: u64,
    },
    /// The whole file arrived but its SHA-256 is not the expected one; the part file was deleted.
    #[error(
        "hash mismatch for {url}: expected sha256 {expected}, got {got}; the downloaded bytes were discarded"
    )]
    HashMismatch {
        url: String,
        expected: String,
        got: String,
    },
    /// The connection broke off mid-body; the bytes so far are kept in the part file.
    #[error("download of {url} broke off at {done_bytes} of {total_bytes} bytes ({detail}); the bytes so far are kept in {}", part.display())]
    Interrupted {
        url: String,
        done_bytes: u64,
        total_bytes: u64,
        part: PathBuf,
        detail: String,
    },
    /// Reading or writing a local file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    /// Whether another attempt may succeed: network trouble and server errors, not a wrong hash
    /// or a refused range.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Connect { .. }
            | FetchError::Http { .. }
            | FetchError::Timeout { .. }
            | FetchError::Interrupted { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FetchError + 'a {
    move |source| FetchError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The part file a download of `dest` writes to.
pub fn part_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".part")
}

fn etag_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".part.etag")
}

struct Target {
    authority: String,
    host: String,
    port: u16,
    path_and_query: String,
}

fn parse_url(url: &str) -> Result<Target, FetchError> {
    let bad = |reason: &str| FetchError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported; artifacts are served over plain http and checked against the manifest's hashes",
            ));
        }
        _ => return Err(bad("it must start with http://")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(Target {
        authority: authority.as_str().to_owned(),
        host: host.to_owned(),
        port: authority.port_u16().unwrap_or(80),
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    })
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Hashes the first `len` bytes of `path`.
async fn hash_prefix(path: &Path, len: u64) -> Result<Sha256, FetchError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(io_err("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file
            .read(&mut buf[..want])
            .await
            .map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher)
}

async fn remove_if_present(path: &Path) -> Result<(), FetchError> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FetchError::Io {
            action: "removing",
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Downloads `url` to `dest`, resuming from `DEST.part` if an earlier attempt left one. One
/// attempt (one request); see [`download_with_retries`] to keep going after interruptions.
///
/// The result is in place under `dest` only when its length is `expected_len` and its SHA-256
/// is `expected_sha256`. `progress` is called as bytes arrive.
pub async fn download_resumable(
    url: &str,
    dest: &Path,
    expected_len: u64,
    expected_sha256: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<DownloadReport, FetchError> {
    if !is_sha256_hex(expected_sha256) {
        return Err(FetchError::BadExpectedHash(expected_sha256.to_owned()));
    }
    let expected_sha256 = expected_sha256.to_ascii_lowercase();
    let target = parse_url(url)?;
    let part = part_path(dest);
    let etag_file = etag_path(dest);
    let mut offset = match tokio::fs::metadata(&part).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err("reading", &part)(e)),
    };
    if offset > expected_len {
        // Longer than the artifact can be: not a prefix of it.
        offset = 0;
    }
    if offset == expected_len && offset > 0 {
        // Everything arrived last time but was not checked (a crash before the rename).
        let got = hex::encode(hash_prefix(&part, offset).await?.finalize());
        if got == expected_sha256 {
            finish(&part, &etag_file, dest).await?;
            return Ok(DownloadReport {
                resumed_from_bytes: offset,
                fetched_bytes: 0,
                restarted: false,
                sha256: got,
            });
        }
        offset = 0;
    }
    if offset == 0 {
        remove_if_present(&etag_file).await?;
    }
    let mut hasher = if offset > 0 {
        hash_prefix(&part, offset).await?
    } else {
        Sha256::new()
    };
    let etag = if offset > 0 {
        match tokio::fs::read_to_string(&etag_file).await {
            Ok(t) if range::is_strong_etag(&t) => Some(t.trim().to_owned()),
            _ => None,
        }
    } else {
        None
    };

    let mut request = Request::get(target.path_and_query.as_str())
        .header(header::HOST, target.authority.as_str())
        .header(
            header::USER_AGENT,
            concat!("convoy/", env!("CARGO_PKG_VERSION")),
        );
    if offset > 0 {
        request = request.header(header::RANGE, format!("bytes={offset}-"));
        if let Some(tag) = &etag {
            request = request.header(header::IF_RANGE, tag.as_str());
        }
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;

    let timeout = |d: Duration| FetchError::Timeout {
        url: url.to_owned(),
        secs: d.as_secs(),
    };
    let stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| timeout(CONNECT_TIMEOUT))?
    .map_err(|source| FetchError::Connect {
        url: url.to_owned(),
        source,
    })?;
    let http = |source| FetchError::Http {
        url: url.to_owned(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // The connection future drives the socket; its error, if any, also surfaces on the response.
    let driver = tokio::spawn(connection);
    let response = tokio::time::timeout(IDLE_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| timeout(IDLE_TIMEOUT))?
        .map_err(http)?;

    let status = response.status();
    let content_length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let content_range = response
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let new_etag = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|v| range::is_strong_etag(v))
        .map(str::to_owned);
    let resumed_from_bytes = offset;
    let mut restarted = false;
    match status {
        StatusCode::OK => {
            if offset > 0 {
                restarted = true;
                offset = 0;
                hasher = Sha256::new();
            }
            if let Some(len) = content_length
                && len != expected_len
            {
                return Err(FetchError::LengthMismatch {
                    url: url.to_owned(),
                    expected: expected_len,
                    got: len,
                });
            }
        }
        StatusCode::PARTIAL_CONTENT => {
            let refused = |detail: String| FetchError::RangeRefused {
                url: url.to_owned(),
                offset,
                detail,
            };
            if offset == 0 {
                return Err(refused(
                    "a partial answer to a request for the whole file".into(),
                ));
            }
            match content_range
                .as_deref()
                .and_then(range::parse_content_range)
            {
                Some(ContentRange::Bytes { start, end, total }) => {
                    if let Some(total) = total
                        && total != expected_len
                    {
                        return Err(FetchError::LengthMismatch {
                            url: url.to_owned(),
                            expected: expected_len,
                            got: total,
                        });
                    }
                    if start != offset || end + 1 != expected_len {
                        return Err(refused(format!(
                            "it sent bytes {start}-{end} instead of {offset}-{}",
                            expected_len - 1
                        )));
                    }
                }
                _ => {
                    return Err(refused(format!(
                        "missing or malformed Content-Range {content_range:?}"
                    )));
                }
            }
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            let total = match content_range
                .as_deref()
                .and_then(range::parse_content_range)
            {
                Some(ContentRange::Unsatisfied { total }) => Some(total),
                _ => None,
            };
            if let Some(total) = total
                && total != expected_len
            {
                // The server's file is shorter than what we hold: it is not the artifact.
                return Err(FetchError::LengthMismatch {
                    url: url.to_owned(),
                    expected: expected_len,
                    got: total,
                });
            }
            return Err(FetchError::RangeRefused {
                url: url.to_owned(),
                offset,
                detail: format!("416 Range Not Satisfiable (Content-Range {content_range:?})"),
            });
        }
        other => {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: other.as_u16(),
            });
        }
    }

    if offset == 0 {
        match &new_etag {
            Some(tag) => tokio::fs::write(&etag_file, tag)
                .await
                .map_err(io_err("writing", &etag_file))?,
            None => remove_if_present(&etag_file).await?,
        }
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(offset == 0)
        .append(offset > 0)
        .open(&part)
        .await
        .map_err(io_err("opening", &part))?;
    if offset > 0 {
        // A part file longer than what we hashed would leave stray bytes at the end.
        file.set_len(offset)
            .await
            .map_err(io_err("truncating", &part))?;
    }
    let mut done = offset;
    let start = offset;
    progress(Progress {
        done_bytes: done,
        total_bytes: expected_len,
        resumed_from_bytes: start,
    });
    let mut body = response.into_body();
    let interrupted = loop {
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
            Err(_) => break Some(format!("no data for {} s", IDLE_TIMEOUT.as_secs())),
            Ok(None) => break None,
            Ok(Some(Err(e))) => break Some(e.to_string()),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if done + data.len() as u64 > expected_len {
            drop(file);
            discard(&part, &etag_file).await?;
            return Err(FetchError::LengthMismatch {
                url: url.to_owned(),
                expected: expected_len,
                got: done + data.len() as u64,
            });
        }
        file.write_all(&data)
            .await
            .map_err(io_err("writing", &part))?;
        hasher.update(&data);
        done += data.len() as u64;
        progress(Progress {
            done_bytes: done,
            total_bytes: expected_len,
            resumed_from_bytes: start,
        });
    };
    driver.abort();
    file.flush().await.map_err(io_err("writing", &part))?;
    file.sync_all().await.map_err(io_err("syncing", &part))?;
    drop(file);
    if let Some(detail) = interrupted {
        return Err(FetchError::Interrupted {
            url: url.to_owned(),
            done_bytes: done,
            total_bytes: expected_len,
            part,
            detail,
        });
    }
    if done != expected_len {
        // The server ended the response normally, short of the expected length.
        discard(&part, &etag_file).await?;
        return Err(FetchError::LengthMismatch {
            url: url.to_owned(),
            expected: expected_len,
            got: done,
        });
    }
    let got = hex::encode(hasher.finalize());
    if got != expected_sha256 {
        discard(&part, &etag_file).await?;
        return Err(FetchError::HashMismatch {
            url: url.to_owned(),
            expected: expected_sha256,
            got,
        });
    }
    finish(&part, &etag_file, dest).await?;
    Ok(DownloadReport {
        resumed_from_bytes,
        fetched_bytes: done - start,
        restarted,
        sha256: got,
    })
}

async fn discard(part: &Path, etag_file: &Path) -> Result<(), FetchError> {
    remove_if_present(part).await?;
    remove_if_present(etag_file).await
}

async fn finish(part: &Path, etag_file: &Path, dest: &Path) -> Result<(), FetchError> {
    tokio::fs::rename(part, dest)
        .await
        .map_err(io_err("renaming into place", dest))?;
    remove_if_present(etag_file).await
}

/// How often and how patiently [`download_with_retries`] tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, including the first.
    pub attempts: u32,
    /// The wait before the first retry; it doubles with each retry, up to 30 s.
    pub backoff: Duration,
}

/// [`download_resumable`] until it succeeds, fails for good (a hash or length mismatch, a
/// refused range, a 4xx), or the policy's attempts are used up; each retry resumes from the part
/// file. Returns the successful attempt's report and the number of attempts made.
pub async fn download_with_retries(
    url: &str,
    dest: &Path,
    expected_len: u64,
    expected_sha256: &str,
    policy: RetryPolicy,
    progress: &mut (dyn FnMut(Progress) + Send),
    on_retry: &mut (dyn FnMut(&FetchError) + Send),
) -> Result<(DownloadReport, u32), FetchError> {
    let attempts = policy.attempts.max(1);
    let mut wait = policy.backoff;
    let mut attempt = 1;
    loop {
        match download_resumable(url, dest, expected_len, expected_sha256, progress).await {
            Ok(report) => return Ok((report, attempt)),
            Err(e) if e.is_retryable() && attempt < attempts => {
                on_retry(&e);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
