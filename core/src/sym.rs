//! Shared strings for the fleet's low-cardinality fields.
//!
//! A million devices carry a few hundred distinct models, hardware revisions, regions, depots,
//! component names and tag keys and values. A [`Sym`] is one of those strings shared by every
//! device that carries it: a reference-counted `str`, so a device row holds a pointer instead
//! of its own heap copy, and two devices' values compare equal by pointer before any byte is
//! read. An [`Interner`] hands out one `Sym` per distinct string (and one shared component or
//! tag map per distinct map); every loader of a fleet interns through one (`Fleet::new` does).
//!
//! A `Sym` behaves as its string everywhere the output can see it: equality, ordering, hashing,
//! `Display`, `Debug` and serde are those of the `str`, so a fleet of `Sym`s plans, scores and
//! serialises byte for byte as one of `String`s.

use crate::fasthash::FastSet;
use crate::fleet::SmallMap;
use crate::version::Version;
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

/// A shared, immutable string (see the module's opening).
#[derive(Clone)]
pub struct Sym(Arc<str>);

impl Sym {
    pub fn new(s: &str) -> Self {
        Self(Arc::from(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether both are the same shared string (interned values of one load are).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The address of the shared bytes: an identity for dictionaries built over one load.
    pub fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

impl Default for Sym {
    fn default() -> Self {
        Self::new("")
    }
}

impl Deref for Sym {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Sym {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Sym {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Sym {
    fn eq(&self, other: &Self) -> bool {
        self.ptr_eq(other) || *self.0 == *other.0
    }
}

impl Eq for Sym {}

impl PartialOrd for Sym {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sym {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.ptr_eq(other) {
            std::cmp::Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl Hash for Sym {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Sym {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Sym {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Sym {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Sym> for str {
    fn eq(&self, other: &Sym) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Sym> for &str {
    fn eq(&self, other: &Sym) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Sym> for String {
    fn eq(&self, other: &Sym) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for Sym {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<&Sym> for Sym {
    fn from(s: &Sym) -> Self {
        s.clone()
    }
}

impl From<&String> for Sym {
    fn from(s: &String) -> Self {
        Self::new(s)
    }
}

impl From<String> for Sym {
    fn from(s: String) -> Self {
        Self(Arc::from(s))
    }
}

impl From<Sym> for String {
    fn from(s: Sym) -> Self {
        s.as_str().to_owned()
    }
}

impl From<&Sym> for String {
    fn from(s: &Sym) -> Self {
        s.as_str().to_owned()
    }
}

impl Serialize for Sym {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Sym {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::new(&s))
    }
}

/// A component map keyed by its exact spelling: `2.0` and `2.0.0` are equal versions but
/// are kept apart here, so a shared map never changes what a device shows.
struct ExactComponents(SmallMap<Version>);

impl PartialEq for ExactComponents {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .all(|((ka, va), (kb, vb))| ka == kb && va.parts() == vb.parts())
    }
}

impl Eq for ExactComponents {}

impl Hash for ExactComponents {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.len());
        for (k, v) in self.0.iter() {
            k.hash(state);
            v.parts().hash(state);
        }
    }
}

/// One shared value per distinct string, component map and tag map of a load.
///
/// Keys are hashed with the core's fast hasher: a load's own strings, never a map whose
/// iteration order reaches an output.
#[derive(Default)]
pub struct Interner {
    strings: FastSet<Sym>,
    components: FastSet<ExactComponents>,
    tags: FastSet<SmallMap<Sym>>,
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared `Sym` for `s`.
    pub fn sym(&mut self, s: &str) -> Sym {
        if let Some(k) = self.strings.get(s) {
            return k.clone();
        }
        let k = Sym::new(s);
        self.strings.insert(k.clone());
        k
    }

    /// The shared `Sym` equal to `s` (`s` itself when it is the first of its value).
    pub fn intern(&mut self, s: &Sym) -> Sym {
        if let Some(k) = self.strings.get(s.as_str()) {
            return k.clone();
        }
        self.strings.insert(s.clone());
        s.clone()
    }

    /// The shared component map equal (exactly, see [`ExactComponents`]) to `map`, whose names
    /// are interned.
    pub fn components(&mut self, map: SmallMap<Version>) -> SmallMap<Version> {
        let key = ExactComponents(map);
        if let Some(k) = self.components.get(&key) {
            return k.0.clone();
        }
        let map: SmallMap<Version> = key.0.iter().map(|(name, v)| (self.sym(name), *v)).collect();
        self.components.insert(ExactComponents(map.clone()));
        map
    }

    /// The shared tag map equal to `map`, whose keys and values are interned.
    pub fn tags(&mut self, map: &SmallMap<Sym>) -> SmallMap<Sym> {
        if let Some(k) = self.tags.get(map) {
            return k.clone();
        }
        let map: SmallMap<Sym> = map
            .iter()
            .map(|(key, value)| (self.sym(key), self.intern(value)))
            .collect();
        self.tags.insert(map.clone());
        map
    }

    /// `d` with every shared field re-pointed at this interner's values.
    pub fn device(&mut self, d: &mut crate::fleet::Device) {
        d.model = self.intern(&d.model);
        d.hw_rev = self.intern(&d.hw_rev);
        d.region = self.intern(&d.region);
        d.depot = self.intern(&d.depot);
        d.components = self.components(std::mem::take(&mut d.components));
        d.tags = self.tags(&d.tags);
    }

    /// Distinct strings handed out so far.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sym_behaves_as_its_string() {
        let a = Sym::new("T300");
        let b = Sym::from("T300".to_owned());
        assert!(!a.ptr_eq(&b));
        assert_eq!(a, b);
        assert_eq!(a, "T300");
        assert_eq!("T300", a);
        assert!(Sym::new("K20") < a);
        assert_eq!(format!("{a} {a:?}"), "T300 \"T300\"");
        assert_eq!(serde_json::to_string(&a).expect("json"), "\"T300\"");
        let back: Sym = serde_json::from_str("\"T300\"").expect("parse");
        assert_eq!(back, a);
        let mut h1 = crate::fasthash::FastHasher::default();
        let mut h2 = crate::fasthash::FastHasher::default();
        a.hash(&mut h1);
        "T300".hash(&mut h2);
        assert_eq!(h1.finish(), h2.finish());
    }

    #[test]
    fn the_interner_shares_equal_values_and_keeps_spellings_apart() {
        let mut i = Interner::new();
        let a = i.sym("eu-west");
        let b = i.intern(&Sym::new("eu-west"));
        assert!(a.ptr_eq(&b));
        let v2: Version = "2.0".parse().expect("v");
        let v200: Version = "2.0.0".parse().expect("v");
        let m1 = i.components([("firmware", v2)].into_iter().collect());
        let m2 = i.components([("firmware", v2)].into_iter().collect());
        let m3 = i.components([("firmware", v200)].into_iter().collect());
        assert!(m1.ptr_eq(&m2));
        assert!(!m1.ptr_eq(&m3));
        assert_eq!(
            m3.get("firmware").map(ToString::to_string),
            Some("2.0.0".to_owned())
        );
        let t1 = i.tags(&[("carrier", Sym::new("acme"))].into_iter().collect());
        let t2 = i.tags(&[("carrier", Sym::new("acme"))].into_iter().collect());
        assert!(t1.ptr_eq(&t2));
        assert_eq!(i.len(), 4);
    }
}
