//! The fleet snapshot: a compact copy of every device (with its components and tags) in a few
//! BLOBs, so that the cold load reads one query and decodes bytes in a tight loop instead of
//! stepping through twenty columns of a million device rows and three component rows each.
//!
//! The rows stay the truth; the snapshot is derived from them and is only ever a shortcut.
//! It is written after a full row load ([`super::Store::load_fleet`]) and used only while no
//! write has touched `devices` or `components` since; a missing, stale or damaged snapshot makes
//! the load read the rows instead (and write a fresh snapshot).
//!
//! Staleness: the one-row table `fleet_state` holds a generation counter and an `armed` flag.
//! Triggers on `devices` and `components` bump the generation and clear `armed` on the first
//! write after arming; their `WHEN armed` test keeps every later row of a bulk import at one
//! read of a one-row table. The row load arms the state (a new generation) in the same
//! write-locked moment in which its readers start, so the rows it reads are exactly that
//! generation; it stores the snapshot afterwards only if the state is still armed at that
//! generation, that is, if no write touched devices or components in between. The load uses a
//! snapshot only when the state is armed and every part carries the current generation.
//!
//! Damage: each part starts with a header (magic, format, part number and count, device and
//! string counts, total length) and ends with a 64-bit checksum of everything before it; every
//! read while decoding is bounds-checked. A part that fails any check is reported as
//! [`Unusable::Damaged`] and the load falls back to the rows: never a panic, never a wrong
//! fleet.
//!
//! Not here: depots (a few hundred rows, read from their table on every load), telemetry, and
//! any query on the snapshot's contents (filters run on the loaded fleet).

use anyhow::{Context, Result};
use convoy_core::fleet::{
    Connectivity, CustomerTier, Device, DeviceClass, GeoPoint, PowerState, Redundancy, Slot,
    SmallMap, Sym,
};
use convoy_core::time::Timestamp;
use convoy_core::version::Version;
use rusqlite::{Connection, OptionalExtension, params};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// Devices per snapshot part: parts are decoded in parallel, and a part of about 4 MiB keeps
/// each BLOB a modest run of overflow pages.
#[cfg(not(test))]
const PART_DEVICES: usize = 65_536;
/// Small parts in tests, so that a few thousand devices span several parts.
#[cfg(test)]
const PART_DEVICES: usize = 700;

const MAGIC: &[u8; 4] = b"CVFS";
/// The encoding below; a part of any other format is treated as missing.
const FORMAT: u8 = 1;
/// Magic, format, part, parts, devices, strings (u32 each), total length (u64).
const HEADER_BYTES: usize = 4 + 1 + 4 * 4 + 8;
const CHECKSUM_BYTES: usize = 8;
/// The fewest bytes one encoded device can take (fixed-width fields plus one-byte varints),
/// used to bound allocations by what a part can really hold.
const MIN_DEVICE_BYTES: usize = 40;

/// Why a snapshot could not be used; the load then reads the rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// No snapshot has been written (or the cache predates snapshots).
    Missing,
    /// A write touched devices or components after the snapshot was written.
    Stale,
    /// A part failed its length, checksum or decoding checks.
    Damaged(String),
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no fleet snapshot"),
            Self::Stale => f.write_str("the fleet snapshot is stale"),
            Self::Damaged(why) => write!(f, "the fleet snapshot is damaged: {why}"),
        }
    }
}

/// A decoding failure: what was wrong, in which part, at which byte.
#[derive(Debug)]
struct Damage {
    what: &'static str,
    at: usize,
}

/// Marks the state armed at a new generation, on a connection that holds the write lock, and
/// returns that generation.
pub(crate) fn arm(conn: &Connection) -> Result<i64> {
    conn.query_row(
        "UPDATE fleet_state SET generation = generation + 1, armed = 1 RETURNING generation",
        [],
        |r| r.get(0),
    )
    .context("arming the fleet snapshot")
}

/// The fleet from the snapshot, if it is current: one read transaction must be open on `conn`
/// (the parts are read and decoded inside it). `Ok(Err(..))` says why the snapshot cannot be
/// used; `Err` is a failure of SQLite itself.
///
/// Each part is decoded as it is read and its bytes dropped after, so the load never holds
/// every part's bytes at once, and the fleet's vector is filled part by part, never copied
/// whole (see [`decode_parts`]).
pub(crate) fn load(
    conn: &Connection,
    threads: usize,
) -> Result<std::result::Result<Vec<Device>, Unusable>> {
    let count = match scan(conn)? {
        Ok(count) => count,
        Err(unusable) => return Ok(Err(unusable)),
    };
    let mut source = Cache {
        stmt: conn.prepare_cached("SELECT body FROM fleet_snapshot WHERE part = ?1")?,
        count,
    };
    match decode_parts(&mut source, threads) {
        Ok(devices) => Ok(Ok(devices)),
        Err(Failure::Unusable(unusable)) => Ok(Err(unusable)),
        Err(Failure::Sql(e)) => Err(e),
    }
}

/// Whether the snapshot is current and its parts are numbered `0..count`, all BLOBs: the
/// part count, or why the snapshot cannot be used. Reads no part's body (`typeof` of a BLOB
/// does not load it).
fn scan(conn: &Connection) -> Result<std::result::Result<usize, Unusable>> {
    let state: Option<(i64, bool)> = conn
        .query_row("SELECT generation, armed FROM fleet_state", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .context("reading the fleet snapshot's state")?;
    let Some((generation, armed)) = state else {
        return Ok(Err(Unusable::Missing));
    };
    let mut stmt =
        conn.prepare("SELECT part, generation, typeof(body) FROM fleet_snapshot ORDER BY part")?;
    let mut rows = stmt.query([])?;
    let mut count = 0usize;
    let mut stale = false;
    while let Some(r) = rows.next()? {
        let part: i64 = r.get(0)?;
        let part_generation: i64 = r.get(1)?;
        if part_generation != generation {
            stale = true;
            break;
        }
        if usize::try_from(part).ok() != Some(count) {
            return Ok(Err(Unusable::Damaged(format!(
                "part {part} where part {count} was expected"
            ))));
        }
        if r.get_ref(2)?.as_str() != Ok("blob") {
            return Ok(Err(Unusable::Damaged(format!("part {part} is not a BLOB"))));
        }
        count += 1;
    }
    if count == 0 && !stale {
        return Ok(Err(Unusable::Missing));
    }
    if stale || !armed {
        return Ok(Err(Unusable::Stale));
    }
    Ok(Ok(count))
}

/// Stores `devices` (the fleet read at `generation`) as the snapshot, if the state is still
/// armed at `generation`. Returns whether it was stored. Waits at most `busy` for the write
/// lock: a snapshot is never worth holding up a load behind a long import.
pub(crate) fn store(
    conn: &Connection,
    generation: i64,
    devices: &[Device],
    busy: std::time::Duration,
) -> Result<bool> {
    let parts = encode(devices)?;
    conn.busy_timeout(busy)?;
    let stored = (|| -> Result<bool> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let written = (|| -> Result<bool> {
            let (current, armed): (i64, bool) =
                conn.query_row("SELECT generation, armed FROM fleet_state", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            if current != generation || !armed {
                return Ok(false);
            }
            write_parts(conn, generation, &parts)?;
            Ok(true)
        })();
        match written {
            Ok(true) => {
                conn.execute_batch("COMMIT")?;
                Ok(true)
            }
            other => {
                conn.execute_batch("ROLLBACK")?;
                other
            }
        }
    })();
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    stored.context("writing the fleet snapshot")
}

/// Replaces the snapshot's parts with `parts` of `generation`, in the caller's transaction.
fn write_parts(conn: &Connection, generation: i64, parts: &[Vec<u8>]) -> Result<()> {
    conn.execute("DELETE FROM fleet_snapshot", [])?;
    let mut insert = conn
        .prepare_cached("INSERT INTO fleet_snapshot(part, generation, body) VALUES (?1, ?2, ?3)")?;
    for (i, body) in parts.iter().enumerate() {
        insert.execute(params![i64::try_from(i)?, generation, body])?;
    }
    Ok(())
}

/// Stores `devices` (sorted by id, strictly) as the snapshot inside the caller's write
/// transaction, after its last write to `devices` and `components`, when `devices` are
/// exactly the cache's fleet at the commit (an import into a cache without devices): the
/// state is armed at a new generation in the same transaction, so the first load uses the
/// snapshot. Returns whether it was stored (not when the cache has no snapshot state).
pub(crate) fn store_in(tx: &Connection, devices: &[Device]) -> Result<bool> {
    store_parts_in(tx, &encode(devices)?)
}

/// [`store_in`] with the parts already encoded (by [`encode`], from exactly the devices the
/// commit leaves): the import encodes them on another thread while it writes the rest.
pub(crate) fn store_parts_in(tx: &Connection, parts: &[Vec<u8>]) -> Result<bool> {
    let generation: Option<i64> = tx
        .query_row(
            "UPDATE fleet_state SET generation = generation + 1, armed = 1 RETURNING generation",
            [],
            |r| r.get(0),
        )
        .optional()
        .context("arming the fleet snapshot")?;
    let Some(generation) = generation else {
        return Ok(false);
    };
    write_parts(tx, generation, parts).context("writing the fleet snapshot")?;
    Ok(true)
}

/// The snapshot of `devices` (sorted by id) as parts of at most [`PART_DEVICES`] devices,
/// encoded on up to two threads.
pub(crate) fn encode(devices: &[Device]) -> Result<Vec<Vec<u8>>> {
    let mut chunks: Vec<&[Device]> = devices.chunks(PART_DEVICES).collect();
    // An empty fleet is one empty part, so that "no parts" always means "no snapshot".
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let parts = u32::try_from(chunks.len()).context("too many snapshot parts")?;
    let encode_range = |from: usize, to: usize| -> Result<Vec<Vec<u8>>> {
        (from..to)
            .map(|i| encode_part(u32::try_from(i)?, parts, chunks[i]))
            .collect()
    };
    let mid = chunks.len() / 2;
    if mid == 0 {
        return encode_range(0, chunks.len());
    }
    std::thread::scope(|scope| {
        let upper = std::thread::Builder::new()
            .name("encode-snapshot".to_owned())
            .spawn_scoped(scope, || encode_range(mid, chunks.len()))
            .context("starting the snapshot encoder")?;
        let mut out = encode_range(0, mid)?;
        let upper = upper
            .join()
            .map_err(|_| anyhow::anyhow!("the snapshot encoder panicked"))??;
        out.extend(upper);
        Ok(out)
    })
}

/// Why a load from the snapshot stopped: the snapshot is unusable, or SQLite failed.
enum Failure {
    Unusable(Unusable),
    Sql(anyhow::Error),
}

impl From<Unusable> for Failure {
    fn from(u: Unusable) -> Self {
        Self::Unusable(u)
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e.into())
    }
}

/// Where [`decode_parts`] gets the parts' bytes, one part at a time.
trait Source<'b> {
    /// How many parts there are.
    fn count(&self) -> usize;
    /// Calls `f` with part `i`'s bytes, lent for the length of the call.
    fn with_part<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, Failure>;
    /// Part `i`'s bytes, to hand to another thread.
    fn part(&mut self, i: usize) -> std::result::Result<Cow<'b, [u8]>, Failure>;
    /// Told that part `i` is the next to be placed in the fleet's vector (for the tests' log).
    fn placing(&mut self, _i: usize) {}
}

/// The parts in the cache, one query per part inside the caller's read transaction. A part
/// is lent straight from SQLite's copy of the row; only a part handed to another thread is
/// copied (and dropped as soon as it is decoded).
struct Cache<'c> {
    stmt: rusqlite::CachedStatement<'c>,
    count: usize,
}

impl Source<'static> for Cache<'_> {
    fn count(&self) -> usize {
        self.count
    }

    fn with_part<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, Failure> {
        let part = i64::try_from(i).map_err(|_| damaged("too many parts"))?;
        let mut rows = self.stmt.query([part])?;
        // The scan saw every part in this transaction; a part gone since is damage all the same.
        let Some(row) = rows.next()? else {
            return Err(damaged(&format!("part {i} is missing")).into());
        };
        let Ok(body) = row.get_ref(0)?.as_blob() else {
            return Err(damaged(&format!("part {i} is not a BLOB")).into());
        };
        Ok(f(body))
    }

    fn part(&mut self, i: usize) -> std::result::Result<Cow<'static, [u8]>, Failure> {
        self.with_part(i, |body| Cow::Owned(body.to_vec()))
    }
}

/// Parts in memory (the tests' encoded parts).
#[cfg(test)]
struct Memory<'b>(&'b [Vec<u8>]);

#[cfg(test)]
impl<'b> Source<'b> for Memory<'b> {
    fn count(&self) -> usize {
        self.0.len()
    }

    fn with_part<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, Failure> {
        Ok(f(&self.0[i]))
    }

    fn part(&mut self, i: usize) -> std::result::Result<Cow<'b, [u8]>, Failure> {
        Ok(Cow::Borrowed(&self.0[i]))
    }
}

/// Decodes every part into one device list (in part order), on up to `threads` threads,
/// exactly as the load from the cache does.
#[cfg(test)]
pub(crate) fn decode(
    parts: &[Vec<u8>],
    threads: usize,
) -> std::result::Result<Vec<Device>, Unusable> {
    match decode_parts(&mut Memory(parts), threads) {
        Ok(devices) => Ok(devices),
        Err(Failure::Unusable(unusable)) => Err(unusable),
        Err(Failure::Sql(e)) => Err(damaged(&format!("{e:#}"))),
    }
}

/// Parts in memory that log each read as (part read, part being placed then).
#[cfg(test)]
struct Logged<'b> {
    parts: &'b [Vec<u8>],
    placing: usize,
    reads: Vec<(usize, usize)>,
}

#[cfg(test)]
impl<'b> Source<'b> for Logged<'b> {
    fn count(&self) -> usize {
        self.parts.len()
    }

    fn with_part<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, Failure> {
        self.reads.push((i, self.placing));
        Ok(f(&self.parts[i]))
    }

    fn part(&mut self, i: usize) -> std::result::Result<Cow<'b, [u8]>, Failure> {
        self.reads.push((i, self.placing));
        Ok(Cow::Borrowed(&self.parts[i]))
    }

    fn placing(&mut self, i: usize) {
        self.placing = i;
    }
}

/// What [`decode`] gives, and the log of its reads: (part read, part being placed then).
#[cfg(test)]
type LoggedDecode = (
    std::result::Result<Vec<Device>, Unusable>,
    Vec<(usize, usize)>,
);

/// [`decode`], with the log of its reads.
#[cfg(test)]
pub(crate) fn decode_logged(parts: &[Vec<u8>], threads: usize) -> LoggedDecode {
    let mut source = Logged {
        parts,
        placing: 0,
        reads: Vec::new(),
    };
    let decoded = match decode_parts(&mut source, threads) {
        Ok(devices) => Ok(devices),
        Err(Failure::Unusable(unusable)) => Err(unusable),
        Err(Failure::Sql(e)) => Err(damaged(&format!("{e:#}"))),
    };
    (decoded, source.reads)
}

/// A decoded part, or why it is damaged.
type Decoded = std::result::Result<(Vec<Device>, usize), Unusable>;

/// Decodes every part of `source` into one device list (in part order), on up to `threads`
/// threads, reading each part only when it is due and dropping its bytes once decoded.
///
/// The calling thread reads every part (the source may be a SQLite connection, which stays
/// on it) and decodes part `i` itself when `i % threads == 0`, straight into the fleet's
/// vector; the other parts go round-robin to the other threads, each of which decodes its
/// parts in order into a vector of one part, which the calling thread moves onto the end of
/// the fleet's vector when it comes to that part. The vector is sized once from the first
/// part (every part but the last holds the same number of devices). A worker is sent its
/// parts up to two rounds ahead, so at most a few parts' bytes and decoded devices are held
/// besides the fleet: never every part at once, and never a second copy of half the fleet.
///
/// The damage reported is that of the lowest-numbered damaged part (its header checks
/// first), whatever the threads: parts are taken in order and the first failure stops the
/// load.
fn decode_parts<'b>(
    source: &mut impl Source<'b>,
    threads: usize,
) -> std::result::Result<Vec<Device>, Failure> {
    let count = source.count();
    let total_parts = u32::try_from(count).map_err(|_| damaged("too many parts"))?;
    // One interner for every part: a value is one shared string (or map) across the fleet.
    let shared = std::sync::Mutex::new(convoy_core::fleet::Interner::new());
    let shared = &shared;
    let mut devices: Vec<Device> = Vec::new();
    let mut total = 0usize;
    let threads = threads.clamp(1, count.max(1));
    if threads == 1 {
        for i in 0..count {
            source.placing(i);
            total += source.with_part(i, |bytes| {
                decode_one(i, bytes, total_parts, count - i, &mut devices, shared)
            })??;
        }
        return finish(devices, total);
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stop = &stop;
    std::thread::scope(|scope| -> std::result::Result<(), Failure> {
        let mut jobs = Vec::with_capacity(threads - 1);
        let mut results = Vec::with_capacity(threads - 1);
        let mut handles = Vec::with_capacity(threads - 1);
        for _ in 1..threads {
            let (job_tx, job_rx) = std::sync::mpsc::channel::<(usize, Cow<'b, [u8]>)>();
            let (result_tx, result_rx) = std::sync::mpsc::channel::<Decoded>();
            let spawned = std::thread::Builder::new()
                .name("decode-snapshot".to_owned())
                .spawn_scoped(scope, move || {
                    for (i, bytes) in job_rx {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let mut out = Vec::new();
                        let decoded = decode_one(i, &bytes, total_parts, 1, &mut out, shared)
                            .map(|n| (out, n));
                        drop(bytes);
                        if result_tx.send(decoded).is_err() {
                            break;
                        }
                    }
                });
            // A thread that cannot start leaves its share to the threads that did.
            let Ok(handle) = spawned else { break };
            jobs.push(job_tx);
            results.push(result_rx);
            handles.push(handle);
        }
        let threads = handles.len() + 1;
        // Part `i` is decoded here when `owner(i)` is 0, else by worker `owner(i) - 1`.
        let owner = |i: usize| i % threads;
        let mut sent = 0usize;
        let outcome = (|| -> std::result::Result<(), Failure> {
            for i in 0..count {
                source.placing(i);
                // Keep each worker up to two rounds ahead.
                while sent < count.min(i + 2 * threads) {
                    let w = owner(sent);
                    if w != 0 {
                        let bytes = source.part(sent)?;
                        // A worker that is gone (it panicked) is noticed at its next result.
                        let _ = jobs[w - 1].send((sent, bytes));
                    }
                    sent += 1;
                }
                let w = owner(i);
                if w == 0 {
                    total += source.with_part(i, |bytes| {
                        decode_one(i, bytes, total_parts, count - i, &mut devices, shared)
                    })??;
                } else {
                    // Each worker gets its parts in order and answers in that order, so this
                    // is part `i`.
                    let (mut part, n) = results[w - 1]
                        .recv()
                        .map_err(|_| damaged("a decoder thread panicked"))??;
                    total += n;
                    devices.append(&mut part);
                }
            }
            Ok(())
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(jobs);
        drop(results);
        let mut panicked = false;
        for handle in handles {
            panicked |= handle.join().is_err();
        }
        outcome?;
        if panicked {
            return Err(damaged("a decoder thread panicked").into());
        }
        Ok(())
    })?;
    finish(devices, total)
}

/// Checks part `i` of `parts` and decodes it onto the end of `out`, first making room there
/// for `room_for` parts of its size. Returns how many devices its header says it holds.
fn decode_one(
    i: usize,
    bytes: &[u8],
    parts: u32,
    room_for: usize,
    out: &mut Vec<Device>,
    shared: &std::sync::Mutex<convoy_core::fleet::Interner>,
) -> std::result::Result<usize, Unusable> {
    let header = check_part(bytes).map_err(|d| part_damage(i, &d))?;
    if header.part as usize != i || header.parts != parts {
        return Err(damaged(&format!(
            "part {i} says it is part {} of {} (found {parts})",
            header.part, header.parts
        )));
    }
    decode_part(bytes, &header, room_for, out, shared).map_err(|d| part_damage(i, &d))?;
    Ok(header.devices as usize)
}

/// The fleet's last checks once every part is decoded.
fn finish(mut devices: Vec<Device>, total: usize) -> std::result::Result<Vec<Device>, Failure> {
    if devices.len() != total {
        return Err(damaged("the parts hold fewer devices than their headers say").into());
    }
    // The fleet's invariant, and a last guard against a snapshot that decodes but is wrong.
    if !devices.windows(2).all(|w| w[0].id < w[1].id) {
        return Err(damaged("devices are not in strictly increasing id order").into());
    }
    // Room sized from the first part is at most one part too much (the last is shorter):
    // give it back (the allocator shrinks a vector this large in place).
    devices.shrink_to_fit();
    Ok(devices)
}

fn damaged(why: &str) -> Unusable {
    Unusable::Damaged(why.to_owned())
}

fn part_damage(part: usize, d: &Damage) -> Unusable {
    Unusable::Damaged(format!("part {part}: {} at byte {}", d.what, d.at))
}

/// A 64-bit checksum: four independent multiply-rotate lanes over little-endian words, then
/// the length. Each step is a bijection of the lane for a fixed word and of the word for a
/// fixed lane, so a change confined to one word (any single bit flip) always changes the sum.
fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes: [u64; 4] = [
        0x243F_6A88_85A3_08D3,
        0x1319_8A2E_0370_7344,
        0xA409_3822_299F_31D0,
        0x082E_FA98_EC4E_6C89,
    ];
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            *lane = (*lane ^ u64::from_le_bytes(w))
                .wrapping_mul(PRIME)
                .rotate_left(29);
        }
    }
    let tail = blocks.remainder();
    for (lane, word) in lanes.iter_mut().zip(tail.chunks(8)) {
        let mut w = [0u8; 8];
        w[..word.len()].copy_from_slice(word);
        *lane = (*lane ^ u64::from_le_bytes(w))
            .wrapping_mul(PRIME)
            .rotate_left(29);
    }
    let mut sum = bytes.len() as u64;
    for lane in lanes {
        sum = (sum ^ lane).wrapping_mul(PRIME).rotate_left(31);
    }
    sum
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// The index of `value` in `all` (a `string_enum`'s `ALL`), as one byte.
fn enum_code<T: PartialEq>(all: &[T], value: &T) -> u8 {
    all.iter()
        .position(|v| v == value)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(u8::MAX)
}

/// Strings of one part, each stored once and named by its index. Component versions are
/// stored by their spelling (`1.2` and `1.2.0` compare equal but print differently), keyed by
/// their parts so that each distinct version is printed once.
#[derive(Default)]
struct Interner<'a> {
    strs: HashMap<&'a str, u32, super::FastHash>,
    versions: HashMap<&'a [u32], u32, super::FastHash>,
    table: Vec<Cow<'a, str>>,
}

impl<'a> Interner<'a> {
    fn put(&mut self, out: &mut Vec<u8>, s: &'a str) {
        let next = self.table.len() as u32;
        let i = *self.strs.entry(s).or_insert_with(|| {
            self.table.push(Cow::Borrowed(s));
            next
        });
        put_varint(out, u64::from(i));
    }

    fn put_version(&mut self, out: &mut Vec<u8>, v: &'a Version) {
        let next = self.table.len() as u32;
        let i = *self.versions.entry(v.parts()).or_insert_with(|| {
            self.table.push(Cow::Owned(v.to_string()));
            next
        });
        put_varint(out, u64::from(i));
    }
}

/// One part: header, string table, devices, checksum.
fn encode_part(part: u32, parts: u32, devices: &[Device]) -> Result<Vec<u8>> {
    let mut strings = Interner::default();
    let mut body: Vec<u8> = Vec::with_capacity(devices.len() * 64);
    for d in devices {
        put_varint(&mut body, d.id.len() as u64);
        body.extend_from_slice(d.id.as_bytes());
        strings.put(&mut body, &d.model);
        strings.put(&mut body, &d.hw_rev);
        strings.put(&mut body, &d.region);
        strings.put(&mut body, &d.depot);
        body.push(enum_code(Slot::ALL, &d.active_slot));
        body.push(enum_code(Connectivity::ALL, &d.connectivity));
        body.push(enum_code(PowerState::ALL, &d.power));
        body.push(enum_code(CustomerTier::ALL, &d.customer_tier));
        body.push(enum_code(DeviceClass::ALL, &d.device_class));
        body.push(enum_code(Redundancy::ALL, &d.redundancy));
        body.push(u8::from(d.metered));
        match d.battery_pct {
            None => body.push(0),
            Some(b) => body.extend_from_slice(&[1, b]),
        }
        body.extend_from_slice(&d.position.lat.to_le_bytes());
        body.extend_from_slice(&d.position.lon.to_le_bytes());
        put_varint(&mut body, d.free_storage_bytes);
        body.extend_from_slice(&d.last_seen.secs().to_le_bytes());
        put_varint(&mut body, u64::from(d.failed_update_attempts));
        put_varint(&mut body, d.components.len() as u64);
        for (name, version) in d.components.iter() {
            strings.put(&mut body, name);
            strings.put_version(&mut body, version);
        }
        put_varint(&mut body, d.tags.len() as u64);
        for (key, value) in d.tags.iter() {
            strings.put(&mut body, key);
            strings.put(&mut body, value);
        }
    }
    let mut table: Vec<u8> = Vec::new();
    for s in &strings.table {
        put_varint(&mut table, s.len() as u64);
        table.extend_from_slice(s.as_bytes());
    }
    let total = HEADER_BYTES + table.len() + body.len() + CHECKSUM_BYTES;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    put_u32(&mut out, part);
    put_u32(&mut out, parts);
    put_u32(
        &mut out,
        u32::try_from(devices.len()).context("too many devices in a part")?,
    );
    put_u32(
        &mut out,
        u32::try_from(strings.table.len()).context("too many strings in a part")?,
    );
    out.extend_from_slice(&(total as u64).to_le_bytes());
    out.extend_from_slice(&table);
    out.extend_from_slice(&body);
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

struct Header {
    part: u32,
    parts: u32,
    devices: u32,
    strings: u32,
}

/// Bounds-checked reads from a part.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn fail(&self, what: &'static str) -> Damage {
        Damage { what, at: self.pos }
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], Damage> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.fail("truncated"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> std::result::Result<u8, Damage> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| self.fail("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], Damage> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> std::result::Result<u32, Damage> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn varint(&mut self) -> std::result::Result<u64, Damage> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(self.fail("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(self.fail("varint longer than 10 bytes"));
            }
        }
    }

    fn len(&mut self) -> std::result::Result<usize, Damage> {
        let v = self.varint()?;
        usize::try_from(v).map_err(|_| self.fail("length too large"))
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

/// Checks a part's magic, format, length and checksum, and returns its header.
fn check_part(bytes: &[u8]) -> std::result::Result<Header, Damage> {
    let mut r = Reader { bytes, pos: 0 };
    if bytes.len() < HEADER_BYTES + CHECKSUM_BYTES {
        return Err(r.fail("shorter than a header and a checksum"));
    }
    if r.take(4)? != MAGIC {
        return Err(r.fail("wrong magic"));
    }
    if r.u8()? != FORMAT {
        return Err(r.fail("unknown format"));
    }
    let header = Header {
        part: r.u32()?,
        parts: r.u32()?,
        devices: r.u32()?,
        strings: r.u32()?,
    };
    let total = u64::from_le_bytes(r.array()?);
    if total != bytes.len() as u64 {
        return Err(r.fail("length in the header differs from the part's length"));
    }
    let (content, sum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    let mut stored = [0u8; 8];
    stored.copy_from_slice(sum);
    if checksum(content) != u64::from_le_bytes(stored) {
        return Err(Damage {
            what: "checksum mismatch",
            at: content.len(),
        });
    }
    Ok(header)
}

/// Decodes one part, whose `header` came from [`check_part`], and appends its devices to
/// `out` (after making room there for `room_for` parts of this one's size). Strings, component maps and tag maps come from `shared`, so that every device with
/// the same value shares it: the part's string table is interned once, and a device's
/// components or tags whose encoded bytes were seen before in this part take the map made then.
fn decode_part(
    bytes: &[u8],
    header: &Header,
    room_for: usize,
    out: &mut Vec<Device>,
    shared: &std::sync::Mutex<convoy_core::fleet::Interner>,
) -> std::result::Result<(), Damage> {
    let interner = || match shared.lock() {
        Ok(guard) => guard,
        // A decoder that panicked left nothing half-made in the interner that matters here:
        // every entry is complete when inserted.
        Err(poisoned) => poisoned.into_inner(),
    };
    let content = &bytes[..bytes.len() - CHECKSUM_BYTES];
    let mut r = Reader {
        bytes: content,
        pos: HEADER_BYTES,
    };
    // Counts bound allocations only as far as the bytes can really hold.
    let string_count = header.strings as usize;
    if string_count > r.remaining() {
        return Err(r.fail("more strings than bytes"));
    }
    let mut strings: Vec<&str> = Vec::with_capacity(string_count);
    for _ in 0..string_count {
        let n = r.len()?;
        let s = std::str::from_utf8(r.take(n)?).map_err(|_| r.fail("string is not UTF-8"))?;
        strings.push(s);
    }
    let syms: Vec<Sym> = {
        let mut i = interner();
        strings.iter().map(|s| i.sym(s)).collect()
    };
    let mut versions: Vec<Option<Version>> = vec![None; string_count];
    let mut seen_components: HashMap<&[u8], SmallMap<Version>, super::FastHash> =
        HashMap::default();
    let mut seen_tags: HashMap<&[u8], SmallMap<Sym>, super::FastHash> = HashMap::default();
    let mut entries: Vec<(Sym, Version)> = Vec::new();
    let mut tag_entries: Vec<(Sym, Sym)> = Vec::new();
    let device_count = header.devices as usize;
    if device_count > r.remaining() / MIN_DEVICE_BYTES + 1 {
        return Err(r.fail("more devices than bytes"));
    }
    // Room for `room_for` parts of this size: a hint (the first part sizes the fleet's
    // vector), so a failure to reserve it only means the vector grows as it fills.
    let _ = out.try_reserve(device_count.saturating_mul(room_for.max(1)));
    let string = |r: &mut Reader<'_>| -> std::result::Result<Sym, Damage> {
        let i = r.len()?;
        syms.get(i)
            .cloned()
            .ok_or_else(|| r.fail("string index out of range"))
    };
    macro_rules! enum_field {
        ($r:expr, $ty:ty) => {{
            let code = $r.u8()?;
            *<$ty>::ALL
                .get(usize::from(code))
                .ok_or_else(|| $r.fail(concat!("unknown ", stringify!($ty))))?
        }};
    }
    for _ in 0..device_count {
        let n = r.len()?;
        let id = std::str::from_utf8(r.take(n)?)
            .map_err(|_| r.fail("device id is not UTF-8"))?
            .to_owned();
        let model = string(&mut r)?;
        let hw_rev = string(&mut r)?;
        let region = string(&mut r)?;
        let depot = string(&mut r)?;
        let active_slot = enum_field!(r, Slot);
        let connectivity = enum_field!(r, Connectivity);
        let power = enum_field!(r, PowerState);
        let customer_tier = enum_field!(r, CustomerTier);
        let device_class = enum_field!(r, DeviceClass);
        let redundancy = enum_field!(r, Redundancy);
        let metered = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(r.fail("metered is neither 0 nor 1")),
        };
        let battery_pct = match r.u8()? {
            0 => None,
            1 => Some(r.u8()?),
            _ => return Err(r.fail("battery flag is neither 0 nor 1")),
        };
        let lat = f64::from_le_bytes(r.array()?);
        let lon = f64::from_le_bytes(r.array()?);
        let free_storage_bytes = r.varint()?;
        let last_seen = Timestamp::from_secs(i64::from_le_bytes(r.array()?));
        let failed_update_attempts =
            u32::try_from(r.varint()?).map_err(|_| r.fail("failed_update_attempts too large"))?;
        let components_start = r.pos;
        let component_count = r.len()?;
        if component_count > r.remaining() / 2 {
            return Err(r.fail("more components than bytes"));
        }
        entries.clear();
        for _ in 0..component_count {
            let name = string(&mut r)?;
            let i = r.len()?;
            let version = match versions.get(i) {
                Some(Some(v)) => *v,
                Some(None) => {
                    let v: Version = strings[i]
                        .parse()
                        .map_err(|_| r.fail("component version does not parse"))?;
                    versions[i] = Some(v);
                    v
                }
                None => return Err(r.fail("version index out of range")),
            };
            entries.push((name, version));
        }
        let encoded = &content[components_start..r.pos];
        let components = if let Some(map) = seen_components.get(encoded) {
            map.clone()
        } else {
            let map = interner().components(entries.drain(..).collect());
            seen_components.insert(encoded, map.clone());
            map
        };
        let tags_start = r.pos;
        let tag_count = r.len()?;
        if tag_count > r.remaining() / 2 {
            return Err(r.fail("more tags than bytes"));
        }
        tag_entries.clear();
        for _ in 0..tag_count {
            let key = string(&mut r)?;
            let value = string(&mut r)?;
            tag_entries.push((key, value));
        }
        let encoded = &content[tags_start..r.pos];
        let tags = if let Some(map) = seen_tags.get(encoded) {
            map.clone()
        } else {
            let map = interner().tags(&tag_entries.drain(..).collect());
            seen_tags.insert(encoded, map.clone());
            map
        };
        out.push(Device {
            id,
            model,
            hw_rev,
            components,
            active_slot,
            region,
            depot,
            position: GeoPoint { lat, lon },
            connectivity,
            metered,
            battery_pct,
            power,
            free_storage_bytes,
            customer_tier,
            device_class,
            redundancy,
            last_seen,
            failed_update_attempts,
            tags,
        });
    }
    if r.remaining() != 0 {
        return Err(r.fail("bytes left after the last device"));
    }
    Ok(())
}

/// `content` (a header and body) with its checksum appended, for tests that need a part whose
/// contents are wrong but whose checksum is right.
#[cfg(test)]
pub(crate) fn seal_for_tests(mut content: Vec<u8>) -> Vec<u8> {
    let sum = checksum(&content);
    content.extend_from_slice(&sum.to_le_bytes());
    content
}

/// The staleness triggers, dropped for the length of one bulk write by [`suspend_triggers`].
pub(crate) struct SuspendedTriggers(Vec<String>);

/// For a bulk write of devices (an import of a million rows): marks the snapshot stale once
/// (and the fleet summary's counts invalid), then drops the staleness triggers (and the
/// counts' `_keeps_counts` triggers) inside the caller's write transaction, so that they do
/// not run once per row; [`restore_triggers`] creates them again before the commit. DDL is
/// transactional and the caller holds the write lock, so no other connection ever sees the
/// schema without them, and a crash before the commit rolls the drop back.
pub(crate) fn suspend_triggers(tx: &Connection) -> Result<SuspendedTriggers> {
    tx.execute(
        "UPDATE fleet_state SET generation = generation + 1, armed = 0",
        [],
    )
    .context("marking the fleet snapshot stale")?;
    // The fleet summary's counts (`summary.rs`) are kept by triggers too: they are suspended
    // alike, and the counts rebuilt at the next summary.
    super::summary::invalidate(tx)?;
    let triggers: Vec<(String, String)> = {
        let mut stmt = tx.prepare(
            "SELECT name, sql FROM sqlite_master
             WHERE type = 'trigger' AND (name LIKE '%\\_stales\\_snapshot' ESCAPE '\\'
                                         OR name LIKE '%\\_keeps\\_counts' ESCAPE '\\')
             ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (name, _) in &triggers {
        tx.execute_batch(&format!("DROP TRIGGER \"{name}\""))
            .with_context(|| format!("suspending trigger {name}"))?;
    }
    Ok(SuspendedTriggers(
        triggers.into_iter().map(|(_, sql)| sql).collect(),
    ))
}

/// Creates the triggers that [`suspend_triggers`] dropped, in the same transaction.
pub(crate) fn restore_triggers(tx: &Connection, suspended: SuspendedTriggers) -> Result<()> {
    for sql in suspended.0 {
        tx.execute_batch(&sql)
            .with_context(|| format!("restoring a fleet snapshot trigger: {sql}"))?;
    }
    Ok(())
}
