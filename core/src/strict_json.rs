//! Strict JSON reading: a document Convoy trusts has exactly one reading.
//!
//! RFC 8259 leaves an object with the same key twice to the parser: serde_json keeps the last
//! value, other parsers keep the first or refuse. A signed manifest of the form
//! `{"signed": EVIL, "signed": REAL, ...}` would then verify here (REAL) while a device that keeps
//! the first value installs EVIL. Every signed or trust-bearing document (manifests, key sets,
//! TUF metadata read back, policy, fleet, finding and fault files) is read through this module,
//! which refuses any object, at any depth, that names a key twice, and says which key and where
//! (a JSON path such as `$.signed.artifacts[0].sha256`, and the line and column).
//!
//! Keys are compared after unescaping, so `"a"` and `"\u0061"` are the same key. Everything else
//! (numbers, strings, nesting limits, trailing characters) is exactly serde_json's reading: the
//! check is one extra pass with serde_json's own parser, and the value or type is then read by
//! serde_json as before, so big numbers, floats and error messages do not change.
//!
//! This module deliberately does no I/O and no size limiting: callers bound what they read.

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

/// Why a document was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    /// An object names the same key twice, so the document has more than one reading.
    #[error(
        "duplicate key {key:?} at {path} (line {line}, column {column}): an object names it twice, so the document has more than one reading"
    )]
    DuplicateKey {
        /// The key, unescaped.
        key: String,
        /// Where the second occurrence is, as a JSON path (`$.signed.release.counter`).
        path: String,
        line: usize,
        column: usize,
    },
    /// Not JSON, or not the expected shape (serde_json's message, with its line and column).
    #[error("{0}")]
    Json(String),
}

/// Checks that `bytes` are one JSON value (serde_json's grammar) in which no object has a
/// duplicate key.
pub fn check(bytes: &[u8]) -> Result<(), StrictJsonError> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = Check {
        path: Path::Root,
        found: &found,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    result.map_err(|e| match found.into_inner() {
        Some((key, path)) => StrictJsonError::DuplicateKey {
            key,
            path,
            line: e.line(),
            column: e.column(),
        },
        None => StrictJsonError::Json(e.to_string()),
    })
}

/// Reads a `T` from JSON bytes with no duplicate key anywhere.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StrictJsonError> {
    check(bytes)?;
    serde_json::from_slice(bytes).map_err(|e| StrictJsonError::Json(e.to_string()))
}

/// Reads a `T` from JSON text with no duplicate key anywhere.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, StrictJsonError> {
    from_slice(text.as_bytes())
}

/// Reads a JSON value with no duplicate key anywhere (numbers as serde_json reads them).
pub fn value_from_slice(bytes: &[u8]) -> Result<serde_json::Value, StrictJsonError> {
    from_slice(bytes)
}

/// Where a value is in the document: a list on the stack, rendered only when a duplicate is
/// found, so checking allocates nothing per value.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("$"),
            Path::Key(parent, key) => {
                parent.fmt(f)?;
                let plain = key
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if plain {
                    write!(f, ".{key}")
                } else {
                    // A key that is not an identifier is written as a JSON string in brackets.
                    let quoted = serde_json::to_string(key).unwrap_or_default();
                    write!(f, "[{quoted}]")
                }
            }
            Path::Index(parent, i) => {
                parent.fmt(f)?;
                write!(f, "[{i}]")
            }
        }
    }
}

/// The duplicate found, if any: `(key, path)`. serde's errors carry only a message, so the
/// details travel beside the error and are joined with serde_json's line and column after.
type Found = RefCell<Option<(String, String)>>;

/// Objects with more keys than this are checked with a hash set instead of a linear scan.
const LINEAR_KEYS: usize = 16;

struct Check<'p, 'f> {
    path: Path<'p>,
    found: &'f Found,
}

impl<'de> DeserializeSeed<'de> for Check<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_i128<E>(self, _: i128) -> Result<(), E> {
        Ok(())
    }

    fn visit_u128<E>(self, _: u128) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Check {
                path: Path::Index(&self.path, i),
                found: self.found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut few: Vec<Cow<'de, str>> = Vec::new();
        let mut many: Option<HashSet<Cow<'de, str>>> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let seen = match &many {
                Some(set) => set.contains(&key),
                None => few.contains(&key),
            };
            if seen {
                let path = Path::Key(&self.path, &key).to_string();
                *self.found.borrow_mut() = Some((key.into_owned(), path));
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(Check {
                path: Path::Key(&self.path, &key),
                found: self.found,
            })?;
            match &mut many {
                Some(set) => {
                    set.insert(key);
                }
                None if few.len() < LINEAR_KEYS => few.push(key),
                None => {
                    let mut set: HashSet<Cow<'de, str>> = few.drain(..).collect();
                    set.insert(key);
                    many = Some(set);
                }
            }
        }
        Ok(())
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The error for `text`, which must be a duplicate: `(key, path, line, column)`.
    fn duplicate(text: &str) -> (String, String, usize, usize) {
        match check(text.as_bytes()) {
            Err(StrictJsonError::DuplicateKey {
                key,
                path,
                line,
                column,
            }) => (key, path, line, column),
            other => panic!("expected a duplicate key in {text}, got {other:?}"),
        }
    }

    #[test]
    fn a_duplicate_at_the_top_level_is_named_with_its_path_line_and_column() {
        let text = "{\"signed\": {\"a\": 1},\n \"signed\": {\"a\": 2}, \"signatures\": []}";
        assert_eq!(duplicate(text), ("signed".into(), "$.signed".into(), 2, 9));
        // serde_json alone keeps the last one: the reading this module exists to refuse.
        let lax: Value = serde_json::from_str(text).expect("serde_json reads it");
        assert_eq!(lax["signed"]["a"], 2);
        let err = check(text.as_bytes()).expect_err("dup").to_string();
        assert!(
            err.contains("duplicate key \"signed\" at $.signed (line 2, column 9)"),
            "{err}"
        );
    }

    #[test]
    fn duplicates_nested_in_objects_and_arrays_are_found_at_any_depth() {
        let (key, path, ..) = duplicate(
            r#"{"signed": {"release": {"artifacts": [{"name": "fw"}, {"sha256": "a", "len": 1, "sha256": "b"}]}}}"#,
        );
        assert_eq!(key, "sha256");
        assert_eq!(path, "$.signed.release.artifacts[1].sha256");
        let (_, path, ..) = duplicate(r#"[[1, {"x": {"y": 1, "y": 2}}]]"#);
        assert_eq!(path, "$[0][1].x.y");
        let (_, path, ..) = duplicate(r#"{"a b": {"k": 1, "k": 1}}"#);
        assert_eq!(
            path, "$[\"a b\"].k",
            "the same value twice is still a duplicate"
        );
    }

    #[test]
    fn keys_are_compared_after_unescaping() {
        let (key, path, ..) = duplicate(r#"{"a": 1, "\u0061": 2}"#);
        assert_eq!((key.as_str(), path.as_str()), ("a", "$.a"));
        let (key, ..) = duplicate(r#"{"x\"y": 1, "x\u0022y": 2}"#);
        assert_eq!(key, "x\"y");
        // Keys that differ only by case or by a trailing space are different keys.
        check(br#"{"a": 1, "A": 2, "a ": 3}"#).expect("distinct keys");
    }

    #[test]
    fn large_objects_switch_to_a_set_and_still_find_the_duplicate() {
        let mut text = String::from("{");
        for i in 0..100 {
            text += &["\"k", &i.to_string(), "\": 0,"].concat();
        }
        check(format!("{text}\"end\": 0}}").as_bytes()).expect("100 distinct keys");
        let (key, ..) = duplicate(&format!("{text}\"k3\": 0}}"));
        assert_eq!(key, "k3");
        let (key, ..) = duplicate(&format!("{text}\"k99\": 0}}"));
        assert_eq!(key, "k99");
    }

    #[test]
    fn the_same_key_in_different_objects_is_fine_and_values_read_as_serde_json_reads_them() {
        let text = r#"{"a": {"id": 1}, "b": {"id": 2}, "list": [{"id": 3}, {"id": 4}],
            "big": 18446744073709551615, "neg": -9223372036854775808,
            "bigger": 123456789012345678901234567890, "f": 0.1, "s": "\u00e9\n"}"#;
        let strict = value_from_slice(text.as_bytes()).expect("strict");
        let lax: Value = serde_json::from_str(text).expect("lax");
        assert_eq!(strict, lax);
        assert_eq!(strict["big"].as_u64(), Some(u64::MAX));
        assert_eq!(strict["neg"].as_i64(), Some(i64::MIN));
    }

    #[test]
    fn syntax_errors_keep_serde_json_messages() {
        for bad in [
            "",
            "{",
            r#"{"a": 1,}"#,
            r#"{"a": 1} x"#,
            "[1, 2",
            "{\"a\": \"\u{1}\"}",
        ] {
            let strict = check(bad.as_bytes()).expect_err(bad);
            let lax = serde_json::from_str::<Value>(bad).expect_err(bad);
            assert_eq!(strict, StrictJsonError::Json(lax.to_string()), "{bad:?}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(
            check(deep.as_bytes()).is_err(),
            "serde_json's depth limit applies"
        );
    }

    #[test]
    fn typed_reads_refuse_duplicates_in_maps_serde_would_merge() {
        use std::collections::BTreeMap;
        let ok: BTreeMap<String, u32> = from_str(r#"{"a": 1, "b": 2}"#).expect("ok");
        assert_eq!(ok.len(), 2);
        let lax: BTreeMap<String, u32> = serde_json::from_str(r#"{"a": 1, "a": 2}"#).expect("lax");
        assert_eq!(lax["a"], 2);
        let err = from_str::<BTreeMap<String, u32>>(r#"{"a": 1, "a": 2}"#).expect_err("dup");
        assert!(matches!(err, StrictJsonError::DuplicateKey { .. }), "{err}");
        let err = from_str::<BTreeMap<String, u32>>(r#"{"a": "x"}"#).expect_err("shape");
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    /// The cost on a 100,000-device JSON fleet, against serde_json's own read into a `Value`
    /// (`cargo test -p convoy_core --release --lib -- --ignored strict_json_cost`).
    #[test]
    #[ignore = "a measurement, run by hand in release mode"]
    fn strict_json_cost_on_a_100k_device_fleet() {
        use crate::synth::{SynthOptions, generate};
        let fleet = generate(&SynthOptions {
            devices: 100_000,
            seed: 1,
            now: crate::time::Timestamp::from_secs(1_795_000_000),
        });
        let bytes = serde_json::to_vec(&fleet).expect("json");
        let t = std::time::Instant::now();
        check(&bytes).expect("no duplicates");
        let strict = t.elapsed();
        let t = std::time::Instant::now();
        let _: Value = serde_json::from_slice(&bytes).expect("json");
        let lax = t.elapsed();
        eprintln!(
            "{} bytes: strict check {strict:?}, serde_json Value {lax:?}",
            bytes.len()
        );
    }
}
