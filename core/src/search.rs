//! The fleet search language: what a dispatcher types into the console's search box.
//!
//! A query is terms separated by spaces; a device matches when it matches every term.
//!
//! | term | matches |
//! | --- | --- |
//! | `model:T300` | the field equals the value (ASCII case ignored) |
//! | `region:eu-*`, `depot:*north*` | `*` stands for any text |
//! | `firmware:<2.5`, `bootloader:>=1.4`, `modem:!=3.1.0` | a version compared (`<`, `<=`, `>`, `>=`, `=`, `!=`) |
//! | `battery:<20`, `failed_attempts:>=2` | a number compared |
//! | `-model:T300`, `-eu` | not (any term) |
//! | `depot:"north yard"` | a value with spaces, in double quotes |
//! | `T300` (a bare word) | the id or a field equals it, or (3 characters or more) contains it |
//! | `cohort:"rev C vans"`, `-cohort:pilots` | the saved cohort's own query (a dynamic group) |
//!
//! A saved cohort is a named query kept by the caller (the cache's `cohorts` table); it is read
//! again at every use, so it picks up devices that match it later. [`Query::parse_with`] looks
//! the names up; [`Query::parse`] knows none and refuses a `cohort:` term.
//!
//! Fields are the device's attributes ([`Device::attribute`]: `id`, `model`, `hw_rev`,
//! `region`, `depot`, `connectivity`, `power`, `customer_tier`, `device_class`, `redundancy`,
//! `active_slot`, `metered`, any component name, any tag key) with short aliases (`hw`, `fw`,
//! `tier`, `class`, `link`), `battery`, `failed_attempts`, and fields the caller adds (the
//! console adds `state`, the update state it knows live).
//!
//! A bare word shorter than 3 characters matches only whole values: "T300 C" means model T300
//! and revision C, not every device whose link is "cellular" (issue 19: it matched 381,097 of
//! a million devices).
//!
//! What it deliberately is not: a query planner. Matching scans the devices it is given; the
//! caller decides which. It allocates nothing per device for the named fields.

use std::borrow::Cow;
use std::fmt;

use crate::fleet::{Device, component};
use crate::version::Version;

/// A parsed query: every term must match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    terms: Vec<Term>,
}

/// One term of a [`Query`] (see [`Query::terms`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    negated: bool,
    kind: TermKind,
}

#[derive(Clone, Debug, PartialEq)]
enum TermKind {
    /// A bare word, lower case.
    Word(String),
    Field {
        field: String,
        test: Test,
    },
    /// A saved cohort's query: every term must match.
    Group(Vec<Term>),
}

/// How deep saved cohorts may refer to one another (a cohort naming itself is refused by it).
pub const MAX_COHORT_DEPTH: usize = 8;

#[derive(Clone, Debug, PartialEq)]
enum Test {
    /// Equal, ignoring ASCII case (lower case here).
    Equals(String),
    /// A `*` pattern, lower case, split at the stars.
    Glob(Vec<String>),
    Compare(Op, Bound),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Clone, Debug, PartialEq)]
enum Bound {
    Version(Version),
    Number(f64),
}

/// Why a query could not be read: the term and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryError {
    pub term: String,
    pub why: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.term, self.why)
    }
}

impl std::error::Error for QueryError {}

/// Field names a query may use besides component names and tag keys (which any fleet may
/// have, so an unknown name is looked up there and simply matches nothing).
pub const FIELDS: [&str; 14] = [
    "id",
    "model",
    "hw_rev",
    "region",
    "depot",
    "connectivity",
    "power",
    "customer_tier",
    "device_class",
    "redundancy",
    "active_slot",
    "metered",
    "battery",
    "failed_attempts",
];

fn canonical_field(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "hw" | "hwrev" | "rev" => "hw_rev".to_owned(),
        "fw" => component::FIRMWARE.to_owned(),
        "tier" => "customer_tier".to_owned(),
        "class" => "device_class".to_owned(),
        "link" => "connectivity".to_owned(),
        "power_state" => "power".to_owned(),
        "slot" => "active_slot".to_owned(),
        _ => lower,
    }
}

impl Query {
    /// Reads `text`. An empty text is the query that matches every device.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        Self::parse_with(text, &|_| None)
    }

    /// Reads `text`, looking up the query of each saved cohort it names (`cohort:NAME`) with
    /// `cohort`, which answers `None` for a name that is not saved.
    pub fn parse_with(
        text: &str,
        cohort: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, QueryError> {
        Ok(Self {
            terms: parse_terms(text, cohort, 0)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The terms, for a caller that evaluates them its own way (the console matches each term
    /// once against a field's distinct values, then filters devices by value). A device
    /// matches when every term's [`TermView`] holds for it, negated where [`Term::negated`];
    /// [`Query::matches`] is the definition.
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// Whether `device` matches every term. `extra` answers fields the caller knows and the
    /// device does not (e.g. the console's live `state`); it is asked first.
    pub fn matches(
        &self,
        device: &Device,
        extra: &dyn Fn(&str) -> Option<Cow<'static, str>>,
    ) -> bool {
        self.terms
            .iter()
            .all(|t| t.matches(device, extra) != t.negated)
    }
}

/// What a [`Term`] tests, for callers that evaluate a query column by column.
#[derive(Clone, Copy, Debug)]
pub enum TermView<'a> {
    /// A bare word (lower case): it holds when [`word_hits`] holds for the id, one of the
    /// [`WORD_FIELDS`] (the caller's own value for it, or the device's [`field_text`]), or the
    /// firmware version as text.
    Word(&'a str),
    /// A field (canonical name): if [`FieldTest::compares_versions`], the test holds for the
    /// device's component of that name ([`FieldTest::holds_for_version`]; no component, no
    /// match); otherwise for the caller's value of the field if it has one, else the device's
    /// [`field_text`] ([`FieldTest::holds_for_text`]; no value, no match).
    Field { field: &'a str, test: FieldTest<'a> },
    /// A saved cohort's terms: every one must hold.
    Group(&'a [Term]),
}

/// The test of a field term.
#[derive(Clone, Copy, Debug)]
pub struct FieldTest<'a>(&'a Test);

impl FieldTest<'_> {
    /// Whether the test compares the field as a component version.
    pub fn compares_versions(&self) -> bool {
        matches!(self.0, Test::Compare(_, Bound::Version(_)))
    }

    /// The test against a component version (false unless it compares versions).
    pub fn holds_for_version(&self, v: Version) -> bool {
        match self.0 {
            Test::Compare(op, Bound::Version(bound)) => op.holds(v.cmp(bound)),
            _ => false,
        }
    }

    /// The test against a field's value as text (false if it compares versions).
    pub fn holds_for_text(&self, value: &str) -> bool {
        match self.0 {
            Test::Equals(want) => value.eq_ignore_ascii_case(want),
            Test::Glob(parts) => glob_matches(parts, value),
            Test::Compare(op, Bound::Number(bound)) => value
                .parse::<f64>()
                .ok()
                .and_then(|n| n.partial_cmp(bound))
                .is_some_and(|o| op.holds(o)),
            Test::Compare(_, Bound::Version(_)) => false,
        }
    }
}

impl Term {
    /// Whether the term is negated (`-term`): the device matches when the view does not hold.
    pub fn negated(&self) -> bool {
        self.negated
    }

    pub fn view(&self) -> TermView<'_> {
        match &self.kind {
            TermKind::Word(w) => TermView::Word(w),
            TermKind::Field { field, test } => TermView::Field {
                field,
                test: FieldTest(test),
            },
            TermKind::Group(terms) => TermView::Group(terms),
        }
    }
}

fn parse_terms(
    text: &str,
    cohort: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<Vec<Term>, QueryError> {
    let mut terms = Vec::new();
    for raw in split_terms(text)? {
        let (negated, body) = match raw.strip_prefix('-') {
            Some(rest) if !rest.is_empty() => (true, rest),
            _ => (false, raw.as_str()),
        };
        let named = body
            .split_once(':')
            .filter(|(f, _)| f.eq_ignore_ascii_case("cohort"));
        let Some((_, name)) = named else {
            terms.push(parse_term(&raw)?);
            continue;
        };
        let err = |why: String| QueryError {
            term: raw.clone(),
            why,
        };
        if name.is_empty() {
            return Err(err("`cohort:` has no name".to_owned()));
        }
        if depth >= MAX_COHORT_DEPTH {
            return Err(err(format!(
                "saved cohorts refer to one another more than {MAX_COHORT_DEPTH} deep (does one \
                 name itself?)"
            )));
        }
        let Some(saved) = cohort(name) else {
            return Err(err(format!("there is no saved cohort named \"{name}\"")));
        };
        let inner = parse_terms(&saved, cohort, depth + 1).map_err(|e| QueryError {
            term: raw.clone(),
            why: format!("the saved cohort's query does not read: {e}"),
        })?;
        terms.push(Term {
            negated,
            kind: TermKind::Group(inner),
        });
    }
    Ok(terms)
}

/// Splits at spaces outside double quotes; quotes are removed.
fn split_terms(text: &str) -> Result<Vec<String>, QueryError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(QueryError {
            term: cur,
            why: "a double quote is not closed".to_owned(),
        });
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn parse_term(raw: &str) -> Result<Term, QueryError> {
    let err = |why: String| QueryError {
        term: raw.to_owned(),
        why,
    };
    let (negated, body) = match raw.strip_prefix('-') {
        Some(rest) if !rest.is_empty() => (true, rest),
        _ => (false, raw),
    };
    let Some((name, value)) = body.split_once(':') else {
        return Ok(Term {
            negated,
            kind: TermKind::Word(body.to_ascii_lowercase()),
        });
    };
    if name.is_empty() {
        return Err(err("a field name is missing before `:`".to_owned()));
    }
    if value.is_empty() {
        return Err(err(format!("`{name}:` has no value")));
    }
    let field = canonical_field(name);
    let ops = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
        ("=", Op::Eq),
    ];
    let test = if let Some((op, rest)) = ops
        .iter()
        .find_map(|(text, op)| value.strip_prefix(text).map(|rest| (*op, rest)))
    {
        let numeric = matches!(field.as_str(), "battery" | "failed_attempts");
        let bound = if numeric {
            rest.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Bound::Number)
                .ok_or_else(|| err(format!("`{rest}` is not a number")))?
        } else if rest.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            rest.parse::<Version>()
                .map(Bound::Version)
                .map_err(|e| err(format!("`{rest}` is not a version ({e})")))?
        } else if matches!(op, Op::Eq | Op::Ne) {
            // `field:=text` and `field:!=text` compare text.
            let test = Test::Equals(rest.to_ascii_lowercase());
            return Ok(Term {
                negated: negated != (op == Op::Ne),
                kind: TermKind::Field { field, test },
            });
        } else {
            return Err(err(format!(
                "`{rest}` is not a version or a number to compare `{name}` with"
            )));
        };
        Test::Compare(op, bound)
    } else if value.contains('*') {
        Test::Glob(
            value
                .to_ascii_lowercase()
                .split('*')
                .map(str::to_owned)
                .collect(),
        )
    } else {
        Test::Equals(value.to_ascii_lowercase())
    };
    Ok(Term {
        negated,
        kind: TermKind::Field { field, test },
    })
}

/// A field of `d` as text, borrowed where the device holds it as text.
pub fn field_text<'a>(d: &'a Device, field: &str) -> Option<Cow<'a, str>> {
    Some(match field {
        "id" => Cow::Borrowed(d.id.as_str()),
        "model" => Cow::Borrowed(d.model.as_str()),
        "hw_rev" => Cow::Borrowed(d.hw_rev.as_str()),
        "region" => Cow::Borrowed(d.region.as_str()),
        "depot" => Cow::Borrowed(d.depot.as_str()),
        "connectivity" => Cow::Borrowed(d.connectivity.as_str()),
        "customer_tier" => Cow::Borrowed(d.customer_tier.as_str()),
        "device_class" => Cow::Borrowed(d.device_class.as_str()),
        "battery" => Cow::Owned(d.battery_pct?.to_string()),
        "failed_attempts" => Cow::Owned(d.failed_update_attempts.to_string()),
        other => {
            if let Some(tag) = d.tag(other) {
                Cow::Borrowed(tag)
            } else {
                Cow::Owned(d.attribute(other)?)
            }
        }
    })
}

fn glob_matches(parts: &[String], text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return true;
    };
    if parts.len() == 1 {
        return text == *first;
    }
    if !text.starts_with(first.as_str()) || !text[first.len()..].ends_with(last.as_str()) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid.as_str()) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn contains_ignore_case(hay: &str, needle_lower: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle_lower.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

impl Term {
    fn matches(&self, d: &Device, extra: &dyn Fn(&str) -> Option<Cow<'static, str>>) -> bool {
        match &self.kind {
            TermKind::Word(word) => word_matches(d, word, extra),
            TermKind::Group(terms) => terms.iter().all(|t| t.matches(d, extra) != t.negated),
            TermKind::Field { field, test } => {
                if let Test::Compare(op, Bound::Version(bound)) = test {
                    let Some(v) = d.component(field) else {
                        return false;
                    };
                    return op.holds(v.cmp(bound));
                }
                let value: Cow<'_, str> = match extra(field) {
                    Some(v) => v,
                    None => match field_text(d, field) {
                        Some(v) => v,
                        None => return false,
                    },
                };
                FieldTest(test).holds_for_text(&value)
            }
        }
    }
}

/// The text fields a bare word is looked for in (besides the id and the firmware version).
pub const WORD_FIELDS: [&str; 8] = [
    "model",
    "hw_rev",
    "region",
    "depot",
    "connectivity",
    "customer_tier",
    "device_class",
    "state",
];

fn word_matches(d: &Device, word: &str, extra: &dyn Fn(&str) -> Option<Cow<'static, str>>) -> bool {
    let hit = |value: &str| word_hits(word, value);
    if hit(&d.id) {
        return true;
    }
    let firmware = d.firmware().map(|v| v.to_string());
    WORD_FIELDS
        .iter()
        .any(|f| extra(f).is_some_and(|v| hit(&v)) || field_text(d, f).is_some_and(|v| hit(&v)))
        || firmware.is_some_and(|v| hit(&v))
}

/// Whether the bare word `word` (lower case) hits `value`: equal ignoring ASCII case, or, for
/// a word of 3 characters or more, contained in it.
pub fn word_hits(word: &str, value: &str) -> bool {
    value.eq_ignore_ascii_case(word) || (word.len() >= 3 && contains_ignore_case(value, word))
}

impl Op {
    fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            Op::Lt => o == Less,
            Op::Le => o != Greater,
            Op::Gt => o == Greater,
            Op::Ge => o != Less,
            Op::Eq => o == Equal,
            Op::Ne => o != Equal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthOptions, generate};
    use crate::time::Timestamp;

    fn devices() -> Vec<Device> {
        generate(&SynthOptions {
            devices: 2_000,
            seed: 7,
            now: Timestamp(1_800_000_000),
        })
        .devices
    }

    fn count(q: &str, ds: &[Device]) -> usize {
        let q = Query::parse(q).expect("a valid query");
        ds.iter().filter(|d| q.matches(d, &|_| None)).count()
    }

    #[test]
    fn field_terms_match_exactly_and_bare_short_words_do_not_match_inside_words() {
        let ds = devices();
        let t300_c = ds
            .iter()
            .filter(|d| d.model == "T300" && d.hw_rev == "C")
            .count();
        assert!(t300_c > 0, "the synthetic fleet has T300 rev C");
        assert_eq!(count("model:T300 hw_rev:C", &ds), t300_c);
        assert_eq!(count("model:t300 hw:c", &ds), t300_c, "case and aliases");
        // The query: "C" no longer matches "cellular" or "central".
        assert_eq!(count("T300 C", &ds), t300_c);
        assert_eq!(count("", &ds), ds.len());
    }

    #[test]
    fn versions_numbers_globs_and_negation() {
        let ds = devices();
        let below = ds
            .iter()
            .filter(|d| d.firmware().is_some_and(|v| v < Version::new(2, 5, 0)))
            .count();
        assert_eq!(count("firmware:<2.5", &ds), below);
        assert_eq!(count("fw:<2.5.0", &ds), below);
        let eu = ds.iter().filter(|d| d.region.starts_with("eu-")).count();
        assert!(eu > 0);
        assert_eq!(count("region:eu-*", &ds), eu);
        assert_eq!(count("-region:eu-*", &ds), ds.len() - eu);
        let low = ds
            .iter()
            .filter(|d| d.battery_pct.is_some_and(|b| b < 20))
            .count();
        assert_eq!(count("battery:<20", &ds), low);
        let some_depot = ds[0].depot.clone();
        let in_depot = ds.iter().filter(|d| d.depot == some_depot).count();
        assert_eq!(count(&format!("depot:\"{some_depot}\""), &ds), in_depot);
    }

    #[test]
    fn the_caller_s_fields_are_asked_first() {
        let ds = devices();
        let q = Query::parse("state:failed").expect("valid");
        let failed = |f: &str| (f == "state").then_some(Cow::Borrowed("failed"));
        assert!(ds.iter().all(|d| q.matches(d, &failed)));
        assert!(!ds.iter().any(|d| q.matches(d, &|_| None)));
    }

    #[test]
    fn bad_queries_name_the_term_and_what_is_wrong() {
        let e = Query::parse("model:T300 firmware:<two").expect_err("not a version");
        assert_eq!(e.term, "firmware:<two");
        assert!(e.why.contains("not a version"), "{e}");
        let e = Query::parse("battery:<low").expect_err("not a number");
        assert!(e.why.contains("not a number"), "{e}");
        let e = Query::parse("depot:\"north").expect_err("open quote");
        assert!(e.why.contains("not closed"), "{e}");
        let e = Query::parse(":x").expect_err("no field");
        assert!(e.why.contains("field name is missing"), "{e}");
        let e = Query::parse("model:").expect_err("no value");
        assert!(e.why.contains("no value"), "{e}");
    }

    #[test]
    fn case_is_ignored_without_allocating() {
        assert!(contains_ignore_case("EU-Central-BER", "central-b"));
        assert!(contains_ignore_case("abc", ""));
        assert!(!contains_ignore_case("ab", "abc"));
        assert!(!contains_ignore_case("T300", "t301"));
    }

    #[test]
    fn globs_anchor_at_both_ends() {
        let p = |s: &str| s.split('*').map(str::to_owned).collect::<Vec<_>>();
        assert!(glob_matches(&p("eu-*"), "EU-West"));
        assert!(!glob_matches(&p("eu-*"), "neu-x"));
        assert!(glob_matches(&p("*north*"), "depot-north-2"));
        assert!(glob_matches(&p("a*b*c"), "axxbyyc"));
        assert!(!glob_matches(&p("a*b*c"), "axxcyyb"));
        assert!(glob_matches(&p("*"), "anything"));
    }

    #[test]
    fn saved_cohorts_are_dynamic_groups_that_can_be_negated_and_never_loop() {
        let ds = devices();
        let saved = |name: &str| match name {
            "rev C vans" => Some("model:T300 hw_rev:C".to_owned()),
            "eu rev C" => Some("cohort:\"rev C vans\" region:eu-*".to_owned()),
            "loop" => Some("cohort:loop".to_owned()),
            "broken" => Some("firmware:<".to_owned()),
            _ => None,
        };
        let n = |q: &str| {
            let q = Query::parse_with(q, &saved).expect("a valid query");
            ds.iter().filter(|d| q.matches(d, &|_| None)).count()
        };
        let rev_c = count("model:T300 hw_rev:C", &ds);
        assert_eq!(n("cohort:\"rev C vans\""), rev_c);
        assert_eq!(
            n("-cohort:\"rev C vans\""),
            ds.len() - rev_c,
            "negated as a whole"
        );
        assert_eq!(
            n("cohort:\"eu rev C\""),
            count("model:T300 hw_rev:C region:eu-*", &ds),
            "a cohort may name another"
        );
        // Dynamic: the same saved query over a fleet with one more matching device.
        let mut more = ds.clone();
        let mut extra = more
            .iter()
            .find(|d| d.model == "T300" && d.hw_rev == "C")
            .expect("a rev C van")
            .clone();
        extra.id = "CVNEW0001".into();
        more.push(extra);
        let q = Query::parse_with("cohort:\"rev C vans\"", &saved).expect("valid");
        assert_eq!(
            more.iter().filter(|d| q.matches(d, &|_| None)).count(),
            rev_c + 1
        );
        // Refusals name the term and why.
        let err = Query::parse_with("cohort:nobody", &saved).expect_err("unknown");
        assert!(
            err.to_string().contains("no saved cohort named \"nobody\""),
            "{err}"
        );
        let err = Query::parse_with("cohort:loop", &saved).expect_err("a loop");
        assert!(err.to_string().contains("more than 8 deep"), "{err}");
        let err = Query::parse_with("cohort:broken", &saved).expect_err("bad saved query");
        assert!(err.to_string().contains("does not read"), "{err}");
        let err = Query::parse("cohort:x").expect_err("no cohorts known");
        assert!(err.to_string().contains("no saved cohort"), "{err}");
        assert!(Query::parse_with("cohort:", &saved).is_err());
    }
}
