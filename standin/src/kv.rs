//! Consul's KV store and sessions in the stand-in (Consul API docs "KV
//! Store" and "Session"; samples `tests/data/agent-api/consul/kv_*`,
//! `session_*`): the state a Consul server keeps, its rules, and the ACL
//! rule check (`key`/`key_prefix`, `session`/`session_prefix`).
//!
//! The store lives on the leader of a datacenter's Consul servers (the
//! other servers and the clients forward to it, `http.rs`), persisted in
//! `<data_dir>/standin-kv.json` (0600, rewritten atomically on every write)
//! as raft would keep it: it survives a restart. Session TTL timers are not
//! persisted: after a restart they start afresh, as Consul resets them on a
//! leader change.
//!
//! Rules followed: a TTL session is invalidated when not renewed within
//! twice its TTL (Consul's documented grace); an invalidated or destroyed
//! session releases (Behavior `release`) or deletes (`delete`) the keys it
//! holds, and those keys cannot be acquired during its lock delay; acquire
//! by the holder updates the value without bumping `LockIndex`; release by
//! another session is `false`; `?cas=0` writes only a missing key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::state::now_ms;

/// Name of the store file in a server's data dir.
pub const STATE_FILE: &str = "standin-kv.json";
/// Session TTL bounds (Session API docs: between 10s and 86400s).
const TTL_MIN_MS: u64 = 10_000;
const TTL_MAX_MS: u64 = 86_400_000;
/// Consul's default lock delay and its cap.
const LOCK_DELAY_DEFAULT_MS: u64 = 15_000;
const LOCK_DELAY_MAX_MS: u64 = 60_000;
/// Largest value Consul stores (KV docs: 512 KiB).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// One key.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub session: Option<String>,
}

/// One session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay_ms: u64,
    pub behavior_delete: bool,
    /// 0: no TTL.
    pub ttl_ms: u64,
    pub node_checks: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
    /// When it is invalidated without a renew (not persisted).
    pub expires_ms: Option<u64>,
}

/// The KV store and sessions of one datacenter.
#[derive(Debug, Default)]
pub struct KvStore {
    pub index: u64,
    pub entries: BTreeMap<String, Entry>,
    pub sessions: BTreeMap<String, Session>,
    /// Key -> unix ms until which it cannot be acquired.
    lock_delays: BTreeMap<String, u64>,
    file: Option<PathBuf>,
}

/// An API error: (status, text).
pub type ApiError = (u16, String);

/// A Go duration string (`15s`, `1500ms`, `1m30s`, `2h`) in ms.
pub fn parse_go_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ns" => n / 1e6,
            "us" | "µs" => n / 1e3,
            "ms" => n,
            "s" => n * 1e3,
            "m" => n * 60e3,
            "h" => n * 3600e3,
            _ => return None,
        };
        total += ms;
        rest = &rest[unit_len..];
    }
    (total.is_finite() && (0.0..1e15).contains(&total)).then_some(total as u64)
}

fn go_duration_of_ms(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl KvStore {
    /// The store of a server: read from `<data_dir>/standin-kv.json` when
    /// it exists (TTL timers start afresh).
    pub fn load(data_dir: &str, server: bool) -> KvStore {
        if !server || data_dir.is_empty() {
            return KvStore::default();
        }
        let file = PathBuf::from(data_dir).join(STATE_FILE);
        let mut s = KvStore {
            file: Some(file.clone()),
            ..KvStore::default()
        };
        if let Ok(text) = std::fs::read_to_string(&file) {
            match serde_json::from_str::<Value>(&text) {
                Ok(v) => s.restore(&v),
                Err(e) => crate::events::log(&format!(
                    "    [WARN] stand-in: ignoring unreadable KV state {}: {e}",
                    file.display()
                )),
            }
        }
        let now = now_ms();
        for sess in s.sessions.values_mut() {
            if sess.ttl_ms > 0 {
                sess.expires_ms = Some(now + 2 * sess.ttl_ms);
            }
        }
        s
    }

    fn restore(&mut self, v: &Value) {
        let b64 = base64::engine::general_purpose::STANDARD;
        self.index = v["index"].as_u64().unwrap_or(0);
        if let Some(m) = v["entries"].as_object() {
            for (k, e) in m {
                let value = e["value"]
                    .as_str()
                    .and_then(|s| b64.decode(s).ok())
                    .unwrap_or_default();
                self.entries.insert(
                    k.clone(),
                    Entry {
                        value,
                        flags: e["flags"].as_u64().unwrap_or(0),
                        create_index: e["create_index"].as_u64().unwrap_or(0),
                        modify_index: e["modify_index"].as_u64().unwrap_or(0),
                        lock_index: e["lock_index"].as_u64().unwrap_or(0),
                        session: e["session"].as_str().map(str::to_string),
                    },
                );
            }
        }
        if let Some(m) = v["sessions"].as_object() {
            for (id, s) in m {
                self.sessions.insert(
                    id.clone(),
                    Session {
                        id: id.clone(),
                        name: s["name"].as_str().unwrap_or_default().to_string(),
                        node: s["node"].as_str().unwrap_or_default().to_string(),
                        lock_delay_ms: s["lock_delay_ms"].as_u64().unwrap_or(0),
                        behavior_delete: s["behavior_delete"].as_bool().unwrap_or(false),
                        ttl_ms: s["ttl_ms"].as_u64().unwrap_or(0),
                        node_checks: s["node_checks"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|x| x.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        create_index: s["create_index"].as_u64().unwrap_or(0),
                        modify_index: s["modify_index"].as_u64().unwrap_or(0),
                        expires_ms: None,
                    },
                );
            }
        }
    }

    fn to_json(&self) -> Value {
        let b64 = base64::engine::general_purpose::STANDARD;
        let entries: serde_json::Map<String, Value> = self
            .entries
            .iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    json!({"value": b64.encode(&e.value), "flags": e.flags,
                        "create_index": e.create_index, "modify_index": e.modify_index,
                        "lock_index": e.lock_index, "session": e.session}),
                )
            })
            .collect();
        let sessions: serde_json::Map<String, Value> = self
            .sessions
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    json!({"name": s.name, "node": s.node, "lock_delay_ms": s.lock_delay_ms,
                        "behavior_delete": s.behavior_delete, "ttl_ms": s.ttl_ms,
                        "node_checks": s.node_checks, "create_index": s.create_index,
                        "modify_index": s.modify_index}),
                )
            })
            .collect();
        json!({"index": self.index, "entries": entries, "sessions": sessions})
    }

    fn save(&self) {
        let Some(f) = &self.file else {
            return;
        };
        let tmp = f.with_extension("json.tmp");
        let res = (|| -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(self.to_json().to_string().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, f)
        })();
        if let Err(e) = res {
            crate::events::log(&format!(
                "    [WARN] stand-in: failed to save KV state {}: {e}",
                f.display()
            ));
        }
    }

    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    // ------------------------------------------------------------ sessions

    /// `PUT /v1/session/create` with the JSON body `body`; `node` is the
    /// agent's node when the body names none.
    pub fn session_create(&mut self, body: &[u8], agent_node: &str) -> Result<String, ApiError> {
        let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body)
                .map_err(|e| (400, format!("Request decode failed: {e}")))?
        };
        let f = |k: &str| crate::http::field(&v, k);
        let ttl_ms = match f("TTL").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            None => 0,
            Some(t) => {
                let ms = parse_go_duration(t)
                    .ok_or_else(|| (400, format!("Request decode failed: invalid TTL {t:?}")))?;
                if ms != 0 && !(TTL_MIN_MS..=TTL_MAX_MS).contains(&ms) {
                    return Err((
                        400,
                        format!("Invalid Session TTL '{ms}000000', must be between [10s=24h0m0s]"),
                    ));
                }
                ms
            }
        };
        let lock_delay_ms = match f("LockDelay") {
            None | Some(Value::Null) => LOCK_DELAY_DEFAULT_MS,
            Some(Value::String(s)) => parse_go_duration(s).ok_or_else(|| {
                (
                    400,
                    format!("Request decode failed: invalid LockDelay {s:?}"),
                )
            })?,
            // A number is nanoseconds (Go's time.Duration), seconds when small.
            Some(Value::Number(n)) => {
                let n = n.as_u64().unwrap_or(0);
                if n < 60 { n * 1000 } else { n / 1_000_000 }
            }
            Some(_) => return Err((400, "Request decode failed: LockDelay".into())),
        }
        .min(LOCK_DELAY_MAX_MS);
        let behavior_delete = match f("Behavior").and_then(Value::as_str).unwrap_or("") {
            "" | "release" => false,
            "delete" => true,
            other => return Err((400, format!("Invalid Behavior setting '{other}'"))),
        };
        let node = f("Node")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(agent_node)
            .to_string();
        let node_checks = match f("NodeChecks").or_else(|| f("Checks")) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => vec!["serfHealth".to_string()],
        };
        let index = self.bump();
        let id = crate::acl::uuid();
        self.sessions.insert(
            id.clone(),
            Session {
                id: id.clone(),
                name: f("Name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                node,
                lock_delay_ms,
                behavior_delete,
                ttl_ms,
                node_checks,
                create_index: index,
                modify_index: index,
                expires_ms: (ttl_ms > 0).then(|| now_ms() + 2 * ttl_ms),
            },
        );
        self.save();
        Ok(id)
    }

    /// A session as the API shows it.
    pub fn session_json(s: &Session) -> Value {
        json!({
            "ID": s.id, "Name": s.name, "Node": s.node,
            "LockDelay": s.lock_delay_ms * 1_000_000,
            "Behavior": if s.behavior_delete { "delete" } else { "release" },
            "TTL": if s.ttl_ms == 0 { String::new() } else { go_duration_of_ms(s.ttl_ms) },
            "NodeChecks": s.node_checks, "ServiceChecks": Value::Null,
            "CreateIndex": s.create_index, "ModifyIndex": s.modify_index,
        })
    }

    /// `PUT /v1/session/renew/<id>`: the session, or None when unknown.
    pub fn session_renew(&mut self, id: &str) -> Option<Value> {
        let s = self.sessions.get_mut(id)?;
        if s.ttl_ms > 0 {
            s.expires_ms = Some(now_ms() + 2 * s.ttl_ms);
        }
        Some(Self::session_json(s))
    }

    /// `PUT /v1/session/destroy/<id>` (idempotent).
    pub fn session_destroy(&mut self, id: &str) {
        if self.invalidate(id, now_ms()) {
            self.save();
        }
    }

    /// Invalidate `id`: release or delete its keys, start their lock
    /// delay. Whether it existed.
    fn invalidate(&mut self, id: &str, now: u64) -> bool {
        let Some(s) = self.sessions.remove(id) else {
            return false;
        };
        let held: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        let index = self.bump();
        for k in held {
            if s.lock_delay_ms > 0 {
                self.lock_delays.insert(k.clone(), now + s.lock_delay_ms);
            }
            if s.behavior_delete {
                self.entries.remove(&k);
            } else if let Some(e) = self.entries.get_mut(&k) {
                e.session = None;
                e.modify_index = index;
            }
        }
        true
    }

    /// Invalidate every session bound to one of `nodes` (they left the
    /// cluster: Consul deregisters them, and a session lives no longer
    /// than its node); the IDs.
    pub fn reap_nodes(&mut self, nodes: &[String], now: u64) -> Vec<String> {
        let gone: Vec<String> = self
            .sessions
            .values()
            .filter(|s| nodes.contains(&s.node))
            .map(|s| s.id.clone())
            .collect();
        for id in &gone {
            self.invalidate(id, now);
        }
        if !gone.is_empty() {
            self.save();
        }
        gone
    }

    /// Invalidate every TTL session past its deadline; the IDs.
    pub fn reap(&mut self, now: u64) -> Vec<String> {
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires_ms.is_some_and(|t| t <= now))
            .map(|s| s.id.clone())
            .collect();
        for id in &expired {
            self.invalidate(id, now);
        }
        self.lock_delays.retain(|_, until| *until > now);
        if !expired.is_empty() {
            self.save();
        }
        expired
    }

    /// Sessions, for `/v1/session/info/<id>` and `/list`.
    pub fn session_info(&self, id: Option<&str>) -> Value {
        Value::Array(
            self.sessions
                .values()
                .filter(|s| id.is_none_or(|i| s.id == i))
                .map(Self::session_json)
                .collect(),
        )
    }

    // ----------------------------------------------------------------- KV

    fn entry_json(key: &str, e: &Entry) -> Value {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut v = json!({
            "CreateIndex": e.create_index, "ModifyIndex": e.modify_index,
            "LockIndex": e.lock_index, "Key": key, "Flags": e.flags,
            "Value": if e.value.is_empty() { Value::Null } else { json!(b64.encode(&e.value)) },
        });
        if let Some(s) = &e.session {
            v["Session"] = json!(s);
        }
        v
    }

    /// `GET /v1/kv/<key>` (`recurse`: every key with the prefix); None:
    /// nothing (404). `keys`: only the key names.
    pub fn get(&self, key: &str, recurse: bool, keys: bool) -> Option<Value> {
        let list: Vec<(&String, &Entry)> = if recurse || keys {
            self.entries
                .range(key.to_string()..)
                .take_while(|(k, _)| k.starts_with(key))
                .collect()
        } else {
            self.entries.get_key_value(key).into_iter().collect()
        };
        if list.is_empty() {
            return None;
        }
        Some(if keys {
            Value::Array(list.iter().map(|(k, _)| json!(k)).collect())
        } else {
            Value::Array(list.iter().map(|(k, e)| Self::entry_json(k, e)).collect())
        })
    }

    /// `PUT /v1/kv/<key>` with `acquire`, `release`, `cas`, `flags`:
    /// whether it was applied (Consul's `true`/`false`).
    pub fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: Option<u64>,
        cas: Option<u64>,
        acquire: Option<&str>,
        release: Option<&str>,
    ) -> Result<bool, ApiError> {
        if key.is_empty() {
            return Err((400, "Missing key name".into()));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err((
                413,
                format!(
                    "Request body(value) too large, max size: {MAX_VALUE_BYTES} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size."
                ),
            ));
        }
        let now = now_ms();
        let existing = self.entries.get(key).cloned();
        if let Some(c) = cas {
            let current = existing.as_ref().map(|e| e.modify_index).unwrap_or(0);
            if c != current {
                return Ok(false);
            }
        }
        let flags = flags.unwrap_or_else(|| existing.as_ref().map(|e| e.flags).unwrap_or(0));
        if let Some(sid) = acquire {
            if !self.sessions.contains_key(sid) {
                return Err((500, format!("invalid session {sid:?}")));
            }
            let held_by = existing.as_ref().and_then(|e| e.session.clone());
            match held_by.as_deref() {
                Some(h) if h == sid => {
                    // The holder updates the value; LockIndex unchanged.
                    let index = self.bump();
                    if let Some(e) = self.entries.get_mut(key) {
                        e.value = value;
                        e.flags = flags;
                        e.modify_index = index;
                    }
                    self.save();
                    return Ok(true);
                }
                Some(_) => return Ok(false),
                None => {}
            }
            if self.lock_delays.get(key).is_some_and(|until| *until > now) {
                return Ok(false);
            }
            let index = self.bump();
            let e = self.entries.entry(key.to_string()).or_insert(Entry {
                value: Vec::new(),
                flags: 0,
                create_index: index,
                modify_index: index,
                lock_index: 0,
                session: None,
            });
            e.value = value;
            e.flags = flags;
            e.modify_index = index;
            e.lock_index += 1;
            e.session = Some(sid.to_string());
            self.save();
            return Ok(true);
        }
        if let Some(sid) = release {
            if !self.sessions.contains_key(sid) {
                return Err((500, format!("invalid session {sid:?}")));
            }
            let Some(e) = existing else {
                return Ok(false);
            };
            if e.session.as_deref() != Some(sid) {
                return Ok(false);
            }
            let index = self.bump();
            if let Some(e) = self.entries.get_mut(key) {
                e.value = value;
                e.flags = flags;
                e.session = None;
                e.modify_index = index;
            }
            self.save();
            return Ok(true);
        }
        let index = self.bump();
        let e = self.entries.entry(key.to_string()).or_insert(Entry {
            value: Vec::new(),
            flags: 0,
            create_index: index,
            modify_index: index,
            lock_index: 0,
            session: None,
        });
        e.value = value;
        e.flags = flags;
        e.modify_index = index;
        self.save();
        Ok(true)
    }

    /// `DELETE /v1/kv/<key>` (`recurse`: the prefix; `cas`: only at that
    /// ModifyIndex, and 0 deletes nothing).
    pub fn delete(&mut self, key: &str, recurse: bool, cas: Option<u64>) -> bool {
        if let Some(c) = cas {
            match self.entries.get(key) {
                Some(e) if c != 0 && e.modify_index == c => {}
                _ => return false,
            }
        }
        if recurse {
            self.entries.retain(|k, _| !k.starts_with(key));
        } else {
            self.entries.remove(key);
        }
        self.bump();
        self.save();
        true
    }
}

// ------------------------------------------------------------- ACL rules

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Deny,
    Read,
    Write,
}

/// The access `rules` (Consul policy rules, HCL or JSON: `key`,
/// `key_prefix`, `session`, `session_prefix` blocks with `policy`) grant
/// on `name` for the resource `kind` (`key` or `session`): the exact rule,
/// else the longest matching prefix rule; several policies: the most
/// specific match wins, `deny` over others at the same length (Consul's
/// radix-tree lookup). None: no rule matches (the default policy applies).
pub fn access(rules: &[String], kind: &str, name: &str) -> Option<Access> {
    let mut best: Option<(usize, bool, Access)> = None;
    for text in rules {
        let Ok(doc) = crate::hcl::parse(text).or_else(|_| {
            serde_json::from_str::<Value>(text).map_err(|e| crate::hcl::HclError {
                line: 0,
                col: 0,
                msg: e.to_string(),
            })
        }) else {
            continue;
        };
        for (block, exact) in [(kind.to_string(), true), (format!("{kind}_prefix"), false)] {
            let Some(map) = doc.get(&block).and_then(Value::as_object) else {
                continue;
            };
            for (pat, body) in map {
                let matches = if exact {
                    name == pat
                } else {
                    name.starts_with(pat.as_str())
                };
                if !matches {
                    continue;
                }
                let acc = match body.get("policy").and_then(Value::as_str) {
                    Some("write") => Access::Write,
                    Some("read") | Some("list") => Access::Read,
                    _ => Access::Deny,
                };
                let rank = (pat.len(), exact);
                best = match best {
                    None => Some((rank.0, rank.1, acc)),
                    Some((l, e, _)) if (rank.0, rank.1) > (l, e) => Some((rank.0, rank.1, acc)),
                    Some((l, e, a)) if (rank.0, rank.1) == (l, e) => {
                        Some((l, e, if acc == Access::Deny { acc } else { a.max(acc) }))
                    }
                    keep => keep,
                };
            }
        }
    }
    best.map(|(_, _, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> KvStore {
        KvStore::default()
    }

    fn session(s: &mut KvStore, body: &str) -> String {
        s.session_create(body.as_bytes(), "n1").unwrap()
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("15s"), Some(15_000));
        assert_eq!(parse_go_duration("1500ms"), Some(1500));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn one_session_wins_the_lock_and_release_lets_the_other_in() {
        let mut s = store();
        let a = session(&mut s, r#"{"TTL":"10s","LockDelay":"0s"}"#);
        let b = session(&mut s, r#"{"TTL":"10s","LockDelay":"0s"}"#);
        assert_eq!(
            s.put("l", b"a".to_vec(), None, None, Some(&a), None),
            Ok(true)
        );
        assert_eq!(
            s.put("l", b"b".to_vec(), None, None, Some(&b), None),
            Ok(false)
        );
        // The holder may update its value; LockIndex stays.
        assert_eq!(
            s.put("l", b"a2".to_vec(), None, None, Some(&a), None),
            Ok(true)
        );
        assert_eq!(s.entries["l"].lock_index, 1);
        assert_eq!(s.put("l", vec![], None, None, None, Some(&b)), Ok(false));
        assert_eq!(s.put("l", vec![], None, None, None, Some(&a)), Ok(true));
        assert_eq!(
            s.put("l", b"b".to_vec(), None, None, Some(&b), None),
            Ok(true)
        );
        assert_eq!(s.entries["l"].lock_index, 2);
        assert!(s.put("l", vec![], None, None, Some("nope"), None).is_err());
    }

    #[test]
    fn an_expired_session_releases_and_the_lock_delay_holds_others_off() {
        let mut s = store();
        let a = session(&mut s, r#"{"TTL":"10s","LockDelay":"5s"}"#);
        let b = session(&mut s, r#"{"TTL":"10s","LockDelay":"5s"}"#);
        assert_eq!(
            s.put("l", b"a".to_vec(), None, None, Some(&a), None),
            Ok(true)
        );
        let exp = s.sessions[&a].expires_ms.unwrap();
        // Twice the TTL: not before.
        assert!(s.reap(exp - 1).is_empty());
        let now = now_ms();
        s.sessions.get_mut(&a).unwrap().expires_ms = Some(now);
        assert_eq!(s.reap(now), vec![a.clone()]);
        assert!(s.entries["l"].session.is_none());
        assert_eq!(
            s.put("l", b"b".to_vec(), None, None, Some(&b), None),
            Ok(false)
        );
        s.lock_delays.insert("l".into(), 0);
        assert_eq!(
            s.put("l", b"b".to_vec(), None, None, Some(&b), None),
            Ok(true)
        );
    }

    #[test]
    fn behavior_delete_deletes_the_held_keys() {
        let mut s = store();
        let a = session(&mut s, r#"{"Behavior":"delete","LockDelay":"0s"}"#);
        assert_eq!(
            s.put("k", b"v".to_vec(), None, None, Some(&a), None),
            Ok(true)
        );
        s.session_destroy(&a);
        assert!(!s.entries.contains_key("k"));
        assert!(s.session_create(br#"{"Behavior":"x"}"#, "n").is_err());
        assert!(s.session_create(br#"{"TTL":"5s"}"#, "n").is_err());
    }

    #[test]
    fn cas_zero_writes_only_a_missing_key() {
        let mut s = store();
        assert_eq!(
            s.put("k", b"1".to_vec(), None, Some(0), None, None),
            Ok(true)
        );
        assert_eq!(
            s.put("k", b"2".to_vec(), None, Some(0), None, None),
            Ok(false)
        );
        let idx = s.entries["k"].modify_index;
        assert_eq!(
            s.put("k", b"3".to_vec(), None, Some(idx), None, None),
            Ok(true)
        );
        assert!(s.get("k", false, false).is_some());
        assert!(s.get("nope", false, false).is_none());
        assert!(!s.delete("k", false, Some(0)));
        assert!(s.delete("k", false, None));
    }

    #[test]
    fn state_survives_a_reload_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let mut s = KvStore::load(d, true);
        let a = session(&mut s, r#"{"TTL":"30s"}"#);
        assert_eq!(
            s.put("x/y", b"v".to_vec(), Some(7), None, Some(&a), None),
            Ok(true)
        );
        let again = KvStore::load(d, true);
        assert_eq!(again.entries["x/y"].value, b"v");
        assert_eq!(again.entries["x/y"].flags, 7);
        assert_eq!(again.entries["x/y"].session.as_deref(), Some(a.as_str()));
        assert!(again.sessions[&a].expires_ms.is_some());
        assert_eq!(again.index, s.index);
    }

    #[test]
    fn rules_pick_the_longest_prefix_and_exact_keys_win() {
        let rules = vec![
            r#"key_prefix "" { policy = "read" }
key_prefix "hashi-supervisor/" { policy = "write" }
key "hashi-supervisor/secret" { policy = "deny" }
session_prefix "" { policy = "write" }"#
                .to_string(),
        ];
        assert_eq!(access(&rules, "key", "other"), Some(Access::Read));
        assert_eq!(
            access(&rules, "key", "hashi-supervisor/upgrade/lock"),
            Some(Access::Write)
        );
        assert_eq!(
            access(&rules, "key", "hashi-supervisor/secret"),
            Some(Access::Deny)
        );
        assert_eq!(access(&rules, "session", "n1"), Some(Access::Write));
        assert_eq!(access(&[], "key", "x"), None);
        let json_rules = vec![r#"{"key_prefix":{"a/":{"policy":"write"}}}"#.to_string()];
        assert_eq!(access(&json_rules, "key", "a/b"), Some(Access::Write));
    }
}
