//! The MQTT edge policy of a listener, compiled from config: who may connect
//! ([`Users`]), what they may publish and subscribe ([`Acl`]), how many new
//! connections a second, and the tenant mount point. Immutable. The publish
//! limits (`mqtt.rate_limit`) are shared `rate_limit` filters of the
//! listener (`config::MqttRateLimit::as_filters`).

use std::path::Path;

use metrics::Counter;

use super::acl::{Acl, Action, Rule};
use super::rate::SharedBucket;
use super::users::{PasswordHash, Users};
use crate::config::{self, AclAction, AclVerdict, DeniedPublish, Problem};

/// Counters of one listener's MQTT traffic.
pub struct MqttMetrics {
    pub accepted: Counter,
    pub bad_credentials: Counter,
    pub not_authorized: Counter,
    pub unavailable: Counter,
    pub malformed: Counter,
    pub publishes_in: Counter,
    pub publishes_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub acl_denied: Counter,
    pub connection_rate_limited: Counter,
}

impl MqttMetrics {
    fn new(listener: &str) -> Self {
        let outcome = |o: &'static str| metrics::counter!("switchyard_mqtt_connects_total", "listener" => listener.to_owned(), "outcome" => o);
        let l = || listener.to_owned();
        Self {
            accepted: outcome("accepted"),
            bad_credentials: outcome("bad_credentials"),
            not_authorized: outcome("not_authorized"),
            unavailable: outcome("server_unavailable"),
            malformed: outcome("malformed"),
            publishes_in: metrics::counter!("switchyard_mqtt_publishes_total", "listener" => l(), "direction" => "client_to_broker"),
            publishes_out: metrics::counter!("switchyard_mqtt_publishes_total", "listener" => l(), "direction" => "broker_to_client"),
            bytes_in: metrics::counter!("switchyard_mqtt_payload_bytes_total", "listener" => l(), "direction" => "client_to_broker"),
            bytes_out: metrics::counter!("switchyard_mqtt_payload_bytes_total", "listener" => l(), "direction" => "broker_to_client"),
            acl_denied: metrics::counter!("switchyard_mqtt_acl_denied_total", "listener" => l()),
            connection_rate_limited: metrics::counter!("switchyard_mqtt_connection_rate_limited_total", "listener" => l()),
        }
    }
}

/// A listener's compiled MQTT policy.
pub struct MqttPolicy {
    pub max_packet: usize,
    pub connect_timeout: std::time::Duration,
    /// `None`: the gateway does not authenticate (the broker does).
    pub users: Option<Users>,
    /// A verified TLS client certificate's common name is the user.
    pub client_cert_identity: bool,
    pub acl: Acl,
    pub on_denied_publish: DeniedPublish,
    pub connection_rate: Option<SharedBucket>,
    /// Mount point pattern (`%u`, `%c` substituted per client).
    pub mount_point: Option<String>,
    pub metrics: MqttMetrics,
}

impl MqttPolicy {
    /// Compile `m` for listener `listener`; password files are read relative
    /// to `base` (the config file's folder).
    pub fn new(listener: &str, m: &config::Mqtt, base: &Path) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let field = |f: &str| format!("listeners[{listener}].mqtt.{f}");
        let users = if m.auth.enabled {
            let mut users = Users::new(m.auth.allow_anonymous);
            if let Some(file) = &m.auth.password_file {
                let path = base.join(&file.value);
                let loaded = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    .and_then(|text| {
                        users
                            .load_password_file(&text)
                            .map_err(|e| format!("{}: {e}", path.display()))
                    });
                if let Err(message) = loaded {
                    problems.push(Problem {
                        line: file.referenced.line(),
                        column: file.referenced.column(),
                        field: field("auth.password_file"),
                        message,
                        hint: Some("a file of user:hash lines written by mosquitto_passwd, relative to the config file".into()),
                    });
                }
            }
            for u in &m.auth.users {
                match PasswordHash::parse(&u.password_hash.value) {
                    Ok(h) => users.insert(&u.username, h),
                    Err(e) => problems.push(Problem {
                        line: u.password_hash.referenced.line(),
                        column: u.password_hash.referenced.column(),
                        field: field(&format!("auth.users[{}].password_hash", u.username)),
                        message: e,
                        hint: Some("make one with `mosquitto_passwd -c -b FILE USER PASSWORD` and copy the part after `USER:`".into()),
                    }),
                }
            }
            Some(users)
        } else {
            None
        };
        let acl = Acl {
            default_allow: m.acl.default == AclVerdict::Allow,
            rules: m
                .acl
                .rules
                .iter()
                .map(|r| Rule {
                    allow: r.verdict == AclVerdict::Allow,
                    actions: r
                        .actions
                        .iter()
                        .map(|a| match a {
                            AclAction::Publish => Action::Publish,
                            AclAction::Subscribe => Action::Subscribe,
                        })
                        .collect(),
                    users: r.users.clone(),
                    client_prefixes: r.client_prefixes.clone(),
                    topics: r.topics.clone(),
                })
                .collect(),
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let uses_user = m.mount_point.as_deref().is_some_and(|p| p.contains("%u"))
            || m.acl
                .rules
                .iter()
                .any(|r| !r.users.is_empty() || r.topics.iter().any(|t| t.contains("%u")));
        if uses_user && !m.auth.enabled {
            tracing::warn!(
                listener,
                "mqtt: the ACL or mount point depends on the user name, but auth is off: \
                 any client can claim any user name (set mqtt.auth.enabled)"
            );
        }
        Ok(Self {
            max_packet: m.max_packet_size,
            connect_timeout: m.connect_timeout.get(),
            users,
            client_cert_identity: m.auth.client_cert_identity,
            acl,
            on_denied_publish: m.acl.on_denied_publish,
            connection_rate: m
                .connection_rate
                .map(|s| SharedBucket::new(s.rate, s.burst())),
            mount_point: m.mount_point.clone(),
            metrics: MqttMetrics::new(listener),
        })
    }

    /// The mount point for one client, or `None` (no mount point, or one whose
    /// substitution would be unsafe: then the client must be refused).
    pub fn mount_for(&self, user: Option<&[u8]>, client: &[u8]) -> Option<Result<Vec<u8>, ()>> {
        let pattern = self.mount_point.as_ref()?;
        let unsafe_value =
            |v: &[u8]| v.is_empty() || v.iter().any(|b| matches!(b, b'+' | b'#' | b'/'));
        let mut out = Vec::new();
        let mut rest = pattern.as_bytes();
        while let Some(i) = rest.iter().position(|b| *b == b'%') {
            out.extend_from_slice(rest.get(..i).unwrap_or_default());
            match rest.get(i + 1) {
                Some(b'u') => match user {
                    Some(u) if !unsafe_value(u) => out.extend_from_slice(u),
                    _ => return Some(Err(())),
                },
                Some(b'c') if !unsafe_value(client) => out.extend_from_slice(client),
                Some(b'c') => return Some(Err(())),
                _ => {
                    out.push(b'%');
                    rest = rest.get(i + 1..).unwrap_or_default();
                    continue;
                }
            }
            rest = rest.get(i + 2..).unwrap_or_default();
        }
        out.extend_from_slice(rest);
        Some(Ok(out))
    }
}
