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
    write_value(value, &mut out, &mut String::from("$"), Form::Signed)?;
    Ok(out)
}

/// The canonical form as JSON text, for serving: the same bytes as [`encode`] except that
/// control characters in strings are escaped as RFC 8259 requires (`\n`, `\u001f`, exactly as
/// serde_json escapes them), since raw ones are not JSON and strict parsers refuse them. A value
/// with no control character in any string has the same bytes in both forms; reading either back
/// gives the same value, so the signature over [`encode`] of it still verifies.
pub fn encode_text(value: &Value) -> Result<Vec<u8>, CanonicalJsonError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out, &mut String::from("$"), Form::Text)?;
    Ok(out)
}

/// How strings are written: the signed form carries control characters raw, the served text
/// escapes them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Signed,
    Text,
}

fn write_value(
    value: &Value,
    out: &mut Vec<u8>,
    path: &mut String,
    form: Form,
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
        Value::String(s) => write_string(s, out, form),
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
                write_value(item, out, path, form)?;
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
                write_string(key, out, form);
                out.push(b':');
                let len = path.len();
                path.push('.');
                path.push_str(key);
                write_value(item, out, path, form)?;
                path.truncate(len);
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>, form: Form) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0..0x20 if form == Form::Text => match b {
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                _ => out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]),
            },
            _ => out.push(b),
        }
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

    #[test]
    fn the_served_text_escapes_control_characters_and_nothing_else() {
        let v = json!({"b": "line\nbreak\u{1}\t\"q\"\\", "a": [1, "é/"]});
        let signed = encode(&v).expect("signed");
        let text = encode_text(&v).expect("text");
        assert_eq!(
            String::from_utf8(text.clone()).expect("utf-8"),
            r#"{"a":[1,"é/"],"b":"line\nbreak\u0001\t\"q\"\\"}"#
        );
        assert!(
            serde_json::from_slice::<Value>(&signed).is_err(),
            "raw controls are not JSON"
        );
        let back: Value = serde_json::from_slice(&text).expect("served text is JSON");
        assert_eq!(
            encode(&back).expect("again"),
            signed,
            "it reads back to the signed value"
        );
        let plain = json!({"z": {"y": "no controls"}, "a": -1});
        assert_eq!(encode_text(&plain), encode(&plain));
    }

    proptest::proptest! {
        /// The served text is JSON that reads back to the same value, byte for byte what
        /// serde_json writes for a value with sorted keys (so a JSON value built from it and
        /// written again inside another document, as the MQTT offer does, keeps these bytes).
        #[test]
        fn served_text_round_trips(
            kv in proptest::collection::vec(("[a-z\\x00-\\x1f\"\\\\é]{0,6}", "[a-z\\x00-\\x1f\"\\\\é/]{0,8}"), 0..6),
            n in proptest::prelude::any::<i64>(),
        ) {
            let mut map = serde_json::Map::new();
            for (k, s) in kv {
                map.insert(k, Value::String(s));
            }
            map.insert("n".into(), n.into());
            let v = Value::Object(map);
            let text = encode_text(&v).expect("integers only");
            let back: Value = serde_json::from_slice(&text).expect("JSON");
            proptest::prop_assert_eq!(&back, &v);
            proptest::prop_assert_eq!(serde_json::to_vec(&v).expect("serde"), text);
        }
    }
}
