//! Canonical JSON (the OLPC form TUF uses): the one byte string a JSON value is signed as.
//!
//! The rules: no insignificant whitespace; object keys sorted by Unicode code point (the byte
//! order of their UTF-8); strings escape only `\` and `"` and carry every other character,
//! control characters included, as raw UTF-8; numbers are integers only. serde_json's compact
//! output looks close but escapes control characters and accepts floats, so signatures made over
//! it would not match what python-tuf and other TUF clients compute.
//!
//! This module only encodes; it deliberately is not a parser (any JSON parser reads canonical
//! JSON), and it never sorts arrays: their order is part of the data.

use serde::Serialize;
use serde_json::Value;

/// Why a value has no canonical JSON form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalJsonError {
    /// Canonical JSON has integers only; the value holds a fraction or exponent.
    #[error("canonical JSON allows integers only, found the number {number} at {path}")]
    NotAnInteger { number: String, path: String },
    /// The value could not be turned into JSON at all (serde reported an error).
    #[error("value does not serialise to JSON: {0}")]
    Serialize(String),
}

/// The canonical JSON bytes of any serialisable value.
pub fn to_canonical_bytes<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalJsonError> {
    let value =
        serde_json::to_value(value).map_err(|e| CanonicalJsonError::Serialize(e.to_string()))?;
    encode(&value)
}

/// The canonical JSON bytes of a JSON value.
pub fn encode(value: &Value) -> Result<Vec<u8>, CanonicalJsonError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out, &mut String::from("$"))?;
    Ok(out)
}

fn write_value(
    value: &Value,
    out: &mut Vec<u8>,
    path: &mut String,
) -> Result<(), CanonicalJsonError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(CanonicalJsonError::NotAnInteger {
                    number: n.to_string(),
                    path: path.clone(),
                });
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let len = path.len();
                path.push('[');
                path.push_str(&i.to_string());
                path.push(']');
                write_value(item, out, path)?;
                path.truncate(len);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sort explicitly: serde_json's map keeps insertion order when another crate in the
            // build turns on its `preserve_order` feature.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                let len = path.len();
                path.push('.');
                path.push_str(key);
                write_value(item, out, path)?;
                path.truncate(len);
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: &Value, expected: &str) {
        let bytes = encode(value).expect("canonical");
        assert_eq!(String::from_utf8(bytes).expect("utf-8"), expected);
    }

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        check(
            &json!({"b": 1, "a": [true, null, "x"], "A": {"z": -3, "y": 18_446_744_073_709_551_615_u64}}),
            r#"{"A":{"y":18446744073709551615,"z":-3},"a":[true,null,"x"],"b":1}"#,
        );
    }

    #[test]
    fn escapes_only_quote_and_backslash() {
        // A newline, a tab and a control character stay raw; only `"` and `\` are escaped.
        check(
            &json!({"k": "a\"b\\c\nd\te\u{1}é"}),
            "{\"k\":\"a\\\"b\\\\c\nd\te\u{1}é\"}",
        );
    }

    #[test]
    fn keys_sort_by_code_point() {
        // "é" (U+00E9) sorts after "z"; "Z" before "a".
        check(
            &json!({"é": 1, "z": 2, "a": 3, "Z": 4}),
            r#"{"Z":4,"a":3,"z":2,"é":1}"#,
        );
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((any::<String>(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Canonical bytes are valid JSON that parses back to the same value, and encoding the
        /// parsed value again gives the same bytes.
        #[test]
        fn canonical_bytes_round_trip(v in arb_json()) {
            let bytes = encode(&v).expect("integers only");
            let back: Value = serde_json::from_slice(&bytes).expect("canonical JSON is JSON");
            proptest::prop_assert_eq!(&back, &v);
            proptest::prop_assert_eq!(encode(&back).expect("again"), bytes);
        }
    }

    #[test]
    fn rejects_floats_with_their_path() {
        let err = encode(&json!({"a": [1, 2.5]})).expect_err("float");
        assert_eq!(
            err,
            CanonicalJsonError::NotAnInteger {
                number: "2.5".into(),
                path: "$.a[1]".into()
            }
        );
    }

    #[test]
    fn field_order_in_the_source_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"x":1,"y":{"p":2,"q":3}}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{ "y": {"q": 3, "p": 2}, "x": 1 }"#).expect("json");
        assert_eq!(encode(&a).expect("a"), encode(&b).expect("b"));
    }
}
