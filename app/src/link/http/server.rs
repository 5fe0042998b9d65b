//! The artifact server: serves release artifacts over HTTP/1.1 with byte ranges, so the console
//! (or a depot laptop with no uplink) can be the place devices download from.
//!
//! It answers `GET` and `HEAD` for files under a root directory ([`Content::Dir`]) or for an
//! explicit set of files ([`Content::Files`]); every response carries `Accept-Ranges: bytes` and an
//! `ETag` that is the file's SHA-256, the same digest a signed manifest names. A `Range` is
//! honoured when `If-Range` is absent or names the current `ETag`. Paths are checked by
//! [`super::range::sanitize_path`] and, for a directory, resolved with symbolic links followed
//! and required to stay under the root.
//!
//! Connections are accepted by [`super::accept`], the accept loop every Convoy HTTP server shares:
//! past `max_connections` the server stops accepting and further clients wait in the kernel's
//! backlog, one client address holds at most `max_connections_per_client` of them (more get a
//! 503), and a request head must arrive within `header_read_timeout`, so half-sent requests
//! cannot hold the slots. [`ArtifactServer::shutdown`] stops accepting, lets responses in flight finish (for a few
//! seconds at most) and returns when every connection is closed.
//!
//! File reads run on tokio's blocking pool and stream through a small channel, so a slow client
//! holds 256 KiB of buffers, not the whole file. Hashes are cached per file by length,
//! modification time and inode, and recomputed when any of these change.
//!
//! Not here: TLS, authentication, `multipart/byteranges`, compression, directory listings.

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use hyper::body::{Bytes, Frame, SizeHint};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::accept::{
    self, Accept, AcceptCounters, DEFAULT_HEADER_TIMEOUT, DEFAULT_TLS_HANDSHAKE_TIMEOUT, Limits,
};
use super::range::{self, RangeAnswer};

/// Bytes per read and per body frame.
const CHUNK_BYTES: usize = 64 * 1024;
/// Frames buffered between the file reader and the socket.
const CHANNEL_FRAMES: usize = 4;

/// What the server serves.
#[derive(Clone, Debug)]
pub enum Content {
    /// Every regular file under this directory, at its relative path (`/t300/fw.bin`).
    Dir(PathBuf),
    /// Exactly these files, each at `/{name}` (a name is one path segment).
    Files(BTreeMap<String, PathBuf>),
}

/// Cuts the first `connections` connections after the server has written `after_bytes` bytes
/// on each (response heads included), the way a vehicle entering a tunnel loses its link. For
/// tests and demos of resumption: the cut is made below HTTP, so what was written before it
/// reaches the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncate {
    pub after_bytes: u64,
    pub connections: u64,
}

/// How the server listens.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `127.0.0.1:0` picks a free port; [`ArtifactServer::addr`] tells which.
    pub listen: SocketAddr,
    /// Connections served at once; further clients wait to be accepted.
    pub max_connections: usize,
    /// Connections served at once from one client address; more are refused with a 503
    /// (`None`: [`Limits::default_per_client`], a quarter of `max_connections`).
    pub max_connections_per_client: Option<usize>,
    /// A connection that has not sent a whole request head within this time is closed.
    pub header_read_timeout: Duration,
    /// Test knob: abort some responses part-way.
    pub truncate: Option<Truncate>,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_connections: 64,
            max_connections_per_client: None,
            header_read_timeout: DEFAULT_HEADER_TIMEOUT,
            truncate: None,
        }
    }

    /// The connection limits this configuration asks for.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_per_client: self
                .max_connections_per_client
                .unwrap_or_else(|| Limits::default_per_client(self.max_connections)),
            header_timeout: self.header_read_timeout,
            // No TLS here; the field is unused.
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        }
    }
}

/// What the server has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub requests: u64,
    /// 200 responses with the whole file.
    pub full: u64,
    /// 206 responses.
    pub partial: u64,
    /// 416 responses.
    pub unsatisfiable: u64,
    /// 400 responses: paths refused by the traversal checks.
    pub refused: u64,
    /// 404 responses.
    pub not_found: u64,
    /// Requests for something that is not a regular file (a FIFO, a device, a socket, a
    /// directory): answered 404 without reading it.
    pub not_regular: u64,
    /// Body bytes handed to the connections.
    pub body_bytes: u64,
    /// Connections cut by [`Truncate`].
    pub truncated: u64,
    pub connections: u64,
    pub peak_connections: u64,
    /// Connections refused because their client address had its share open already.
    pub refused_connections: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    full: AtomicU64,
    partial: AtomicU64,
    unsatisfiable: AtomicU64,
    refused: AtomicU64,
    not_found: AtomicU64,
    not_regular: AtomicU64,
    body_bytes: AtomicU64,
    truncated: AtomicU64,
    connections: AtomicU64,
    active: AtomicU64,
    peak: AtomicU64,
    accept: Arc<AcceptCounters>,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ServerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerStats {
            requests: get(&self.requests),
            full: get(&self.full),
            partial: get(&self.partial),
            unsatisfiable: get(&self.unsatisfiable),
            refused: get(&self.refused),
            not_found: get(&self.not_found),
            not_regular: get(&self.not_regular),
            body_bytes: get(&self.body_bytes),
            truncated: get(&self.truncated),
            connections: get(&self.connections),
            peak_connections: get(&self.peak),
            refused_connections: self.accept.refused_per_client(),
        }
    }
}

/// A file's identity for the hash cache: a change to any of these means a new hash.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileKey {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl FileKey {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

enum Resolved {
    /// The canonical root.
    Dir(PathBuf),
    Files(BTreeMap<String, PathBuf>),
}

struct Shared {
    content: Resolved,
    hashes: Mutex<HashMap<PathBuf, (FileKey, String)>>,
    counters: Counters,
    truncate: Option<Truncate>,
    truncations_started: AtomicU64,
}

/// One served file, as listed by [`ArtifactServer::catalog`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The URL path without the leading `/` (segments are not percent-encoded here).
    pub name: String,
    pub length_bytes: u64,
    pub sha256: String,
}

/// A running artifact server. Dropping it stops accepting; [`Self::shutdown`] also waits.
pub struct ArtifactServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl ArtifactServer {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(content: Content, config: ServerConfig) -> Result<Self> {
        let limits = config.limits();
        limits.check()?;
        let content = match content {
            Content::Dir(dir) => {
                let root = std::fs::canonicalize(&dir)
                    .with_context(|| format!("opening the artifact directory {}", dir.display()))?;
                if !root.is_dir() {
                    bail!("{} is not a directory", dir.display());
                }
                Resolved::Dir(root)
            }
            Content::Files(files) => {
                for (name, path) in &files {
                    if range::sanitize_path(&format!("/{}", range::encode_segment(name)))
                        .map_or(true, |s| s.len() != 1)
                    {
                        bail!("artifact name {name:?} cannot be served as one URL path segment");
                    }
                    if !path.is_file() {
                        bail!("artifact {name}: {} is not a readable file", path.display());
                    }
                }
                Resolved::Files(files)
            }
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let shared = Arc::new(Shared {
            content,
            hashes: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            truncate: config.truncate,
            truncations_started: AtomicU64::new(0),
        });
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (stop, stop_rx) = watch::channel(false);
        let accept = Accept {
            tls: None,
            limits,
            counters: Arc::clone(&shared.counters.accept),
            server: "convoy artifacts serve",
        };
        let wrap = {
            let shared = Arc::clone(&shared);
            move |stream| {
                let counters = &shared.counters;
                Counters::bump(&counters.connections);
                let active = counters.active.fetch_add(1, Ordering::Relaxed) + 1;
                counters.peak.fetch_max(active, Ordering::Relaxed);
                let cut_after = shared.truncate.and_then(|t| {
                    let n = shared.truncations_started.fetch_add(1, Ordering::Relaxed);
                    (n < t.connections).then_some(t.after_bytes)
                });
                CutIo {
                    inner: stream,
                    left_bytes: cut_after,
                    shared: Arc::clone(&shared),
                }
            }
        };
        let task = tokio::spawn(accept::serve(listener, router, accept, stop_rx, wrap));
        Ok(Self {
            addr,
            stop,
            task: Some(task),
            shared,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of a served file, its path segments percent-encoded.
    pub fn url_of(&self, name: &str) -> String {
        let path: Vec<String> = name.split('/').map(range::encode_segment).collect();
        format!("http://{}/{}", self.addr, path.join("/"))
    }

    pub fn stats(&self) -> ServerStats {
        self.shared.counters.snapshot()
    }

    /// Every file served, by name, with its length and SHA-256 (hashing each once, which also
    /// fills the cache the `ETag`s come from).
    pub async fn catalog(&self) -> Result<Vec<CatalogEntry>> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || catalog_blocking(&shared))
            .await
            .context("listing the artifacts")?
    }

    /// Stops accepting, lets responses in flight finish (at most a few seconds), and returns
    /// once every connection is closed.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            // A panic in the accept loop has nothing left to clean up.
            let _ = task.await;
        }
    }
}

impl Drop for ArtifactServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

fn text_response(status: StatusCode, text: String) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    Counters::bump(&shared.counters.requests);
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        let mut response = text_response(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed; use GET or HEAD\n"),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let segments = match range::sanitize_path(request.uri().path()) {
        Ok(s) => s,
        Err(e) => {
            Counters::bump(&shared.counters.refused);
            return text_response(StatusCode::BAD_REQUEST, format!("refused path: {e}\n"));
        }
    };
    let opened = {
        let shared = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || open_file(&shared, &segments)).await
    };
    let (file, len, sha256) = match opened {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => {
            Counters::bump(&shared.counters.not_found);
            return text_response(StatusCode::NOT_FOUND, "no such artifact\n".into());
        }
        Ok(Err(e)) => {
            return text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the artifact: {e}\n"),
            );
        }
        Err(e) => {
            return text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the artifact: {e}\n"),
            );
        }
    };
    respond(&shared, &method, request.headers(), file, len, &sha256)
}

fn respond(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    file: File,
    len: u64,
    sha256: &str,
) -> Response {
    let etag = range::etag_of(sha256);
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // An If-Range that names another version of the file asks for the whole new file.
    let range_header = match headers.get(header::IF_RANGE) {
        Some(v) if !v.to_str().is_ok_and(|v| range::if_range_matches(v, &etag)) => None,
        _ => range_header,
    };
    let answer = range::resolve_range(range_header, len);
    let mut builder = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    let (start, count) = match answer {
        RangeAnswer::Full => {
            Counters::bump(&shared.counters.full);
            builder = builder.status(StatusCode::OK);
            (0, len)
        }
        RangeAnswer::Partial { start, end } => {
            Counters::bump(&shared.counters.partial);
            builder = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
            (start, end - start + 1)
        }
        RangeAnswer::Unsatisfiable => {
            Counters::bump(&shared.counters.unsatisfiable);
            builder = builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"));
            (0, 0)
        }
    };
    builder = builder.header(header::CONTENT_LENGTH, count);
    let body = if *method == Method::HEAD || count == 0 {
        Body::empty()
    } else {
        Body::new(FileBody::spawn(Arc::clone(shared), file, start, count))
    };
    builder.body(body).unwrap_or_else(|e| {
        text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("building the response: {e}\n"),
        )
    })
}

/// Opens the file a request names and returns it with its length and SHA-256; `None` when no
/// such file is served.
fn open_file(shared: &Shared, segments: &[String]) -> io::Result<Option<(File, u64, String)>> {
    let path = match &shared.content {
        Resolved::Dir(root) => {
            let joined = segments.iter().fold(root.clone(), |p, s| p.join(s));
            let canonical = match std::fs::canonicalize(&joined) {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            // A symbolic link inside the root may point out of it: refuse what it leads to.
            if !canonical.starts_with(root) {
                return Ok(None);
            }
            canonical
        }
        Resolved::Files(files) => match segments {
            [name] => match files.get(name) {
                Some(path) => path.clone(),
                None => return Ok(None),
            },
            _ => return Ok(None),
        },
    };
    let Some((mut file, meta)) = open_regular(&path, &shared.counters)? else {
        return Ok(None);
    };
    let key = FileKey::of(&meta);
    let cached = shared
        .hashes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&path)
        .filter(|(k, _)| *k == key)
        .map(|(_, sha)| sha.clone());
    let sha256 = if let Some(sha) = cached {
        sha
    } else {
        let sha = hash_reader(&mut file)?;
        file.seek(SeekFrom::Start(0))?;
        shared
            .hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path, (key, sha.clone()));
        sha
    };
    Ok(Some((file, meta.len(), sha256)))
}

/// Opens `path` for reading only if it is a regular file, and returns it with its metadata;
/// `None` (logged and counted) for anything else.
///
/// The open never blocks: `O_NONBLOCK` makes opening a FIFO return at once instead of waiting
/// for a writer (540 requests for a FIFO once held 515 threads for ever), and `O_NOCTTY` keeps
/// a terminal from becoming the process's. The type is then read from the opened handle
/// (`fstat`), not the path, so a file swapped for something else between a check and the open
/// is still refused. On a regular file `O_NONBLOCK` changes nothing.
fn open_regular(path: &Path, counters: &Counters) -> io::Result<Option<(File, std::fs::Metadata)>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        libc::O_NONBLOCK | libc::O_NOCTTY,
    );
    let refuse = |what: &str| {
        Counters::bump(&counters.not_regular);
        eprintln!(
            "artifact server: refused {}: {what}, not a regular file",
            path.display()
        );
        Ok(None)
    };
    let file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // Opening a Unix socket fails with ENXIO: it is not a file either.
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return refuse("a socket"),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(Some((file, meta)));
    }
    let kind = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return refuse("a FIFO");
        }
        if kind.is_char_device() || kind.is_block_device() {
            return refuse("a device");
        }
        if kind.is_socket() {
            return refuse("a socket");
        }
    }
    if kind.is_dir() {
        return refuse("a directory");
    }
    refuse("something else")
}

/// The lowercase hex SHA-256 of everything `reader` yields.
pub fn hash_reader(reader: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn catalog_blocking(shared: &Shared) -> Result<Vec<CatalogEntry>> {
    let names: Vec<String> = match &shared.content {
        Resolved::Files(files) => files.keys().cloned().collect(),
        Resolved::Dir(root) => {
            let mut names = Vec::new();
            walk(root, root, &mut names)?;
            names
        }
    };
    let mut entries = Vec::new();
    for name in names {
        let segments: Vec<String> = name.split('/').map(str::to_owned).collect();
        if let Some((_, len, sha256)) =
            open_file(shared, &segments).with_context(|| format!("hashing {name}"))?
        {
            entries.push(CatalogEntry {
                name,
                length_bytes: len,
                sha256,
            });
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Every regular file under `dir` whose relative path the server would accept.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file()
            && let Ok(relative) = path.strip_prefix(root)
            && let Some(name) = relative.to_str()
        {
            let encoded: Vec<String> = name.split('/').map(range::encode_segment).collect();
            if range::sanitize_path(&format!("/{}", encoded.join("/"))).is_ok() {
                out.push(name.to_owned());
            }
        }
    }
    Ok(())
}

/// A response body streamed from a file by a blocking reader task.
struct FileBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    remaining: u64,
    shared: Arc<Shared>,
}

impl FileBody {
    /// Streams `count` bytes from `start`.
    fn spawn(shared: Arc<Shared>, file: File, start: u64, count: u64) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = read_into(file, start, count, &tx) {
                // The receiver may be gone already (the client left); nothing else to tell.
                let _ = tx.blocking_send(Err(e));
            }
        });
        Self {
            rx,
            remaining: count,
            shared,
        }
    }
}

fn read_into(
    mut file: File,
    start: u64,
    count: u64,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    file.seek(SeekFrom::Start(start))?;
    let mut sent = 0u64;
    while sent < count {
        let want = (count - sent).min(CHUNK_BYTES as u64) as usize;
        let mut buf = vec![0u8; want];
        // A file shortened while it is served ends here with an error, and the client sees a
        // response shorter than its Content-Length, never bytes from elsewhere.
        file.read_exact(&mut buf)?;
        sent += want as u64;
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// A connection that fails its writes once `left_bytes` are used up ([`Truncate`]); without a
/// limit it passes everything through. It counts as an active connection until dropped.
struct CutIo {
    inner: tokio::net::TcpStream,
    left_bytes: Option<u64>,
    shared: Arc<Shared>,
}

impl Drop for CutIo {
    fn drop(&mut self) {
        self.shared.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl tokio::io::AsyncRead for CutIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CutIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let allowed = match self.left_bytes {
            None => buf.len(),
            Some(0) => {
                Counters::bump(&self.shared.counters.truncated);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "connection cut on purpose (Truncate)",
                )));
            }
            Some(left) => buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
        };
        let written = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..allowed]))?;
        if let Some(left) = self.left_bytes.as_mut() {
            *left -= written as u64;
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                let n = bytes.len() as u64;
                self.remaining = self.remaining.saturating_sub(n);
                self.shared
                    .counters
                    .body_bytes
                    .fetch_add(n, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
