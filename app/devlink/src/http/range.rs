//! The pure rules of artifact HTTP: byte ranges (RFC 9110 §14), `Content-Range`, entity tags,
//! and request paths that may only name files under the served root.
//!
//! No I/O here, so every rule is tested on its own and fuzzed (`fuzz_targets`). What this module
//! deliberately does not do: multi-range requests (a request for several ranges is served whole,
//! which RFC 9110 allows), and weak entity tags (artifacts are compared byte for byte).

use std::fmt;

/// What a `GET` with an optional `Range` header gets from a file of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No range, or a range this server ignores (malformed, several ranges): 200, the whole file.
    Full,
    /// 206 with `Content-Range: bytes start-end/len`; `end` is inclusive.
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Resolves a `Range` header value against a file of `len` bytes.
///
/// `bytes=a-b`, `bytes=a-` and `bytes=-n` are understood; `b` past the end is clamped to the
/// last byte, and a suffix longer than the file is the whole file (as a 206). A range starting at
/// or past the end, a zero-length suffix, or any range of an empty file is unsatisfiable. A
/// header that is not one well-formed byte range (another unit, `a > b`, garbage, several ranges)
/// is ignored, as RFC 9110 §14.2 permits.
pub fn resolve_range(header: Option<&str>, len: u64) -> RangeAnswer {
    let Some(header) = header else {
        return RangeAnswer::Full;
    };
    let Some(spec) = parse_byte_range(header) else {
        return RangeAnswer::Full;
    };
    match spec {
        ByteRange::From { start, end } => {
            if start >= len {
                return RangeAnswer::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            RangeAnswer::Partial { start, end }
        }
        ByteRange::Suffix { len: suffix } => {
            if suffix == 0 || len == 0 {
                return RangeAnswer::Unsatisfiable;
            }
            RangeAnswer::Partial {
                start: len.saturating_sub(suffix),
                end: len - 1,
            }
        }
    }
}

/// One byte range as written in a `Range` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-end` or `bytes=start-`.
    From { start: u64, end: Option<u64> },
    /// `bytes=-len`: the last `len` bytes.
    Suffix { len: u64 },
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteRange::From {
                start,
                end: Some(end),
            } => write!(f, "bytes={start}-{end}"),
            ByteRange::From { start, end: None } => write!(f, "bytes={start}-"),
            ByteRange::Suffix { len } => write!(f, "bytes=-{len}"),
        }
    }
}

/// Parses a `Range` header holding exactly one well-formed byte range; `None` otherwise.
pub fn parse_byte_range(header: &str) -> Option<ByteRange> {
    let (unit, set) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return None;
    }
    let (first, last) = set.trim().split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return Some(ByteRange::Suffix {
            len: parse_digits(last)?,
        });
    }
    let start = parse_digits(first)?;
    if last.is_empty() {
        return Some(ByteRange::From { start, end: None });
    }
    let end = parse_digits(last)?;
    (start <= end).then_some(ByteRange::From {
        start,
        end: Some(end),
    })
}

/// Digits only (no sign, no spaces inside), at most what fits a `u64`.
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A parsed `Content-Range` header of a 206 or 416 response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes start-end/total` (`total` is `None` for `*`).
    Bytes {
        start: u64,
        end: u64,
        total: Option<u64>,
    },
    /// `bytes */total`, as a 416 carries.
    Unsatisfied { total: u64 },
}

/// Parses `Content-Range`; `None` when malformed (including `end < start` or `end >= total`).
pub fn parse_content_range(header: &str) -> Option<ContentRange> {
    let rest = header.trim().strip_prefix("bytes ")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    if range == "*" {
        return Some(ContentRange::Unsatisfied {
            total: parse_digits(total)?,
        });
    }
    let (start, end) = range.split_once('-')?;
    let (start, end) = (parse_digits(start)?, parse_digits(end)?);
    let total = if total == "*" {
        None
    } else {
        Some(parse_digits(total)?)
    };
    if end < start || total.is_some_and(|t| end >= t) {
        return None;
    }
    Some(ContentRange::Bytes { start, end, total })
}

/// The entity tag of an artifact: its lowercase hex SHA-256, quoted (a strong validator).
pub fn etag_of(sha256_hex: &str) -> String {
    format!("\"{sha256_hex}\"")
}

/// Whether an `If-Range` value lets a range be served: only a strong entity tag equal to the
/// current one does (a date or a weak tag never matches, so the client gets the whole file).
pub fn if_range_matches(if_range: &str, current_etag: &str) -> bool {
    let v = if_range.trim();
    !v.starts_with("W/") && v == current_etag
}

/// Whether an `ETag` header value is a strong entity tag (quoted, not `W/`), the only kind a
/// client may send back in `If-Range`.
pub fn is_strong_etag(value: &str) -> bool {
    let v = value.trim();
    v.len() >= 2
        && v.starts_with('"')
        && v.ends_with('"')
        && !v[1..v.len() - 1].contains('"')
        && v.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// Why a request path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathRejection {
    /// The path does not start with `/` (not origin-form).
    #[error("the path does not start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding in the path")]
    BadEncoding,
    /// The decoded path is not UTF-8.
    #[error("the path is not UTF-8 once decoded")]
    NotUtf8,
    /// A segment that is empty, `.` or `..`, or holds `/`, `\`, NUL or a control character once
    /// decoded: every way of stepping out of the root or of naming something else.
    #[error("path segment {0:?} is not allowed")]
    BadSegment(String),
    /// Nothing after the `/`.
    #[error("no file named")]
    Empty,
    /// Deeper than [`MAX_SEGMENTS`] levels or longer than [`MAX_PATH_BYTES`].
    #[error("the path is too long")]
    TooLong,
}

/// Paths deeper than this are refused.
pub const MAX_SEGMENTS: usize = 16;
/// Paths longer than this (encoded) are refused.
pub const MAX_PATH_BYTES: usize = 1024;

/// Splits an origin-form request path (`uri.path()`, without the query) into decoded segments
/// that can be joined under a root without leaving it. Every segment is decoded once, and the
/// checks run on the decoded text, so `%2e%2e`, `%2f` and `%5c` are caught like their plain forms.
pub fn sanitize_path(raw: &str) -> Result<Vec<String>, PathRejection> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathRejection::TooLong);
    }
    let rest = raw.strip_prefix('/').ok_or(PathRejection::NotAbsolute)?;
    if rest.is_empty() {
        return Err(PathRejection::Empty);
    }
    let mut segments = Vec::new();
    for raw_segment in rest.split('/') {
        if segments.len() == MAX_SEGMENTS {
            return Err(PathRejection::TooLong);
        }
        let bytes = percent_decode(raw_segment)?;
        let segment = String::from_utf8(bytes).map_err(|_| PathRejection::NotUtf8)?;
        let bad = segment.is_empty()
            || segment == "."
            || segment == ".."
            || segment
                .chars()
                .any(|c| c == '/' || c == '\\' || c.is_control());
        if bad {
            return Err(PathRejection::BadSegment(segment));
        }
        segments.push(segment);
    }
    Ok(segments)
}

fn percent_decode(text: &str) -> Result<Vec<u8>, PathRejection> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathRejection::BadEncoding)?;
            let hi = hex_value(hex[0]).ok_or(PathRejection::BadEncoding)?;
            let lo = hex_value(hex[1]).ok_or(PathRejection::BadEncoding)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes one path segment for a URL (everything but unreserved characters).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: Option<&str>, len: u64, expected: RangeAnswer) {
        assert_eq!(resolve_range(header, len), expected, "{header:?} of {len}");
    }

    #[test]
    fn ranges_resolve_as_rfc_9110_says() {
        use RangeAnswer::{Full, Partial, Unsatisfiable};
        check(None, 100, Full);
        check(Some("bytes=0-9"), 100, Partial { start: 0, end: 9 });
        check(Some("bytes=90-"), 100, Partial { start: 90, end: 99 });
        check(Some("bytes=90-1000"), 100, Partial { start: 90, end: 99 });
        check(Some("bytes=-10"), 100, Partial { start: 90, end: 99 });
        check(Some("bytes=-1000"), 100, Partial { start: 0, end: 99 });
        check(Some("bytes=99-99"), 100, Partial { start: 99, end: 99 });
        check(Some("BYTES = 5 - 6"), 100, Partial { start: 5, end: 6 });
        check(Some("bytes=100-"), 100, Unsatisfiable);
        check(Some("bytes=100-200"), 100, Unsatisfiable);
        check(Some("bytes=-0"), 100, Unsatisfiable);
        check(Some("bytes=0-"), 0, Unsatisfiable);
        check(Some("bytes=-5"), 0, Unsatisfiable);
        // Ignored: served whole.
        check(Some("bytes=9-0"), 100, Full);
        check(Some("bytes=0-1,5-6"), 100, Full);
        check(Some("items=0-9"), 100, Full);
        check(Some("bytes=a-b"), 100, Full);
        check(Some("bytes=-"), 100, Full);
        check(Some("bytes=+1-2"), 100, Full);
        check(Some("bytes=99999999999999999999-"), 100, Full);
        check(Some(""), 100, Full);
    }

    #[test]
    fn content_range_parses_and_refuses_nonsense() {
        assert_eq!(
            parse_content_range("bytes 5-9/100"),
            Some(ContentRange::Bytes {
                start: 5,
                end: 9,
                total: Some(100)
            })
        );
        assert_eq!(
            parse_content_range("bytes */100"),
            Some(ContentRange::Unsatisfied { total: 100 })
        );
        assert_eq!(
            parse_content_range("bytes 5-9/*"),
            Some(ContentRange::Bytes {
                start: 5,
                end: 9,
                total: None
            })
        );
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("bytes 5-100/100"), None);
        assert_eq!(parse_content_range("items 5-9/100"), None);
        assert_eq!(parse_content_range("bytes 5-9"), None);
    }

    #[test]
    fn if_range_needs_the_same_strong_tag() {
        let tag = etag_of("ab12");
        assert!(if_range_matches("\"ab12\"", &tag));
        assert!(!if_range_matches("W/\"ab12\"", &tag));
        assert!(!if_range_matches("\"ab13\"", &tag));
        assert!(!if_range_matches("Wed, 21 Oct 2015 07:28:00 GMT", &tag));
        assert!(is_strong_etag("\"ab12\""));
        assert!(!is_strong_etag("W/\"ab12\""));
        assert!(!is_strong_etag("ab12"));
        assert!(!is_strong_etag("\""));
    }

    #[test]
    fn traversal_is_refused_in_every_spelling() {
        for bad in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/a/./b",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/secret",
            "/.%2e/secret",
            "/a%2f..%2f..%2fsecret",
            "/a%5c..%5csecret",
            "/..\\secret",
            "//etc/passwd",
            "/a//b",
            "/a/",
            "/",
            "etc/passwd",
            "/%00",
            "/a%0a",
            "/%zz",
            "/%2",
            "/%ff%fe",
        ] {
            assert!(sanitize_path(bad).is_err(), "{bad:?} was accepted");
        }
        let deep = format!("/{}", vec!["a"; MAX_SEGMENTS + 1].join("/"));
        assert_eq!(sanitize_path(&deep), Err(PathRejection::TooLong));
    }

    #[test]
    fn good_paths_decode_to_segments() {
        assert_eq!(
            sanitize_path("/fw-2.5.0.bin").expect("plain"),
            vec!["fw-2.5.0.bin".to_owned()]
        );
        assert_eq!(
            sanitize_path("/t300/fw%202.5.0.bin").expect("encoded space"),
            vec!["t300".to_owned(), "fw 2.5.0.bin".to_owned()]
        );
        assert_eq!(
            sanitize_path("/..hidden").expect("dots inside a name"),
            vec!["..hidden".to_owned()]
        );
        let name = "fw 2.5.0+b/ü.bin";
        assert_eq!(
            sanitize_path(&format!("/{}", encode_segment(name))),
            Err(PathRejection::BadSegment(name.to_owned()))
        );
        let ok = "fw 2.5.0+ü.bin";
        assert_eq!(
            sanitize_path(&format!("/{}", encode_segment(ok))).expect("round trip"),
            vec![ok.to_owned()]
        );
    }
}
