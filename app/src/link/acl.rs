//! Who may say what on the broker: the identities of a fleet, the topic ACL in Mosquitto's
//! `acl_file` format, and passwords in Mosquitto's `password_file` format (`$7$`,
//! PBKDF2-HMAC-SHA512).
//!
//! `convoy broker mosquitto-config` writes these files for Mosquitto; `convoy broker --acl-from`
//! reads the same files back and enforces them in front of the embedded broker
//! ([`super::acl_proxy`]). One reading of the files serves both, so the two brokers apply the same
//! rules. This module does no I/O.

use base64::Engine as _;
use sha2::{Digest, Sha512};
use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::protocol::{Topics, is_valid_id};

/// The engine's broker identity: reads every device's reports, alone publishes commands.
pub const ENGINE_USER: &str = "convoy-engine";
/// The console's broker identity: the engine's rights, and `$SYS` to watch the broker.
pub const CONSOLE_USER: &str = "convoy-console";
/// The fleet simulator's identity (`convoy sim`, one connection for every simulated device):
/// test and demo only, since it may speak for every device.
pub const SIM_USER: &str = "convoy-fleet-sim";

/// Iterations Mosquitto 2's `mosquitto_passwd` uses for `$7$` hashes.
pub const PBKDF2_ITERATIONS: u32 = 101;
/// Salt length of Mosquitto's `$7$` hashes.
const SALT_LEN: usize = 12;

/// What the generated ACL grants, from which the `acl_file` text is written.
#[derive(Clone, Debug)]
pub struct AclSpec {
    pub topics: Topics,
    /// Include the fleet simulator's identity ([`SIM_USER`]).
    pub sim_identity: bool,
}

impl AclSpec {
    /// The `acl_file` text. Every device is a user named by its device id (`%u`); the patterns
    /// apply to every user, the `user` blocks only to the named one.
    pub fn render(&self) -> String {
        let p = self.topics.prefix();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Convoy broker ACL for topic prefix {p} (written by `convoy broker mosquitto-config`).\n\
             # A device (username = device id) publishes only under its own topic level and reads only\n\
             # its own commands and the release manifests; the engine and the console alone publish\n\
             # commands and manifests and read every device's reports."
        );
        for user in [ENGINE_USER, CONSOLE_USER] {
            let _ = writeln!(out, "\nuser {user}");
            let _ = writeln!(out, "topic write {p}/devices/+/commands");
            let _ = writeln!(out, "topic readwrite {p}/releases/+/manifest");
            for leaf in ["status", "telemetry", "acks"] {
                let _ = writeln!(out, "topic read {p}/devices/+/{leaf}");
            }
            if user == CONSOLE_USER {
                let _ = writeln!(out, "topic read $SYS/#");
            }
        }
        if self.sim_identity {
            let _ = writeln!(
                out,
                "\n# The fleet simulator speaks for every device: test and demo only.\nuser {SIM_USER}"
            );
            for leaf in ["status", "telemetry", "acks"] {
                let _ = writeln!(out, "topic write {p}/devices/+/{leaf}");
            }
            let _ = writeln!(out, "topic read {p}/devices/+/commands");
            let _ = writeln!(out, "topic read {p}/releases/+/manifest");
        }
        let _ = writeln!(out, "\n# Every device, as itself.");
        for leaf in ["status", "telemetry", "acks"] {
            let _ = writeln!(out, "pattern write {p}/devices/%u/{leaf}");
        }
        let _ = writeln!(out, "pattern read {p}/devices/%u/commands");
        let _ = writeln!(out, "pattern read {p}/releases/+/manifest");
        out
    }
}

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Receive messages on the topic (subscribe).
    Read,
    /// Publish on the topic.
    Write,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    pattern: String,
    read: bool,
    write: bool,
    /// `%u` and `%c` are substituted (a `pattern` line).
    substitute: bool,
}

/// A parsed Mosquitto `acl_file`: `user NAME`, `topic [read|write|readwrite|deny] TOPIC` and
/// `pattern [read|write|readwrite|deny] TOPIC` lines, `#` comments. What is not granted is
/// refused. (`deny` lines are refused as unsupported rather than silently read otherwise.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: BTreeMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// A line of an ACL or password file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct FileError {
    pub line: usize,
    pub reason: String,
}

impl Acl {
    pub fn parse(text: &str) -> Result<Self, FileError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let err = |reason: String| FileError {
                line: n + 1,
                reason,
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("`user` needs a name".into()));
                    }
                    user = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let (access, topic) = match rest.split_once(char::is_whitespace) {
                        Some((a @ ("read" | "write" | "readwrite"), t)) => (a, t.trim()),
                        Some(("deny", _)) => {
                            return Err(err("`deny` rules are not supported here".into()));
                        }
                        None if matches!(rest, "read" | "write" | "readwrite" | "deny") => {
                            ("readwrite", "")
                        }
                        _ => ("readwrite", rest),
                    };
                    if topic.is_empty() {
                        return Err(err(format!("`{keyword}` needs a topic")));
                    }
                    let rule = Rule {
                        pattern: topic.to_owned(),
                        read: access != "write",
                        write: access != "read",
                        substitute: keyword == "pattern",
                    };
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else if let Some(u) = &user {
                        acl.users.entry(u.clone()).or_default().push(rule);
                    } else {
                        acl.anonymous.push(rule);
                    }
                }
                other => return Err(err(format!("unknown keyword {other:?}"))),
            }
        }
        Ok(acl)
    }

    fn rules<'a>(&'a self, user: Option<&str>) -> impl Iterator<Item = &'a Rule> + 'a {
        let own = match user {
            Some(u) => self.users.get(u).map_or(&[][..], Vec::as_slice),
            None => self.anonymous.as_slice(),
        };
        own.iter().chain(self.patterns.iter())
    }

    /// Whether `user` (authenticated by name; `None` for anonymous) with `client_id` may publish
    /// on, or receive a message published on, the concrete `topic`.
    pub fn allows(&self, user: Option<&str>, client_id: &str, topic: &str, access: Access) -> bool {
        if topic.contains(['+', '#']) || topic.is_empty() {
            return false;
        }
        self.rules(user).any(|rule| {
            granted(rule, access)
                && expand(rule, user, client_id).is_some_and(|p| filter_covers(&p, topic))
        })
    }

    /// Whether `user` may subscribe to `filter`: some read rule covers every topic the filter
    /// can match (a device's `+` where the rule names one device is refused).
    pub fn allows_subscribe(&self, user: Option<&str>, client_id: &str, filter: &str) -> bool {
        if !valid_filter(filter) {
            return false;
        }
        self.rules(user).any(|rule| {
            granted(rule, Access::Read)
                && expand(rule, user, client_id).is_some_and(|p| filter_covers(&p, filter))
        })
    }
}

fn granted(rule: &Rule, access: Access) -> bool {
    match access {
        Access::Read => rule.read,
        Access::Write => rule.write,
    }
}

/// The rule's topic with `%u` and `%c` filled in. Like Mosquitto, a pattern naming a user or
/// client id that contains a wildcard or `/` matches nothing.
fn expand(rule: &Rule, user: Option<&str>, client_id: &str) -> Option<String> {
    if !rule.substitute {
        return Some(rule.pattern.clone());
    }
    let safe = |s: &str| !s.is_empty() && !s.contains(['+', '#', '/']);
    let mut out = rule.pattern.clone();
    if out.contains("%u") {
        let u = user.filter(|u| safe(u))?;
        out = out.replace("%u", u);
    }
    if out.contains("%c") {
        if !safe(client_id) {
            return None;
        }
        out = out.replace("%c", client_id);
    }
    Some(out)
}

fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == levels.len() - 1,
        "+" => true,
        l => !l.contains(['+', '#']),
    })
}

/// Whether every topic `filter` matches is matched by `pattern` (a topic matches when it is its
/// own filter). `+` in the pattern covers any one level (a `+` of the filter too), `#` covers
/// the rest; a wildcard of the filter is covered only by a wildcard of the pattern.
fn filter_covers(pattern: &str, filter: &str) -> bool {
    let mut p = pattern.split('/');
    let mut f = filter.split('/');
    loop {
        match (p.next(), f.next()) {
            (Some("#"), _) | (None, None) => return true,
            (Some("+"), Some(fl)) if fl != "#" => {}
            (Some(pl), Some(fl)) if pl == fl && pl != "+" && pl != "#" => {}
            _ => return false,
        }
    }
}

/// A parsed Mosquitto `password_file`: `user:$7$ITERATIONS$SALT$HASH` lines.
#[derive(Clone, Debug, Default)]
pub struct PasswordFile {
    users: BTreeMap<String, PasswordHash>,
}

#[derive(Clone, Debug)]
struct PasswordHash {
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl PasswordFile {
    /// Reads every usable line; a line that cannot be used is skipped and returned (with its
    /// number and why), so one bad line costs that identity only, never the whole broker.
    pub fn parse(text: &str) -> (Self, Vec<FileError>) {
        let mut users = BTreeMap::new();
        let mut skipped = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = parse_password_line(line).and_then(|(user, hash)| {
                if users.contains_key(user) {
                    Err(format!(
                        "user {user:?} appears twice (the first line is kept)"
                    ))
                } else {
                    Ok((user, hash))
                }
            });
            match parsed {
                Ok((user, hash)) => {
                    users.insert(user.to_owned(), hash);
                }
                Err(reason) => skipped.push(FileError {
                    line: n + 1,
                    reason,
                }),
            }
        }
        (Self { users }, skipped)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` has a line.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Whether `password` is `user`'s (in constant time over the hash).
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let Some(h) = self.users.get(user) else {
            return false;
        };
        let got = pbkdf2_sha512(password, &h.salt, h.iterations);
        got.iter()
            .zip(&h.hash)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// One `user:$7$ITERATIONS$SALT$HASH` line.
fn parse_password_line(line: &str) -> Result<(&str, PasswordHash), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (user, hash) = line
        .split_once(':')
        .ok_or_else(|| "expected `user:$7$...`".to_owned())?;
    if hash.contains(':') {
        return Err(format!(
            "a username cannot contain ':' (Mosquitto reads this line as user {user:?})"
        ));
    }
    let parts: Vec<&str> = hash.split('$').collect();
    let ["", "7", iterations, salt, hash] = parts.as_slice() else {
        return Err("only Mosquitto 2's PBKDF2-SHA512 hashes ($7$) are supported".to_owned());
    };
    let iterations: u32 = iterations
        .parse()
        .ok()
        .filter(|&i| i > 0)
        .ok_or_else(|| "bad iteration count".to_owned())?;
    let salt = b64.decode(salt).map_err(|_| "bad base64 salt".to_owned())?;
    let hash = b64.decode(hash).map_err(|_| "bad base64 hash".to_owned())?;
    if hash.len() != 64 {
        return Err("a $7$ hash is 64 bytes".to_owned());
    }
    Ok((
        user,
        PasswordHash {
            iterations,
            salt,
            hash,
        },
    ))
}

/// Whether a device id can log in with a password: Mosquitto's `password_file` is
/// `user:hash`, so a username cannot contain `:` (`mosquitto_passwd` refuses it too).
pub fn usable_password_user(id: &str) -> Result<(), String> {
    if id.contains(':') {
        return Err(format!(
            "device id {id:?} contains ':', which a broker username cannot"
        ));
    }
    Ok(())
}

/// One `password_file` line for `user`, as `mosquitto_passwd` writes it: `$7$`, 101 iterations,
/// a 12-byte salt, PBKDF2-HMAC-SHA512, standard base64 with padding.
pub fn password_line(user: &str, password: &[u8], salt: &[u8; SALT_LEN]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let hash = pbkdf2_sha512(password, salt, PBKDF2_ITERATIONS);
    format!(
        "{user}:$7${PBKDF2_ITERATIONS}${}${}",
        b64.encode(salt),
        b64.encode(hash)
    )
}

/// A fresh random salt for [`password_line`].
pub fn random_salt() -> anyhow::Result<[u8; SALT_LEN]> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt)
        .map_err(|e| anyhow::anyhow!("the system's random source failed: {e}"))?;
    Ok(salt)
}

/// A fresh random password: 24 bytes, URL-safe base64 (32 characters), safe in CSV and files.
pub fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the system's random source failed: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether a device id can be a broker username under the generated ACL (it always can when it
/// is a valid protocol id: one topic level, no wildcard) and is not one of Convoy's own
/// identities.
pub fn usable_device_user(id: &str) -> Result<(), String> {
    if !is_valid_id(id) {
        return Err(format!("device id {id:?} is not a valid topic level"));
    }
    if [ENGINE_USER, CONSOLE_USER, SIM_USER].contains(&id) {
        return Err(format!(
            "device id {id:?} is the name of one of Convoy's broker identities"
        ));
    }
    Ok(())
}

/// Client-id prefixes reserved to Convoy's own identities: only that user may connect with an
/// id that starts with one of them (the engine's and the console's ids also carry 128 random bits).
pub const RESERVED_CLIENT_IDS: [(&str, &str); 4] = [
    ("convoy-engine", ENGINE_USER),
    ("convoy-console", CONSOLE_USER),
    ("convoy-fleet-sim", SIM_USER),
    ("convoy-sim", SIM_USER),
];

/// 128 random bits as 32 hex digits: the unguessable part of the engine's and the console's
/// MQTT client ids (a client that knows another's id can disconnect it from the broker).
pub fn random_client_suffix() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the system's random source failed: {e}"))?;
    Ok(hex::encode(bytes))
}

/// The user a client id belongs to: the Convoy identity whose prefix it starts with, else the
/// longest known user `u` (per `is_user`) with `client_id == u` or `client_id` starting `u-`.
fn client_id_owner(client_id: &str, is_user: impl Fn(&str) -> bool) -> Option<String> {
    if let Some((_, user)) = RESERVED_CLIENT_IDS
        .iter()
        .find(|(prefix, _)| client_id.starts_with(prefix))
    {
        return Some((*user).to_owned());
    }
    if is_user(client_id) {
        return Some(client_id.to_owned());
    }
    client_id
        .rmatch_indices('-')
        .map(|(i, _)| &client_id[..i])
        .find(|u| is_user(u))
        .map(str::to_owned)
}

/// Whether `username` may connect with `client_id` (a broker disconnects the older of two clients
/// with one id, so an id is its owner's alone). A device (any user but Convoy's own) must use its
/// username, or its username, `-` and anything, and never an id that belongs to another user
/// (device `dev` cannot take `dev-1`'s id when `dev-1` is a user); ids starting with
/// `convoy-engine`, `convoy-console`, `convoy-sim` or `convoy-fleet-sim` are reserved to those
/// identities, which may otherwise use any id that belongs to nobody.
pub fn check_client_id(
    username: &str,
    client_id: &str,
    is_user: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let service = [ENGINE_USER, CONSOLE_USER, SIM_USER].contains(&username);
    match client_id_owner(client_id, is_user) {
        Some(owner) if owner == username => Ok(()),
        Some(owner) => Err(format!(
            "client id {client_id:?} belongs to {owner:?}, not to {username:?}"
        )),
        None if service => Ok(()),
        None => Err(format!(
            "client id {client_id:?}: a device must connect with its username ({username:?}) or `{username}-...` as client id"
        )),
    }
}

fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> [u8; 64] {
    const BLOCK: usize = 128;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        let digest: [u8; 64] = Sha512::digest(key).into();
        k[..64].copy_from_slice(&digest);
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha512::new();
    inner.update(k.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let inner: [u8; 64] = inner.finalize().into();
    let mut outer = Sha512::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// PBKDF2 (RFC 8018) with HMAC-SHA512, one 64-byte block: what Mosquitto's `$7$` stores.
fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 64] {
    let mut u = hmac_sha512(password, &[salt, &1u32.to_be_bytes()]);
    let mut t = u;
    for _ in 1..iterations {
        u = hmac_sha512(password, &[&u]);
        for (t, u) in t.iter_mut().zip(u) {
            *t ^= u;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_the_published_vector() {
        // PBKDF2-HMAC-SHA512, "password" / "salt", 1 iteration (the widely published vector).
        let got = pbkdf2_sha512(b"password", b"salt", 1);
        assert_eq!(
            hex::encode(got),
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce"
        );
    }

    #[test]
    fn a_line_written_by_mosquitto_passwd_verifies() {
        // `mosquitto_passwd -c -b pw dev-1 hunter2-secret` (Mosquitto 2.0.11).
        let (file, skipped) = PasswordFile::parse(
            "dev-1:$7$101$J8c8L67L5hXBdV5C$r8NOhDzszSpD/ihHbP81TOEsC8iQeh3iWaQkc9IZxTurqygqe/9PoxbY33DeiNjC2BydHXa/2Haw4XX8dXdkbw==\n",
        );
        assert!(skipped.is_empty(), "{skipped:?}");
        assert!(file.verify("dev-1", b"hunter2-secret"));
        assert!(!file.verify("dev-1", b"hunter2-secreT"));
        assert!(!file.verify("dev-2", b"hunter2-secret"));
        // And ours, with the same salt, is byte for byte the same line.
        let salt: [u8; 12] = base64::engine::general_purpose::STANDARD
            .decode("J8c8L67L5hXBdV5C")
            .expect("b64")
            .try_into()
            .expect("12 bytes");
        assert_eq!(
            password_line("dev-1", b"hunter2-secret", &salt),
            "dev-1:$7$101$J8c8L67L5hXBdV5C$r8NOhDzszSpD/ihHbP81TOEsC8iQeh3iWaQkc9IZxTurqygqe/9PoxbY33DeiNjC2BydHXa/2Haw4XX8dXdkbw=="
        );
    }

    #[test]
    fn bad_password_lines_are_skipped_and_named() {
        let good = "dev-1:$7$101$J8c8L67L5hXBdV5C$r8NOhDzszSpD/ihHbP81TOEsC8iQeh3iWaQkc9IZxTurqygqe/9PoxbY33DeiNjC2BydHXa/2Haw4XX8dXdkbw==";
        for (bad, why) in [
            ("a:$6$abc$def", "$7$"),
            ("b", "user:"),
            ("a:$7$0$AAAA$AAAA", "iteration"),
            ("a:$7$101$!!$AAAA", "salt"),
            ("urn:dev:1:$7$101$AAAA$AAAA", "cannot contain ':'"),
            (good, "appears twice"),
        ] {
            let text = format!("# c\n{good}\n{bad}\n");
            let (file, skipped) = PasswordFile::parse(&text);
            assert_eq!(file.len(), 1, "{bad}");
            assert!(file.verify("dev-1", b"hunter2-secret"), "{bad}");
            let [err] = skipped.as_slice() else {
                panic!("{bad}: {skipped:?}")
            };
            assert_eq!(err.line, 3, "{bad}: {err}");
            assert!(err.reason.contains(why), "{bad}: {err}");
        }
        assert!(usable_password_user("dev-1").is_ok());
        let err = usable_password_user("urn:dev:1").expect_err("colon");
        assert!(err.contains("urn:dev:1") && err.contains("':'"), "{err}");
    }

    fn acl() -> Acl {
        let spec = AclSpec {
            topics: Topics::default_prefix(),
            sim_identity: true,
        };
        Acl::parse(&spec.render()).expect("the generated ACL parses")
    }

    #[test]
    fn a_device_speaks_only_for_itself() {
        let acl = acl();
        let dev = Some("dev-1");
        for leaf in ["status", "telemetry", "acks"] {
            let own = format!("convoy/v1/devices/dev-1/{leaf}");
            let other = format!("convoy/v1/devices/dev-2/{leaf}");
            assert!(acl.allows(dev, "c", &own, Access::Write), "{own}");
            assert!(!acl.allows(dev, "c", &other, Access::Write), "{other}");
            assert!(!acl.allows(dev, "c", &other, Access::Read), "{other}");
        }
        assert!(!acl.allows(dev, "c", "convoy/v1/devices/dev-1/commands", Access::Write));
        assert!(!acl.allows(dev, "c", "convoy/v1/devices/dev-2/commands", Access::Write));
        assert!(!acl.allows(dev, "c", "convoy/v1/releases/r1/manifest", Access::Write));
        assert!(acl.allows_subscribe(dev, "c", "convoy/v1/devices/dev-1/commands"));
        assert!(acl.allows_subscribe(dev, "c", "convoy/v1/releases/+/manifest"));
        for filter in [
            "convoy/v1/devices/+/commands",
            "convoy/v1/devices/dev-2/commands",
            "convoy/v1/#",
            "#",
            "convoy/v1/devices/dev-1/#",
            "convoy/v1/devices/+/status",
        ] {
            assert!(!acl.allows_subscribe(dev, "c", filter), "{filter}");
        }
        // Wildcards never publish; anonymous gets nothing.
        assert!(!acl.allows(dev, "c", "convoy/v1/devices/+/status", Access::Write));
        assert!(!acl.allows(None, "c", "convoy/v1/devices/dev-1/status", Access::Write));
        // A username with a wildcard or a slash matches no pattern.
        assert!(!acl.allows(
            Some("+"),
            "c",
            "convoy/v1/devices/dev-2/status",
            Access::Write
        ));
        assert!(!acl.allows(
            Some("a/b"),
            "c",
            "convoy/v1/devices/a/b/status",
            Access::Write
        ));
    }

    #[test]
    fn the_engine_alone_commands_and_reads_everyone() {
        let acl = acl();
        for user in [ENGINE_USER, CONSOLE_USER] {
            let u = Some(user);
            assert!(acl.allows(u, "e", "convoy/v1/devices/dev-2/commands", Access::Write));
            assert!(acl.allows(u, "e", "convoy/v1/releases/r1/manifest", Access::Write));
            assert!(!acl.allows(u, "e", "convoy/v1/devices/dev-2/status", Access::Write));
            for f in Topics::default_prefix().console_subscriptions() {
                assert!(acl.allows_subscribe(u, "e", &f), "{f}");
            }
            assert!(!acl.allows_subscribe(u, "e", "convoy/v1/#"));
        }
        assert!(acl.allows_subscribe(Some(CONSOLE_USER), "e", "$SYS/#"));
        assert!(!acl.allows_subscribe(Some(ENGINE_USER), "e", "$SYS/#"));
        let sim = Some(SIM_USER);
        assert!(acl.allows(sim, "s", "convoy/v1/devices/dev-2/acks", Access::Write));
        assert!(acl.allows_subscribe(sim, "s", "convoy/v1/devices/+/commands"));
        assert!(!acl.allows(sim, "s", "convoy/v1/devices/dev-2/commands", Access::Write));
        let no_sim = AclSpec {
            topics: Topics::default_prefix(),
            sim_identity: false,
        };
        let acl = Acl::parse(&no_sim.render()).expect("parse");
        assert!(!acl.allows(sim, "s", "convoy/v1/devices/dev-2/acks", Access::Write));
    }

    #[test]
    fn bad_acl_lines_name_the_line() {
        for (text, line) in [
            ("user\n", 1),
            ("# x\ntopic deny a/b\n", 2),
            ("topic read\n", 1),
            ("frobnicate a\n", 1),
        ] {
            let err = Acl::parse(text).expect_err(text);
            assert_eq!(err.line, line, "{text}: {err}");
        }
    }

    #[test]
    fn a_client_id_belongs_to_one_user() {
        let users = [
            "dev",
            "dev-1",
            "dev-1-a",
            ENGINE_USER,
            CONSOLE_USER,
            SIM_USER,
        ];
        let is_user = |u: &str| users.contains(&u);
        for (user, id) in [
            ("dev-1", "dev-1"),
            ("dev-1", "dev-1-thief"),
            ("dev", "dev"),
            ("dev", "dev-x"),
            ("dev-1-a", "dev-1-a-7"),
            (ENGINE_USER, "convoy-engine-r1-00ff"),
            (CONSOLE_USER, "convoy-console-00ff"),
            (CONSOLE_USER, "watcher"),
            (SIM_USER, "convoy-sim-42"),
        ] {
            assert_eq!(check_client_id(user, id, is_user), Ok(()), "{user} as {id}");
        }
        for (user, id) in [
            // Another device's id, or one that looks like it.
            ("dev", "dev-1"),
            ("dev-1", "dev-1-a"),
            ("dev-1", "dev"),
            ("dev-1", "dev-10"),
            ("dev-1", "watcher"),
            ("dev-1", ""),
            // Convoy's own identities' ids.
            ("dev-1", "convoy-engine-r1-00ff"),
            ("dev-1", "convoy-engine"),
            ("dev-1", "convoy-console-1"),
            ("dev-1", "convoy-sim-1"),
            (CONSOLE_USER, "convoy-engine-r1"),
            (SIM_USER, "convoy-console-1"),
            // A service identity cannot take a device's id either.
            (SIM_USER, "dev-1"),
            (ENGINE_USER, "dev-1-x"),
        ] {
            let err = check_client_id(user, id, is_user).expect_err(id);
            assert!(err.contains(&format!("{id:?}")), "{err}");
        }
        let a = random_client_suffix().expect("random");
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_client_suffix().expect("random"));
    }

    #[test]
    fn convoy_identities_are_not_device_ids() {
        assert!(usable_device_user("dev-1").is_ok());
        assert!(usable_device_user(ENGINE_USER).is_err());
        assert!(usable_device_user("a/b").is_err());
    }
}
