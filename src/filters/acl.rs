//! Topic access control for publish and subscribe.
//!
//! Rules are tried in order; the first rule whose user, client and action
//! match and one of whose topic patterns *covers* the topic decides. A
//! pattern may use `+`/`#` and the substitutions `%u` (user name) and `%c`
//! (client id). For SUBSCRIBE the requested filter must be covered by the
//! pattern: `devices/%c/#` allows `devices/c1/temp` and `devices/c1/+` for
//! client `c1`, but not `devices/+/temp` (that would cover other clients).

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Publish,
    Subscribe,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub allow: bool,
    pub actions: Vec<Action>,
    /// User names this rule applies to; empty means everyone.
    pub users: Vec<String>,
    /// Client id prefixes this rule applies to; empty means every client.
    pub client_prefixes: Vec<String>,
    /// Topic patterns (with `+`, `#`, `%u`, `%c`).
    pub topics: Vec<String>,
}

/// An ordered rule list with a default.
#[derive(Debug, Clone)]
pub struct Acl {
    pub rules: Vec<Rule>,
    pub default_allow: bool,
}

impl Acl {
    /// Whether `user`/`client` may do `action` on `topic` (a topic name for
    /// publish, a topic filter for subscribe).
    pub fn allows(&self, user: Option<&[u8]>, client: &[u8], action: Action, topic: &[u8]) -> bool {
        // A shared subscription `$share/{group}/{filter}` is judged by its filter.
        let topic = match action {
            Action::Subscribe => {
                switchyard_codecs::mqtt::topic::shared(topic).map_or(topic, |(_, f)| f)
            }
            Action::Publish => topic,
        };
        for rule in &self.rules {
            if !rule.actions.contains(&action) {
                continue;
            }
            if !rule.users.is_empty()
                && !user.is_some_and(|u| rule.users.iter().any(|r| r.as_bytes() == u))
            {
                continue;
            }
            if !rule.client_prefixes.is_empty()
                && !rule
                    .client_prefixes
                    .iter()
                    .any(|p| client.starts_with(p.as_bytes()))
            {
                continue;
            }
            let hit = rule.topics.iter().any(|pattern| {
                let pattern = substitute(pattern.as_bytes(), user, client);
                pattern.is_some_and(|p| covers(&p, topic))
            });
            if hit {
                return rule.allow;
            }
        }
        self.default_allow
    }
}

/// Replace `%u` and `%c`; `None` when a substituted value could widen the
/// pattern (contains `+`, `#` or `/`) or `%u` is used without a user.
fn substitute(pattern: &[u8], user: Option<&[u8]>, client: &[u8]) -> Option<Vec<u8>> {
    let safe = |v: &[u8]| !v.iter().any(|b| matches!(b, b'+' | b'#' | b'/'));
    let mut out = Vec::with_capacity(pattern.len() + client.len());
    let mut i = 0;
    while let Some(&b) = pattern.get(i) {
        match (b, pattern.get(i + 1)) {
            (b'%', Some(b'u')) => {
                let u = user.filter(|u| safe(u))?;
                out.extend_from_slice(u);
                i += 2;
            }
            (b'%', Some(b'c')) => {
                if !safe(client) {
                    return None;
                }
                out.extend_from_slice(client);
                i += 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Whether every topic matched by `filter` is also matched by `pattern`
/// (for a topic name without wildcards: whether `pattern` matches it).
pub fn covers(pattern: &[u8], filter: &[u8]) -> bool {
    // Filters starting with a wildcard do not reach `$` topics (MQTT 4.7.2).
    if filter.first() == Some(&b'$') && matches!(pattern.first(), Some(b'+' | b'#')) {
        return false;
    }
    let mut p = pattern.split(|b| *b == b'/');
    let mut f = filter.split(|b| *b == b'/');
    loop {
        match (p.next(), f.next()) {
            (Some(b"#"), _) => return true,
            (None, None) => return true,
            (Some(b"+"), Some(level)) if level != b"#" => {}
            (Some(pl), Some(fl)) if pl == fl && pl != b"+" && pl != b"#" => {}
            (Some(b"+"), Some(b"+")) => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: bool, actions: &[Action], users: &[&str], topics: &[&str]) -> Rule {
        Rule {
            allow,
            actions: actions.to_vec(),
            users: users.iter().map(|s| s.to_string()).collect(),
            client_prefixes: vec![],
            topics: topics.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn covers_follows_mqtt_wildcards() {
        assert!(covers(b"a/#", b"a"));
        assert!(covers(b"a/#", b"a/b/c"));
        assert!(covers(b"a/+/c", b"a/b/c"));
        assert!(!covers(b"a/+/c", b"a/b/d"));
        assert!(!covers(b"a/+", b"a/b/c"));
        assert!(covers(b"#", b"a/b"));
        assert!(!covers(b"#", b"$SYS/x"));
        assert!(!covers(b"+/x", b"$SYS/x"));
        assert!(covers(b"$SYS/#", b"$SYS/x"));
        // Filters within filters (subscribe).
        assert!(covers(b"a/#", b"a/+/c"));
        assert!(covers(b"a/+/c", b"a/+/c"));
        assert!(!covers(b"a/b/c", b"a/+/c"));
        assert!(!covers(b"a/+", b"a/#"));
        assert!(covers(b"a/#", b"a/#"));
    }

    #[test]
    fn substitutes_user_and_client_without_widening() {
        assert_eq!(
            substitute(b"d/%c/%u", Some(b"al"), b"c1").unwrap(),
            b"d/c1/al"
        );
        assert_eq!(substitute(b"d/%u", None, b"c1"), None);
        assert_eq!(substitute(b"d/%c", None, b"c/1"), None);
        assert_eq!(substitute(b"d/%c", None, b"#"), None);
        assert_eq!(substitute(b"100%", None, b"c"), Some(b"100%".to_vec()));
    }

    #[test]
    fn first_matching_rule_decides_then_the_default() {
        use Action::*;
        let acl = Acl {
            rules: vec![
                rule(false, &[Publish], &[], &["devices/%c/admin/#"]),
                rule(true, &[Publish, Subscribe], &[], &["devices/%c/#"]),
                rule(true, &[Subscribe], &["ops"], &["devices/#"]),
            ],
            default_allow: false,
        };
        let u = Some(&b"dev"[..]);
        assert!(acl.allows(u, b"c1", Publish, b"devices/c1/temp"));
        assert!(!acl.allows(u, b"c1", Publish, b"devices/c1/admin/reboot"));
        assert!(!acl.allows(u, b"c1", Publish, b"devices/c2/temp"));
        assert!(acl.allows(u, b"c1", Subscribe, b"devices/c1/+"));
        assert!(!acl.allows(u, b"c1", Subscribe, b"devices/+/temp"));
        assert!(acl.allows(Some(b"ops"), b"x", Subscribe, b"devices/+/temp"));
        assert!(!acl.allows(Some(b"ops"), b"x", Publish, b"devices/c1/temp"));
        assert!(acl.allows(u, b"c1", Subscribe, b"$share/g/devices/c1/#"));
        assert!(!acl.allows(u, b"c1", Subscribe, b"$share/g/devices/+/temp"));
        let open = Acl {
            rules: vec![],
            default_allow: true,
        };
        assert!(open.allows(None, b"c", Publish, b"anything"));
    }
}
