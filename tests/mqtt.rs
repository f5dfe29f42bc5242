//! MQTT 3.1.1 and 5 through the gateway binary, against private mosquitto
//! brokers: publish/subscribe at every QoS, retained and will messages,
//! sessions pinned to a broker by `ring_hash`, authentication with
//! `mosquitto_passwd` files, topic ACLs, rate limits, tenant mount points,
//! broker failures, malformed packets, keep-alive and `switchyard check`.
//!
//! Clients are rumqttc (its MQTT 3.1.1 and MQTT 5 clients) where a user's
//! library is what matters, and raw sockets where exact bytes and reason
//! codes are what is checked.

mod common;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use common::*;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------
// Gateway configs

/// A gateway with one MQTT listener `mq` routed to cluster `brokers`.
struct Config<'a> {
    brokers: Vec<SocketAddr>,
    /// The listener's `mqtt:` value, as a YAML flow mapping.
    mqtt: &'a str,
    /// Extra fields of cluster `brokers`, e.g. `lb: ring_hash`.
    cluster: Vec<&'a str>,
}

impl<'a> Config<'a> {
    fn new(brokers: &[&Mosquitto]) -> Self {
        Config {
            brokers: brokers.iter().map(|b| b.addr()).collect(),
            mqtt: "{}",
            cluster: Vec::new(),
        }
    }

    fn mqtt(mut self, mqtt: &'a str) -> Self {
        self.mqtt = mqtt;
        self
    }

    /// `lb: ring_hash` on the client id.
    fn ring_hash(mut self) -> Self {
        self.cluster.extend(["lb: ring_hash", "hash_on: client_id"]);
        self
    }

    fn cluster(mut self, field: &'a str) -> Self {
        self.cluster.push(field);
        self
    }

    fn render(&self, ports: &Ports) -> String {
        let hosts: Vec<String> = self.brokers.iter().map(|a| format!("\"{a}\"")).collect();
        let mut y = format!(
            "admin:
  address: 127.0.0.1:{admin}
listeners:
  - name: mq
    address: 127.0.0.1:{listen}
    protocols: [mqtt]
    route_table: main
    mqtt: {mqtt}
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: [\"*\"]
        routes:
          - {{match: {{protocol: mqtt}}, cluster: brokers}}
clusters:
  - name: brokers
    hosts: [{hosts}]
",
            admin = ports.admin,
            listen = ports.listen,
            mqtt = self.mqtt,
            hosts = hosts.join(", "),
        );
        for f in &self.cluster {
            y += &format!("    {f}\n");
        }
        y
    }

    fn start(&self) -> Gateway {
        Gateway::start(&self.render(&Ports::new()))
    }
}

// ---------------------------------------------------------------------------
// rumqttc clients, MQTT 3.1.1 and 5 behind one interface

/// The protocol version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V {
    V3,
    V5,
}

/// Connect options.
#[derive(Clone)]
struct Opts {
    clean: bool,
    /// MQTT 5 session expiry interval (seconds).
    session_expiry: Option<u32>,
    login: Option<(String, String)>,
    /// Will: topic, payload, QoS.
    will: Option<(String, Vec<u8>, u8)>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            clean: true,
            session_expiry: None,
            login: None,
            will: None,
        }
    }
}

impl Opts {
    /// A session the broker keeps: clean_session=false (3.1.1),
    /// clean_start=false and a 300 s session expiry (5).
    fn persistent() -> Self {
        Opts {
            clean: false,
            session_expiry: Some(300),
            ..Opts::default()
        }
    }

    fn login(mut self, user: &str, password: &str) -> Self {
        self.login = Some((user.to_owned(), password.to_owned()));
        self
    }

    fn will(mut self, topic: &str, payload: &[u8], qos: u8) -> Self {
        self.will = Some((topic.to_owned(), payload.to_vec(), qos));
        self
    }
}

/// A message as a subscriber received it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    retain: bool,
}

impl Msg {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// What a client's event loop saw, for both protocol versions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    ConnAck {
        session_present: bool,
        code: u8,
    },
    Publish(Msg),
    PubAck {
        reason: u8,
    },
    PubRec {
        reason: u8,
    },
    PubComp,
    SubAck {
        codes: Vec<u8>,
    },
    /// The server's DISCONNECT (MQTT 5); the connection is gone.
    Disconnect {
        reason: u8,
    },
    /// The event loop stopped with this error; the connection is gone.
    Closed(String),
}

enum Handle {
    V3(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// A rumqttc client whose event loop runs on a task until its first error.
struct Mq {
    id: String,
    handle: Handle,
    rx: mpsc::UnboundedReceiver<Ev>,
    /// Events received but not yet asked for.
    stash: VecDeque<Ev>,
    task: Option<tokio::task::JoinHandle<()>>,
    session_present: bool,
}

fn qos3(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn ev3(p: rumqttc::Packet) -> Option<Ev> {
    use rumqttc::{Packet as P, SubscribeReasonCode as S};
    Some(match p {
        P::ConnAck(c) => Ev::ConnAck {
            session_present: c.session_present,
            code: c.code as u8,
        },
        P::Publish(p) => Ev::Publish(Msg {
            topic: p.topic,
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            retain: p.retain,
        }),
        P::PubAck(_) => Ev::PubAck { reason: 0 },
        P::PubRec(_) => Ev::PubRec { reason: 0 },
        P::PubComp(_) => Ev::PubComp,
        P::SubAck(s) => Ev::SubAck {
            codes: s
                .return_codes
                .iter()
                .map(|c| match c {
                    S::Success(q) => *q as u8,
                    S::Failure => 0x80,
                })
                .collect(),
        },
        _ => return None,
    })
}

fn err3(e: rumqttc::ConnectionError) -> Ev {
    match e {
        rumqttc::ConnectionError::ConnectionRefused(code) => Ev::ConnAck {
            session_present: false,
            code: code as u8,
        },
        e => Ev::Closed(e.to_string()),
    }
}

fn connack5(c: rumqttc::v5::mqttbytes::v5::ConnectReturnCode) -> u8 {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as C;
    match c {
        C::Success => 0,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::UnsupportedProtocolVersion => 0x84,
        C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8a,
        other => panic!("unexpected MQTT 5 CONNACK code {other:?}"),
    }
}

fn ack5(r: rumqttc::v5::mqttbytes::v5::PubAckReason) -> u8 {
    use rumqttc::v5::mqttbytes::v5::PubAckReason as R;
    match r {
        R::Success => 0,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

fn rec5(r: rumqttc::v5::mqttbytes::v5::PubRecReason) -> u8 {
    use rumqttc::v5::mqttbytes::v5::PubRecReason as R;
    match r {
        R::Success => 0,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

fn ev5(p: rumqttc::v5::Incoming) -> Option<Ev> {
    use rumqttc::v5::Incoming as P;
    use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as S;
    Some(match p {
        P::ConnAck(c) => Ev::ConnAck {
            session_present: c.session_present,
            code: connack5(c.code),
        },
        P::Publish(p) => Ev::Publish(Msg {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            payload: p.payload.to_vec(),
            qos: p.qos as u8,
            retain: p.retain,
        }),
        P::PubAck(a) => Ev::PubAck {
            reason: ack5(a.reason),
        },
        P::PubRec(a) => Ev::PubRec {
            reason: rec5(a.reason),
        },
        P::PubComp(_) => Ev::PubComp,
        P::SubAck(s) => Ev::SubAck {
            codes: s
                .return_codes
                .iter()
                .map(|c| match c {
                    S::Success(q) => *q as u8,
                    S::Failure | S::Unspecified => 0x80,
                    S::ImplementationSpecific => 0x83,
                    S::NotAuthorized => 0x87,
                    S::TopicFilterInvalid => 0x8f,
                    S::PkidInUse => 0x91,
                    S::QuotaExceeded => 0x97,
                    S::SharedSubscriptionsNotSupported => 0x9e,
                    S::SubscriptionIdNotSupported => 0xa1,
                    S::WildcardSubscriptionsNotSupported => 0xa2,
                })
                .collect(),
        },
        _ => return None,
    })
}

fn err5(e: rumqttc::v5::ConnectionError) -> Ev {
    use rumqttc::v5::{ConnectionError as E, StateError};
    match e {
        E::ConnectionRefused(code) => Ev::ConnAck {
            session_present: false,
            code: connack5(code),
        },
        E::MqttState(StateError::ServerDisconnect { reason_code, .. }) => Ev::Disconnect {
            reason: reason_code as u8,
        },
        e => Ev::Closed(e.to_string()),
    }
}

impl Mq {
    /// Connect and wait for the CONNACK; the client may have been refused
    /// (then its event loop has ended). Returns the client and the CONNACK code.
    async fn try_connect(v: V, addr: SocketAddr, id: &str, opts: Opts) -> (Mq, u8) {
        let (tx, rx) = mpsc::unbounded_channel();
        let host = addr.ip().to_string();
        let (handle, task) = match v {
            V::V3 => {
                let mut o = rumqttc::MqttOptions::new(id, host, addr.port());
                o.set_clean_session(opts.clean)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(1 << 20, 1 << 20);
                if let Some((u, p)) = &opts.login {
                    o.set_credentials(u, p);
                }
                if let Some((t, p, q)) = &opts.will {
                    o.set_last_will(rumqttc::LastWill::new(t, p.clone(), qos3(*q), false));
                }
                let (client, mut el) = rumqttc::AsyncClient::new(o, 100);
                let task = tokio::spawn(async move {
                    loop {
                        let ev = match el.poll().await {
                            Ok(rumqttc::Event::Incoming(p)) => match ev3(p) {
                                Some(ev) => ev,
                                None => continue,
                            },
                            Ok(_) => continue,
                            Err(e) => {
                                let _ = tx.send(err3(e));
                                return;
                            }
                        };
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                });
                (Handle::V3(client), task)
            }
            V::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(id, host, addr.port());
                o.set_clean_start(opts.clean)
                    .set_keep_alive(Duration::from_secs(30))
                    .set_max_packet_size(Some(1 << 20));
                if opts.session_expiry.is_some() {
                    o.set_session_expiry_interval(opts.session_expiry);
                }
                if let Some((u, p)) = &opts.login {
                    o.set_credentials(u, p);
                }
                if let Some((t, p, q)) = &opts.will {
                    o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                        t,
                        p.clone(),
                        qos5(*q),
                        false,
                        None,
                    ));
                }
                let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 100);
                let task = tokio::spawn(async move {
                    loop {
                        let ev = match el.poll().await {
                            Ok(rumqttc::v5::Event::Incoming(p)) => match ev5(p) {
                                Some(ev) => ev,
                                None => continue,
                            },
                            Ok(_) => continue,
                            Err(e) => {
                                let _ = tx.send(err5(e));
                                return;
                            }
                        };
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                });
                (Handle::V5(client), task)
            }
        };
        let mut mq = Mq {
            id: id.to_owned(),
            handle,
            rx,
            stash: VecDeque::new(),
            task: Some(task),
            session_present: false,
        };
        let what = format!("the CONNACK of {id} ({v:?}) from {addr}");
        let (session_present, code) = mq
            .expect(&what, |e| match e {
                Ev::ConnAck {
                    session_present,
                    code,
                } => Some((*session_present, *code)),
                _ => None,
            })
            .await;
        mq.session_present = session_present;
        (mq, code)
    }

    /// Connect; the CONNACK must accept.
    async fn connect(v: V, addr: SocketAddr, id: &str, opts: Opts) -> Mq {
        let (mq, code) = Self::try_connect(v, addr, id, opts).await;
        assert_eq!(code, 0, "{id} ({v:?}) was refused by {addr}");
        mq
    }

    /// The next event, stashed ones first; panics after [`WAIT`].
    async fn next(&mut self, what: &str) -> Ev {
        if let Some(ev) = self.stash.pop_front() {
            return ev;
        }
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => panic!("{}: the event loop ended while waiting for {what}", self.id),
            Err(_) => panic!(
                "{}: nothing within {WAIT:?} while waiting for {what}",
                self.id
            ),
        }
    }

    /// Wait for the first event `f` accepts; the others stay stashed, in
    /// order. The end of the connection, unless accepted, fails the test.
    async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Ev) -> Option<T>) -> T {
        let mut skipped = Vec::new();
        let found = loop {
            let ev = if let Some(ev) = self.stash.pop_front() {
                ev
            } else {
                match tokio::time::timeout(WAIT, self.rx.recv()).await {
                    Ok(Some(ev)) => ev,
                    Ok(None) => panic!(
                        "{}: the event loop ended while waiting for {what}; before it: {skipped:?}",
                        self.id
                    ),
                    Err(_) => panic!(
                        "{}: no {what} within {WAIT:?}; got instead: {skipped:?}",
                        self.id
                    ),
                }
            };
            if let Some(t) = f(&ev) {
                break t;
            }
            if matches!(ev, Ev::Closed(_) | Ev::Disconnect { .. }) {
                panic!(
                    "{}: the connection ended ({ev:?}) while waiting for {what}; before it: {skipped:?}",
                    self.id
                );
            }
            skipped.push(ev);
        };
        for ev in skipped.into_iter().rev() {
            self.stash.push_front(ev);
        }
        found
    }

    async fn subscribe(&mut self, filters: &[(&str, u8)]) -> Vec<u8> {
        match &self.handle {
            Handle::V3(c) => c
                .subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new((*f).to_owned(), qos3(*q))),
                )
                .await
                .expect("queue SUBSCRIBE"),
            Handle::V5(c) => c
                .subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::v5::mqttbytes::v5::Filter::new(*f, qos5(*q))),
                )
                .await
                .expect("queue SUBSCRIBE"),
        }
        self.expect(&format!("the SUBACK for {filters:?}"), |e| match e {
            Ev::SubAck { codes } => Some(codes.clone()),
            _ => None,
        })
        .await
    }

    /// Queue a PUBLISH (no waiting for acknowledgements).
    async fn publish(&self, topic: &str, payload: impl AsRef<[u8]>, qos: u8, retain: bool) {
        let payload = payload.as_ref().to_vec();
        match &self.handle {
            Handle::V3(c) => c
                .publish(topic, qos3(qos), retain, payload)
                .await
                .expect("queue PUBLISH"),
            Handle::V5(c) => c
                .publish(topic, qos5(qos), retain, payload)
                .await
                .expect("queue PUBLISH"),
        }
    }

    /// Publish and wait for the end of the QoS exchange: the PUBACK's
    /// reason (QoS 1), the PUBREC's reason (QoS 2, MQTT 5 refusals end
    /// there) after the PUBCOMP when it succeeded; 0 for QoS 0.
    async fn publish_acked(&mut self, topic: &str, payload: impl AsRef<[u8]>, qos: u8) -> u8 {
        self.publish(topic, payload, qos, false).await;
        let what = format!("the acknowledgement of a QoS {qos} PUBLISH to {topic}");
        match qos {
            0 => 0,
            1 => {
                self.expect(&what, |e| match e {
                    Ev::PubAck { reason } => Some(*reason),
                    _ => None,
                })
                .await
            }
            _ => {
                let reason = self
                    .expect(&what, |e| match e {
                        Ev::PubRec { reason } => Some(*reason),
                        _ => None,
                    })
                    .await;
                if reason < 0x80 {
                    self.expect(&what, |e| matches!(e, Ev::PubComp).then_some(()))
                        .await;
                }
                reason
            }
        }
    }

    /// Publish; the acknowledgement must report success (MQTT 5: 0x00, or
    /// 0x10 "no matching subscribers").
    async fn publish_ok(&mut self, topic: &str, payload: impl AsRef<[u8]>, qos: u8) {
        let reason = self.publish_acked(topic, payload, qos).await;
        assert!(
            reason < 0x80,
            "{}: a QoS {qos} PUBLISH to {topic} was refused with {reason:#04x}",
            self.id
        );
    }

    async fn next_publish(&mut self) -> Msg {
        self.expect("a PUBLISH", |e| match e {
            Ev::Publish(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// Wait until the connection has ended: how it ended.
    async fn closed(&mut self) -> Ev {
        loop {
            match self.next("the end of the connection").await {
                ev @ (Ev::Closed(_) | Ev::Disconnect { .. }) => return ev,
                _ => continue,
            }
        }
    }

    /// Send DISCONNECT and wait for the connection to end.
    async fn disconnect(mut self) {
        match &self.handle {
            Handle::V3(c) => c.disconnect().await.expect("queue DISCONNECT"),
            Handle::V5(c) => c.disconnect().await.expect("queue DISCONNECT"),
        }
        self.closed().await;
    }

    /// Drop the TCP connection without DISCONNECT, as a crashed device does.
    async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Once the task is gone, so is its socket.
            let _ = task.await;
        }
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Which of `brokers` a client subscribed to `topic` is bound to: each
/// broker gets a message naming it, published straight to it; the client
/// receives only its own broker's.
async fn home_of(client: &mut Mq, topic: &str, brokers: &[(&str, &Mosquitto)]) -> String {
    for (name, broker) in brokers {
        let mut p = Mq::connect(
            V::V3,
            broker.addr(),
            &format!("probe-{name}"),
            Opts::default(),
        )
        .await;
        p.publish_ok(topic, name.as_bytes(), 1).await;
        p.disconnect().await;
    }
    client.next_publish().await.text()
}

/// Whether the broker logged a connection from client `id`.
fn broker_saw(broker: &Mosquitto, id: &str) -> bool {
    broker.log().contains(&format!(" as {id} ("))
}

// ---------------------------------------------------------------------------
// Raw MQTT, for exact bytes

mod raw {
    use super::*;

    pub fn varint(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                return out;
            }
        }
    }

    pub fn string(s: &[u8]) -> Vec<u8> {
        let mut out = (s.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(s);
        out
    }

    pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        out.extend(varint(body.len()));
        out.extend_from_slice(body);
        out
    }

    /// CONNECT with a clean session.
    pub fn connect(v: V, id: &str, keep_alive: u16, login: Option<(&str, &str)>) -> Vec<u8> {
        let mut b = string(b"MQTT");
        b.push(if v == V::V5 { 5 } else { 4 });
        let mut flags = 0x02;
        if login.is_some() {
            flags |= 0xc0;
        }
        b.push(flags);
        b.extend(keep_alive.to_be_bytes());
        if v == V::V5 {
            b.push(0); // no properties
        }
        b.extend(string(id.as_bytes()));
        if let Some((user, password)) = login {
            b.extend(string(user.as_bytes()));
            b.extend(string(password.as_bytes()));
        }
        packet(0x10, &b)
    }

    pub fn publish(v: V, topic: &str, payload: &[u8], qos: u8, packet_id: u16) -> Vec<u8> {
        let mut b = string(topic.as_bytes());
        if qos > 0 {
            b.extend(packet_id.to_be_bytes());
        }
        if v == V::V5 {
            b.push(0);
        }
        b.extend_from_slice(payload);
        packet(0x30 | (qos << 1), &b)
    }

    pub const PINGREQ: [u8; 2] = [0xc0, 0x00];

    /// One packet: type (high nibble), flags (low nibble), body.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Pkt {
        pub kind: u8,
        pub flags: u8,
        pub body: Vec<u8>,
    }

    pub const CONNACK: u8 = 2;
    pub const PUBACK: u8 = 4;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;

    impl Pkt {
        /// CONNACK return code / reason code.
        pub fn code(&self) -> u8 {
            assert_eq!(self.kind, CONNACK, "not a CONNACK: {self:?}");
            self.body[1]
        }
        pub fn packet_id(&self) -> u16 {
            u16::from_be_bytes([self.body[0], self.body[1]])
        }
        /// PUBACK / PUBREC reason (MQTT 5; 0 when left out).
        pub fn ack_reason(&self) -> u8 {
            self.body.get(2).copied().unwrap_or(0)
        }
        /// DISCONNECT reason (MQTT 5; 0 when left out).
        pub fn disconnect_reason(&self) -> u8 {
            assert_eq!(self.kind, DISCONNECT, "not a DISCONNECT: {self:?}");
            self.body.first().copied().unwrap_or(0)
        }
    }

    pub fn read(r: &mut impl Read) -> io::Result<Pkt> {
        let mut first = [0u8; 1];
        r.read_exact(&mut first)?;
        let mut len = 0usize;
        for i in 0..4 {
            let mut b = [0u8; 1];
            r.read_exact(&mut b)?;
            len |= usize::from(b[0] & 0x7f) << (7 * i);
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        Ok(Pkt {
            kind: first[0] >> 4,
            flags: first[0] & 0x0f,
            body,
        })
    }

    /// A blocking raw client.
    pub struct Raw {
        pub conn: RawConn,
        pub v: V,
    }

    impl Raw {
        /// Connect, send CONNECT and read the answer (CONNACK).
        pub fn connect(
            addr: SocketAddr,
            v: V,
            id: &str,
            keep_alive: u16,
            login: Option<(&str, &str)>,
        ) -> (Raw, Pkt) {
            let mut r = Raw {
                conn: RawConn::connect(addr),
                v,
            };
            r.conn.send(&connect(v, id, keep_alive, login));
            let answer = r.read();
            assert_eq!(answer.kind, CONNACK, "{id}: not a CONNACK: {answer:?}");
            (r, answer)
        }

        pub fn send(&mut self, bytes: &[u8]) {
            self.conn.send(bytes);
        }

        /// The next packet; panics at EOF or after [`WAIT`].
        pub fn read(&mut self) -> Pkt {
            read(&mut self.conn.reader).unwrap_or_else(|e| panic!("reading a packet: {e}"))
        }

        /// Every packet until the peer closes; panics if it stays open past [`WAIT`].
        pub fn read_until_closed(&mut self) -> (Vec<Pkt>, Closed) {
            let (bytes, how) = self.conn.read_until_closed();
            let mut rest = &bytes[..];
            let mut pkts = Vec::new();
            while !rest.is_empty() {
                match read(&mut rest) {
                    Ok(p) => pkts.push(p),
                    Err(_) => panic!("a partial packet before the close: {bytes:?}"),
                }
            }
            (pkts, how)
        }
    }
}

use raw::Raw;

// ---------------------------------------------------------------------------
// Publish and subscribe

async fn every_qos_reaches_a_subscriber(v: V) {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker]).start();
    let mut sub = Mq::connect(v, gw.addr(), "qos-sub", Opts::default()).await;
    assert_eq!(sub.subscribe(&[("qos/#", 2)]).await, vec![2]);
    let mut publisher = Mq::connect(v, gw.addr(), "qos-pub", Opts::default()).await;
    let binary: Vec<u8> = (0..=255u8).collect();
    let cases: Vec<(&str, u8, Vec<u8>)> = vec![
        ("qos/zero", 0, b"at most once".to_vec()),
        ("qos/one", 1, binary),
        ("qos/two", 2, b"exactly once".to_vec()),
        ("qos/one/large", 1, pattern(300_000)),
        ("qos/two/empty", 2, Vec::new()),
    ];
    for (topic, qos, payload) in &cases {
        assert_eq!(
            publisher.publish_acked(topic, payload, *qos).await,
            0,
            "QoS {qos} to {topic}"
        );
        let got = sub.next_publish().await;
        assert_eq!(got.topic, *topic);
        assert_same_bytes(&got.payload, payload, topic);
        assert_eq!((got.qos, got.retain), (*qos, false), "{topic}");
    }
    let passed = gw.metric(
        "switchyard_mqtt_publishes_total",
        &[("listener", "mq"), ("direction", "client_to_broker")],
    );
    assert_eq!(passed, cases.len() as f64);
    // The cluster's requests: both CONNECTs and every PUBLISH forwarded;
    // timed: the CONNECTs (to their CONNACK) and the QoS 1/2 PUBLISHes (to
    // the broker's PUBACK/PUBREC), not the QoS 0 one, which has no answer.
    let cluster = [("cluster", "brokers")];
    assert_eq!(
        gw.metric("switchyard_upstream_requests_total", &cluster),
        2.0 + cases.len() as f64
    );
    assert_eq!(
        gw.metric(
            "switchyard_upstream_request_duration_seconds_count",
            &cluster
        ),
        2.0 + cases.iter().filter(|(_, qos, _)| *qos > 0).count() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v311_every_qos_reaches_a_subscriber() {
    every_qos_reaches_a_subscriber(V::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v5_every_qos_reaches_a_subscriber() {
    every_qos_reaches_a_subscriber(V::V5).await;
}

async fn a_retained_message_reaches_a_later_subscriber(v: V) {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker]).start();
    let mut publisher = Mq::connect(v, gw.addr(), "ret-pub", Opts::default()).await;
    publisher.publish("status/door", "open", 1, true).await;
    publisher
        .expect("the PUBACK of the retained message", |e| match e {
            Ev::PubAck { reason } if *reason < 0x80 => Some(()),
            Ev::PubAck { reason } => panic!("the retained message was refused: {reason:#04x}"),
            _ => None,
        })
        .await;
    publisher.disconnect().await;
    let mut later = Mq::connect(v, gw.addr(), "ret-sub", Opts::default()).await;
    assert_eq!(later.subscribe(&[("status/#", 1)]).await, vec![1]);
    let got = later.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), got.text().as_str(), got.retain),
        ("status/door", "open", true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v311_a_retained_message_reaches_a_later_subscriber() {
    a_retained_message_reaches_a_later_subscriber(V::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v5_a_retained_message_reaches_a_later_subscriber() {
    a_retained_message_reaches_a_later_subscriber(V::V5).await;
}

async fn a_dropped_client_s_will_is_published(v: V) {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker]).start();
    let mut sub = Mq::connect(v, gw.addr(), "will-sub", Opts::default()).await;
    assert_eq!(sub.subscribe(&[("will/#", 1)]).await, vec![1]);
    // A client that says goodbye leaves no will...
    let polite = Mq::connect(
        v,
        gw.addr(),
        "polite",
        Opts::default().will("will/polite", b"polite is gone", 1),
    )
    .await;
    polite.disconnect().await;
    // ...one whose connection just drops does.
    let crashed = Mq::connect(
        v,
        gw.addr(),
        "crashed",
        Opts::default().will("will/crashed", b"crashed is gone", 1),
    )
    .await;
    crashed.kill().await;
    let got = sub.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), got.text().as_str()),
        ("will/crashed", "crashed is gone"),
        "the first will must be the dropped client's (a clean DISCONNECT sends none)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v311_a_dropped_client_s_will_is_published() {
    a_dropped_client_s_will_is_published(V::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v5_a_dropped_client_s_will_is_published() {
    a_dropped_client_s_will_is_published(V::V5).await;
}

// ---------------------------------------------------------------------------
// Sessions and ring_hash

async fn a_session_resumes_on_the_broker_that_holds_it(v: V) {
    let a = Mosquitto::start();
    let b = Mosquitto::start();
    let gw = Config::new(&[&a, &b]).ring_hash().start();
    let id = format!("sensor-x-{v:?}");
    let topic = format!("t/{id}");
    let mut x = Mq::connect(v, gw.addr(), &id, Opts::persistent()).await;
    assert!(!x.session_present, "a new client id has no session");
    assert_eq!(x.subscribe(&[(&topic, 1)]).await, vec![1]);
    x.disconnect().await;

    let mut home: Option<String> = None;
    for round in 0..3 {
        // While X is away, each broker gets a message for it.
        for (name, broker) in [("a", &a), ("b", &b)] {
            let mut p =
                Mq::connect(v, broker.addr(), &format!("direct-{name}"), Opts::default()).await;
            let payload = format!("{name}-{round}");
            p.publish_ok(&topic, &payload, 1).await;
            p.disconnect().await;
        }
        let mut x = Mq::connect(v, gw.addr(), &id, Opts::persistent()).await;
        assert!(
            x.session_present,
            "reconnect {round}: CONNACK must report the session (session_present=1)"
        );
        let queued = x.next_publish().await;
        let (from, _) = queued
            .text()
            .split_once('-')
            .map(|(f, r)| (f.to_owned(), r.to_owned()))
            .unwrap_or_else(|| panic!("unexpected message {queued:?}"));
        assert_eq!(queued.text(), format!("{from}-{round}"));
        let home = home.get_or_insert_with(|| from.clone());
        assert_eq!(
            &from, home,
            "reconnect {round} landed on another broker than before"
        );
        // Exactly one message was queued for X: a marker X sends itself
        // arrives right after it.
        x.publish_ok(&topic, "marker", 1).await;
        let next = x.next_publish().await;
        assert_eq!(
            next.text(),
            "marker",
            "a second queued message: X's session exists on both brokers"
        );
        x.disconnect().await;
    }
    let (home_broker, other) = if home.as_deref() == Some("a") {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(broker_saw(home_broker, &id));
    assert!(
        !broker_saw(other, &id),
        "X was never to reach the other broker"
    );
    // Straight to the brokers: only the home one holds X's session.
    let direct = Mq::connect(v, home_broker.addr(), &id, Opts::persistent()).await;
    assert!(direct.session_present);
    direct.disconnect().await;
    let direct = Mq::connect(v, other.addr(), &id, Opts::persistent()).await;
    assert!(!direct.session_present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v311_a_session_resumes_on_the_broker_that_holds_it() {
    a_session_resumes_on_the_broker_that_holds_it(V::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v5_a_session_resumes_on_the_broker_that_holds_it() {
    a_session_resumes_on_the_broker_that_holds_it(V::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ring_hash_spreads_client_ids_over_both_brokers() {
    let a = Mosquitto::start();
    let b = Mosquitto::start();
    let gw = Config::new(&[&a, &b]).ring_hash().start();
    let brokers = [("a", &a), ("b", &b)];
    let mut placed: Vec<(String, String)> = Vec::new();
    for i in 0..16 {
        let id = format!("device-{i:02}");
        let mut c = Mq::connect(V::V3, gw.addr(), &id, Opts::default()).await;
        let topic = format!("spread/{id}");
        assert_eq!(c.subscribe(&[(&topic, 1)]).await, vec![1]);
        let home = home_of(&mut c, &topic, &brokers).await;
        c.disconnect().await;
        // Reconnecting lands on the same broker.
        let mut c = Mq::connect(V::V3, gw.addr(), &id, Opts::default()).await;
        assert_eq!(c.subscribe(&[(&topic, 1)]).await, vec![1]);
        assert_eq!(home_of(&mut c, &topic, &brokers).await, home, "{id}");
        c.disconnect().await;
        placed.push((id, home));
    }
    let on_a = placed.iter().filter(|(_, h)| h == "a").count();
    assert!(
        on_a > 0 && on_a < placed.len(),
        "16 client ids should spread over both brokers: {placed:?}"
    );
    for (id, home) in &placed {
        let (mine, other) = if home == "a" { (&a, &b) } else { (&b, &a) };
        assert!(broker_saw(mine, id), "{id}");
        assert!(!broker_saw(other, id), "{id} also reached the other broker");
    }
}

// ---------------------------------------------------------------------------
// Authentication

/// `mosquitto_passwd -c -b FILE USER PASSWORD` (with `-H sha512` when asked).
fn mosquitto_passwd(file: &std::path::Path, user: &str, password: &str, sha512: bool) {
    let mut cmd = Command::new(require("mosquitto_passwd"));
    if sha512 {
        cmd.args(["-H", "sha512"]);
    }
    run_ok(cmd.arg("-c").arg("-b").arg(file).arg(user).arg(password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_auth_accepts_mosquitto_passwd_users_and_refuses_the_rest() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    mosquitto_passwd(&file, "alice", "s3cret!", false);
    // Bob's hash goes inline (a SHA-512 one, the other format mosquitto writes).
    let bob_file = dir.path().join("bob");
    mosquitto_passwd(&bob_file, "bob", "hunter2", true);
    let bob_line = std::fs::read_to_string(&bob_file).unwrap();
    let bob_hash = bob_line.trim().strip_prefix("bob:").expect("bob:hash");
    let mqtt = format!(
        "{{auth: {{enabled: true, allow_anonymous: false, password_file: \"{}\", users: [{{username: bob, password_hash: \"{bob_hash}\"}}]}}}}",
        file.display()
    );
    let gw = Config::new(&[&broker]).mqtt(&mqtt).start();

    // The right passwords: exact CONNACKs, then real clients' pub/sub.
    let (_ok3, connack) = Raw::connect(
        gw.addr(),
        V::V3,
        "raw-alice-3",
        30,
        Some(("alice", "s3cret!")),
    );
    assert_eq!(connack.body, [0, 0], "v3 CONNACK accepted");
    let (_ok5, connack) = Raw::connect(gw.addr(), V::V5, "raw-bob-5", 30, Some(("bob", "hunter2")));
    assert_eq!(connack.code(), 0, "v5 CONNACK success");
    let mut alice = Mq::connect(
        V::V3,
        gw.addr(),
        "alice-1",
        Opts::default().login("alice", "s3cret!"),
    )
    .await;
    let mut bob = Mq::connect(
        V::V5,
        gw.addr(),
        "bob-1",
        Opts::default().login("bob", "hunter2"),
    )
    .await;
    assert_eq!(bob.subscribe(&[("inbox/bob", 1)]).await, vec![1]);
    alice.publish_ok("inbox/bob", "hi bob", 1).await;
    assert_eq!(bob.next_publish().await.text(), "hi bob");

    // Refusals, with each version's code, and the connection closed after.
    type Login<'a> = Option<(&'a str, &'a str)>;
    let refused: [(V, &str, Login, u8); 6] = [
        (V::V3, "wrong-3", Some(("alice", "wrong")), 4),
        (V::V5, "wrong-5", Some(("alice", "wrong")), 0x86),
        (V::V3, "carol-3", Some(("carol", "s3cret!")), 4),
        (V::V5, "bob-as-alice-5", Some(("bob", "s3cret!")), 0x86),
        (V::V3, "anon-3", None, 5),
        (V::V5, "anon-5", None, 0x87),
    ];
    for (v, id, login, want) in refused {
        let (mut c, connack) = Raw::connect(gw.addr(), v, id, 30, login);
        assert_eq!(connack.code(), want, "{id} ({v:?})");
        assert_eq!(connack.body[0], 0, "{id}: no session_present on a refusal");
        let (after, _) = c.read_until_closed();
        assert!(
            after.is_empty(),
            "{id}: packets after the refusal: {after:?}"
        );
    }
    // rumqttc sees the same refusals.
    let (_, code) = Mq::try_connect(
        V::V3,
        gw.addr(),
        "lib-wrong-3",
        Opts::default().login("alice", "nope"),
    )
    .await;
    assert_eq!(code, 4);
    let (_, code) = Mq::try_connect(V::V5, gw.addr(), "lib-anon-5", Opts::default()).await;
    assert_eq!(code, 0x87);

    // Refused clients never reached the broker.
    for id in ["raw-alice-3", "raw-bob-5", "alice-1", "bob-1"] {
        assert!(broker_saw(&broker, id), "{id} should be on the broker");
    }
    for id in [
        "wrong-3",
        "wrong-5",
        "carol-3",
        "bob-as-alice-5",
        "anon-3",
        "anon-5",
        "lib-wrong-3",
        "lib-anon-5",
    ] {
        assert!(!broker_saw(&broker, id), "{id} reached the broker");
    }
    let outcome = |o: &str| {
        gw.metric(
            "switchyard_mqtt_connects_total",
            &[("listener", "mq"), ("outcome", o)],
        )
    };
    assert_eq!(outcome("accepted"), 4.0);
    assert_eq!(outcome("bad_credentials"), 5.0);
    assert_eq!(outcome("not_authorized"), 3.0);
}

// ---------------------------------------------------------------------------
// Topic ACL

const ACL: &str = r#"{acl: {default: deny, rules: [{verdict: allow, topics: ["devices/%c/#"]}, {verdict: allow, actions: [subscribe], topics: ["broadcast/#"]}]}}"#;

const ACL_DISCONNECT: &str = r#"{acl: {default: deny, on_denied_publish: disconnect, rules: [{verdict: allow, topics: ["devices/%c/#"]}, {verdict: allow, actions: [subscribe], topics: ["broadcast/#"]}]}}"#;

async fn the_acl_limits_publish_and_subscribe(v: V) {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker]).mqtt(ACL).start();
    // Everything that reaches the broker.
    let mut watcher = Mq::connect(v, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("#", 1)]).await, vec![1]);
    let refused = if v == V::V5 { 0x87 } else { 0x80 };
    // MQTT 3 has no reason codes: a refused QoS 1/2 PUBLISH is acknowledged plainly.
    let refused_ack = if v == V::V5 { 0x87 } else { 0 };

    let mut c1 = Mq::connect(v, gw.addr(), "c1", Opts::default()).await;
    c1.publish_ok("devices/c1/x", "mine", 1).await;
    let seen = watcher.next_publish().await;
    assert_eq!(
        (seen.topic.as_str(), seen.text().as_str()),
        ("devices/c1/x", "mine")
    );

    c1.publish_ok("devices/c2/x", "not mine 0", 0).await;
    assert_eq!(
        c1.publish_acked("devices/c2/x", "not mine 1", 1).await,
        refused_ack,
        "QoS 1 to another device's topic"
    );
    assert_eq!(
        c1.publish_acked("devices/c2/x", "not mine 2", 2).await,
        refused_ack,
        "QoS 2 to another device's topic"
    );
    assert_eq!(
        c1.publish_acked("broadcast/all", "subscribe only", 1).await,
        refused_ack,
        "broadcast/# is subscribe-only"
    );
    c1.publish_ok("devices/c1/x", "marker", 1).await;
    let seen = watcher.next_publish().await;
    assert_eq!(
        (seen.topic.as_str(), seen.text().as_str()),
        ("devices/c1/x", "marker"),
        "a refused PUBLISH reached the broker"
    );

    assert_eq!(c1.subscribe(&[("devices/+/x", 1)]).await, vec![refused]);
    assert_eq!(
        c1.subscribe(&[("devices/c1/in", 1), ("devices/+/x", 1), ("broadcast/#", 0)])
            .await,
        vec![1, refused, 0],
        "per-filter codes in the SUBSCRIBE's order"
    );
    let mut direct = Mq::connect(v, broker.addr(), "direct-pub", Opts::default()).await;
    for (topic, text) in [
        ("devices/c2/x", "for c2"),
        ("devices/c1/in", "for c1"),
        ("broadcast/news", "for all"),
    ] {
        direct.publish_ok(topic, text, 1).await;
    }
    let first = c1.next_publish().await;
    assert_eq!(
        (first.topic.as_str(), first.text().as_str()),
        ("devices/c1/in", "for c1"),
        "the refused filter must not have been subscribed"
    );
    let second = c1.next_publish().await;
    assert_eq!(
        (second.topic.as_str(), second.text().as_str()),
        ("broadcast/news", "for all")
    );
    let denied = gw.metric("switchyard_mqtt_acl_denied_total", &[("listener", "mq")]);
    assert_eq!(denied, 6.0, "4 publishes and 2 filters were refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v311_the_acl_limits_publish_and_subscribe() {
    the_acl_limits_publish_and_subscribe(V::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v5_the_acl_limits_publish_and_subscribe() {
    the_acl_limits_publish_and_subscribe(V::V5).await;
}

async fn a_denied_publish_can_disconnect_the_client(v: V) {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker]).mqtt(ACL_DISCONNECT).start();
    let mut watcher = Mq::connect(v, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("#", 1)]).await, vec![1]);
    let (mut c1, connack) = Raw::connect(gw.addr(), v, "c1", 30, None);
    assert_eq!(connack.code(), 0);
    c1.send(&raw::publish(v, "devices/c1/x", b"mine", 1, 1));
    let ack = c1.read();
    assert_eq!(
        (ack.kind, ack.packet_id(), ack.ack_reason()),
        (raw::PUBACK, 1, 0)
    );
    c1.send(&raw::publish(v, "devices/c2/x", b"not mine", 1, 2));
    let (after, how) = c1.read_until_closed();
    assert_eq!(how, Closed::Eof);
    match v {
        V::V5 => {
            assert_eq!(after.len(), 1, "only a DISCONNECT: {after:?}");
            assert_eq!(after[0].disconnect_reason(), 0x87, "not authorized");
        }
        // MQTT 3.1.1 servers send no DISCONNECT: the connection is closed.
        V::V3 => assert!(after.is_empty(), "{after:?}"),
    }
    let mut direct = Mq::connect(v, broker.addr(), "direct-pub", Opts::default()).await;
    direct.publish_ok("marker", "marker", 1).await;
    for want in [("devices/c1/x", "mine"), ("marker", "marker")] {
        let seen = watcher.next_publish().await;
        assert_eq!(
            (seen.topic.as_str(), seen.text().as_str()),
            want,
            "the refused PUBLISH reached the broker"
        );
    }
    // The client may come back and behave.
    let mut again = Mq::connect(v, gw.addr(), "c1", Opts::default()).await;
    again.publish_ok("devices/c1/x", "back", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v311_a_denied_publish_can_disconnect_the_client() {
    a_denied_publish_can_disconnect_the_client(V::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v5_a_denied_publish_can_disconnect_the_client() {
    a_denied_publish_can_disconnect_the_client(V::V5).await;
}

/// A will is a PUBLISH the broker makes for the client later: the ACL
/// applies to its topic as to any PUBLISH (mosquitto's own ACL refuses such
/// a CONNECT).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_acl_applies_to_the_will_topic() {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker]).mqtt(ACL).start();
    let mut watcher = Mq::connect(V::V3, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("#", 1)]).await, vec![1]);
    // Its own topic: allowed, and the will is published.
    let c3 = Mq::connect(
        V::V3,
        gw.addr(),
        "c3",
        Opts::default().will("devices/c3/status", b"c3 offline", 1),
    )
    .await;
    c3.kill().await;
    let seen = watcher.next_publish().await;
    assert_eq!(
        (seen.topic.as_str(), seen.text().as_str()),
        ("devices/c3/status", "c3 offline")
    );
    // Another device's topic: refused at CONNECT, or never published.
    let (c1, code) = Mq::try_connect(
        V::V3,
        gw.addr(),
        "c1",
        Opts::default().will("devices/c2/status", b"forged by c1", 1),
    )
    .await;
    if code == 0 {
        c1.kill().await;
        // Once c1 is back, the broker is done with its old connection.
        let mut c1 = Mq::connect(V::V3, gw.addr(), "c1", Opts::default()).await;
        c1.publish_ok("devices/c1/marker", "marker", 1).await;
        let seen = watcher.next_publish().await;
        assert_eq!(
            (seen.topic.as_str(), seen.text().as_str()),
            ("devices/c1/marker", "marker"),
            "c1's will was published to a topic the ACL denies it"
        );
    } else {
        assert_eq!(code, 5, "a refused will: CONNACK not authorized");
    }
}

/// `$share/{group}/{filter}` subscribes to `{filter}`: a deny rule on the
/// filter must hold for its shared form too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_subscription_does_not_bypass_a_deny_rule() {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker])
        .mqtt(r#"{acl: {default: allow, rules: [{verdict: deny, actions: [subscribe], topics: ["secret/#"]}]}}"#)
        .start();
    let mut c = Mq::connect(V::V5, gw.addr(), "snoop", Opts::default()).await;
    assert_eq!(c.subscribe(&[("secret/#", 1)]).await, vec![0x87]);
    assert_eq!(c.subscribe(&[("open/#", 1)]).await, vec![1]);
    let shared = c.subscribe(&[("$share/g/secret/#", 1)]).await;
    let mut direct = Mq::connect(V::V5, broker.addr(), "direct-pub", Opts::default()).await;
    direct.publish_ok("secret/plans", "classified", 1).await;
    direct.publish_ok("open/news", "public", 1).await;
    let first = c.next_publish().await;
    assert_eq!(
        (first.topic.as_str(), first.text().as_str()),
        ("open/news", "public"),
        "a shared subscription read a denied topic (its SUBACK: {shared:?})"
    );
    assert_eq!(shared, vec![0x87]);
}

// ---------------------------------------------------------------------------
// Rate limits

/// The reason the gateway gives a QoS 1 PUBLISH over the rate limit.
/// Quota exceeded: the PUBACK reason for an over-limit publish (0x96 is not
/// allowed in a PUBACK, MQTT 5 §3.4.2.1).
const RATE_REFUSED: u8 = 0x97;

/// Send `n` QoS 1 PUBLISHes in one write, packet ids 1..=n.
fn flood(c: &mut Raw, topic: &str, n: u16) {
    let mut burst = Vec::new();
    for i in 1..=n {
        burst.extend(raw::publish(c.v, topic, format!("m{i}").as_bytes(), 1, i));
    }
    c.send(&burst);
}

/// What `watcher` (subscribed to `topic`'s parent straight on the broker)
/// received before a marker published straight to the broker after it.
async fn received_before_marker(watcher: &mut Mq, broker: &Mosquitto, topic: &str) -> Vec<Msg> {
    let mut p = Mq::connect(V::V3, broker.addr(), "marker-pub", Opts::default()).await;
    p.publish_ok(topic, "marker", 1).await;
    p.disconnect().await;
    let mut got = Vec::new();
    loop {
        let m = watcher.next_publish().await;
        if m.text() == "marker" {
            return got;
        }
        got.push(m);
    }
}

/// A gateway whose MQTT route carries `filters` (a YAML flow sequence).
fn filtered(broker: &Mosquitto, filters: &str) -> Gateway {
    let yaml = Config::new(&[broker]).render(&Ports::new()).replace(
        "{match: {protocol: mqtt}, cluster: brokers}",
        &format!("{{match: {{protocol: mqtt}}, cluster: brokers, filters: {filters}}}"),
    );
    assert!(yaml.contains("filters:"), "the route line changed: {yaml}");
    Gateway::start(&yaml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shared_rate_limit_by_client_id_gives_each_client_its_burst() {
    let broker = Mosquitto::start();
    // One token per 1000 s: each client id gets exactly its burst of 4.
    let gw = filtered(
        &broker,
        "[{rate_limit: {rate: 0.001, burst: 4, key: client_id}}]",
    );
    let mut watcher = Mq::connect(V::V3, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("shared/#", 1)]).await, vec![1]);
    for id in ["dev-a", "dev-b"] {
        let mut c = Mq::connect(V::V5, gw.addr(), id, Opts::default()).await;
        let mut reasons = Vec::new();
        for i in 0..10 {
            reasons.push(
                c.publish_acked(&format!("shared/{id}"), format!("{id}-{i}"), 1)
                    .await,
            );
        }
        // The CONNECT took a token too (it is a request to the filters).
        assert_eq!(reasons[..3], [0, 0, 0], "{id}: {reasons:?}");
        assert!(
            reasons[3..].iter().all(|r| *r == 0x97),
            "{id}: quota exceeded: {reasons:?}"
        );
    }
    let got = received_before_marker(&mut watcher, &broker, "shared/marker").await;
    let texts: Vec<String> = got.iter().map(|m| m.text()).collect();
    assert_eq!(
        texts,
        [
            "dev-a-0", "dev-a-1", "dev-a-2", "dev-b-0", "dev-b-1", "dev-b-2"
        ]
    );
}

async fn ip_access_refuses_the_connect(v: V) {
    let broker = Mosquitto::start();
    let gw = filtered(&broker, "[{ip_access: {deny: [127.0.0.0/8]}}]");
    let (_, code) = Mq::try_connect(v, gw.addr(), "denied", Opts::default()).await;
    let want = if v == V::V5 { 0x87 } else { 5 };
    assert_eq!(code, want, "not authorized");
    assert!(
        !broker_saw(&broker, "denied"),
        "the broker never heard of it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v311_ip_access_refuses_the_connect() {
    ip_access_refuses_the_connect(V::V3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v5_ip_access_refuses_the_connect() {
    ip_access_refuses_the_connect(V::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payload_limit_refuses_big_publishes_only() {
    let broker = Mosquitto::start();
    let gw = filtered(&broker, "[{payload_limit: {max_bytes: 1000}}]");
    let mut watcher = Mq::connect(V::V3, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("size/#", 1)]).await, vec![1]);
    let mut c = Mq::connect(V::V5, gw.addr(), "sizer", Opts::default()).await;
    assert_eq!(c.publish_acked("size/small", vec![b's'; 1000], 1).await, 0);
    assert_eq!(c.publish_acked("size/big", vec![b'b'; 1001], 1).await, 0x80);
    let got = received_before_marker(&mut watcher, &broker, "size/marker").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic, "size/small");
}

/// `mqtt.rate_limit` is a shared `rate_limit` filter of the listener: its
/// verdicts are counted with the listener's filters.
fn rate_limit_verdicts(gw: &Gateway, verdict: &str) -> f64 {
    gw.metric(
        "switchyard_filter_verdicts_total",
        &[
            ("filter", "rate_limit"),
            ("scope", "listener:mq"),
            ("verdict", verdict),
        ],
    )
}

/// `bytes` counts PUBLISH payload bytes per client id; SUBSCRIBEs and the
/// other packets are not PUBLISHes and take no tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_byte_rate_limit_counts_payload_bytes_of_publishes_only() {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker])
        .mqtt("{rate_limit: {messages: {rate: 0.001, burst: 3}, bytes: {rate: 0.001, burst: 1000}, over_limit: drop}}")
        .start();
    let mut watcher = Mq::connect(V::V3, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("bytes/#", 1)]).await, vec![1]);
    let mut c = Mq::connect(V::V5, gw.addr(), "byter", Opts::default()).await;
    // Subscribing four times is not publishing: the message burst (3) is untouched.
    for i in 0..4 {
        assert_eq!(c.subscribe(&[(&format!("x/{i}"), 1)]).await, vec![1]);
    }
    assert_eq!(c.publish_acked("bytes/a", vec![b'a'; 600], 1).await, 0);
    assert_eq!(
        c.publish_acked("bytes/b", vec![b'b'; 600], 1).await,
        RATE_REFUSED,
        "400 bytes left"
    );
    assert_eq!(c.publish_acked("bytes/c", vec![b'c'; 400], 1).await, 0);
    assert_eq!(
        c.publish_acked("bytes/d", vec![], 1).await,
        RATE_REFUSED,
        "3 messages were taken"
    );
    // Another client id has buckets of its own.
    let mut other = Mq::connect(V::V5, gw.addr(), "other", Opts::default()).await;
    assert_eq!(other.publish_acked("bytes/e", vec![b'e'; 900], 1).await, 0);
    let got = received_before_marker(&mut watcher, &broker, "bytes/marker").await;
    let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["bytes/a", "bytes/c", "bytes/e"]);
    assert_eq!(rate_limit_verdicts(&gw, "refuse"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_rate_limit_publishes_are_dropped() {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker])
        .mqtt("{rate_limit: {messages: {rate: 1, burst: 5}, over_limit: drop}}")
        .start();
    let mut watcher = Mq::connect(V::V3, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("rate/#", 1)]).await, vec![1]);
    let (mut c, connack) = Raw::connect(gw.addr(), V::V5, "flood", 60, None);
    assert_eq!(connack.code(), 0);
    flood(&mut c, "rate/x", 20);
    let mut reasons = Vec::new();
    for _ in 0..20 {
        let ack = c.read();
        assert_eq!(ack.kind, raw::PUBACK, "{ack:?}");
        reasons.push((ack.packet_id(), ack.ack_reason()));
    }
    let mut ids: Vec<u16> = reasons.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>(), "one PUBACK per PUBLISH");
    let refused = reasons.iter().filter(|(_, r)| *r == RATE_REFUSED).count();
    let passed = reasons.iter().filter(|(_, r)| *r == 0).count();
    assert!(refused >= 10, "PUBACK reasons: {reasons:?}");
    assert_eq!(refused + passed, 20, "PUBACK reasons: {reasons:?}");
    let got = received_before_marker(&mut watcher, &broker, "rate/marker").await;
    assert!(
        (5..=10).contains(&got.len()),
        "the broker got {} of 20: {got:?}",
        got.len()
    );
    assert_eq!(got.len(), passed, "forwarded = acknowledged with success");
    assert_eq!(got[0].text(), "m1", "the burst goes first");
    assert!(rate_limit_verdicts(&gw, "refuse") >= 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_rate_limit_a_client_can_be_disconnected() {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker])
        .mqtt("{rate_limit: {messages: {rate: 1, burst: 5}, over_limit: disconnect}}")
        .start();
    let mut watcher = Mq::connect(V::V3, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("rate/#", 1)]).await, vec![1]);
    let (mut c, connack) = Raw::connect(gw.addr(), V::V5, "flood", 60, None);
    assert_eq!(connack.code(), 0);
    flood(&mut c, "rate/x", 20);
    let (pkts, _) = c.read_until_closed();
    let (last, acks) = pkts.split_last().expect("a DISCONNECT before the close");
    assert_eq!(last.disconnect_reason(), 0x96, "{pkts:?}");
    // PUBACKs of forwarded messages may or may not make it before the close.
    assert!(
        acks.iter()
            .all(|a| a.kind == raw::PUBACK && a.ack_reason() == 0),
        "before the DISCONNECT: {acks:?}"
    );
    let got = received_before_marker(&mut watcher, &broker, "rate/marker").await;
    // (That the burst itself is not lost on the close is
    // `messages_forwarded_before_a_disconnect_are_not_lost`.)
    assert!(
        got.len() <= 10,
        "the broker got {} of 20: {got:?}",
        got.len()
    );
    // MQTT 3.1.1 has no DISCONNECT from the server: the connection is closed.
    let (mut c3, connack) = Raw::connect(gw.addr(), V::V3, "flood3", 60, None);
    assert_eq!(connack.code(), 0);
    flood(&mut c3, "rate/y", 20);
    let (pkts, _) = c3.read_until_closed();
    assert!(
        pkts.iter().all(|p| p.kind == raw::PUBACK),
        "only PUBACKs before the close: {pkts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_rate_limit_publishes_are_delayed_not_lost() {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker])
        .mqtt("{rate_limit: {messages: {rate: 20, burst: 5}, over_limit: delay}}")
        .start();
    let mut watcher = Mq::connect(V::V3, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("rate/#", 1)]).await, vec![1]);
    let (mut c, connack) = Raw::connect(gw.addr(), V::V5, "flood", 60, None);
    assert_eq!(connack.code(), 0);
    flood(&mut c, "rate/x", 20);
    for i in 1..=20 {
        let ack = c.read();
        assert_eq!(
            (ack.kind, ack.packet_id(), ack.ack_reason()),
            (raw::PUBACK, i, 0)
        );
    }
    let got = received_before_marker(&mut watcher, &broker, "rate/marker").await;
    let texts: Vec<String> = got.iter().map(Msg::text).collect();
    let want: Vec<String> = (1..=20).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, want);
    assert!(
        rate_limit_verdicts(&gw, "delay") >= 1.0,
        "the limiter should have held some of the 20 back"
    );
}

/// When the gateway ends a session (here: a denied PUBLISH with
/// `on_denied_publish: disconnect`), what it already forwarded to the broker
/// must still reach it. Closing the upstream socket outright while the
/// broker still sends (a PUBACK, a message for the client) resets the
/// connection, and mosquitto drops the messages it had not read yet.
/// (The rate limit in `delay` mode only batches the six messages.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_forwarded_before_a_disconnect_are_not_lost() {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker])
        .mqtt(
            r#"{rate_limit: {messages: {rate: 1, burst: 5}, over_limit: delay}, acl: {default: allow, on_denied_publish: disconnect, rules: [{verdict: deny, topics: ["forbidden"]}]}}"#,
        )
        .start();
    let mut watcher = Mq::connect(V::V3, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("in/#", 1)]).await, vec![1]);
    let (mut c, connack) = Raw::connect(gw.addr(), V::V3, "device", 60, None);
    assert_eq!(connack.code(), 0);
    // SUBSCRIBE news (QoS 0), packet id 1.
    c.send(&raw::packet(0x82, b"\x00\x01\x00\x04news\x00"));
    assert_eq!(c.read().kind, 9, "SUBACK");
    // Six messages (the sixth waits ~1 s for the rate limit), then a denied one.
    let mut burst = Vec::new();
    for i in 1..=6 {
        burst.extend(raw::publish(V::V3, &format!("in/{i}"), b"data", 1, i));
    }
    burst.extend(raw::publish(V::V3, "forbidden", b"no", 0, 0));
    c.send(&burst);
    // While the gateway holds the sixth back, the broker has news for the device.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut direct = Mq::connect(V::V3, broker.addr(), "newsroom", Opts::default()).await;
    direct.publish_ok("news", "extra", 1).await;
    let _ = c.conn.read_until_closed();
    let got = received_before_marker(&mut watcher, &broker, "in/marker").await;
    let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        ["in/1", "in/2", "in/3", "in/4", "in/5", "in/6"],
        "messages the gateway forwarded were lost when it closed the session"
    );
}

/// An MQTT 5 client library must be able to stay connected while it is
/// rate limited: a PUBACK may only carry the reason codes MQTT 5 lists for
/// PUBACK (3.4.2.1; 0x96 is not one of them, 0x97 "quota exceeded" is).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_mqtt5_library_client_keeps_its_connection() {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker])
        .mqtt("{rate_limit: {messages: {rate: 1, burst: 5}, over_limit: drop}}")
        .start();
    let mut c = Mq::connect(V::V5, gw.addr(), "lib-flood", Opts::default()).await;
    for i in 0..20 {
        c.publish("rate/x", format!("m{i}"), 1, false).await;
    }
    let mut reasons = Vec::new();
    for _ in 0..20 {
        let ev = c.next("20 PUBACKs").await;
        match ev {
            Ev::PubAck { reason } => reasons.push(reason),
            other => panic!("after PUBACK reasons {reasons:?}: {other:?}"),
        }
    }
    assert!(
        reasons.iter().filter(|r| **r >= 0x80).count() >= 10,
        "{reasons:?}"
    );
}

// ---------------------------------------------------------------------------
// Mount points

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mount_point_keeps_tenants_apart() {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker])
        .mqtt(r#"{mount_point: "tenants/%u/"}"#)
        .start();
    let mut watcher = Mq::connect(V::V3, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("tenants/#", 1)]).await, vec![1]);
    let mut u1 = Mq::connect(V::V3, gw.addr(), "m-u1", Opts::default().login("u1", "x")).await;
    let mut u2 = Mq::connect(V::V5, gw.addr(), "m-u2", Opts::default().login("u2", "x")).await;
    assert_eq!(u1.subscribe(&[("a/#", 1)]).await, vec![1]);
    assert_eq!(u2.subscribe(&[("a/#", 1)]).await, vec![1]);

    u1.publish_ok("a/b", "from u1", 1).await;
    let seen = watcher.next_publish().await;
    assert_eq!(
        (seen.topic.as_str(), seen.text().as_str()),
        ("tenants/u1/a/b", "from u1"),
        "on the broker, under the tenant's mount point"
    );
    let got = u1.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), got.text().as_str()),
        ("a/b", "from u1")
    );

    u2.publish_ok("a/z", "from u2", 1).await;
    let seen = watcher.next_publish().await;
    assert_eq!(seen.topic, "tenants/u2/a/z");
    let got = u2.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), got.text().as_str()),
        ("a/z", "from u2")
    );

    // Published straight on the broker: each tenant sees only its own.
    let mut direct = Mq::connect(V::V3, broker.addr(), "direct-pub", Opts::default()).await;
    for (topic, text) in [
        ("tenants/u2/a/b", "for u2"),
        ("a/b", "unmounted"),
        ("tenants/u1/a/c", "for u1"),
    ] {
        direct.publish_ok(topic, text, 1).await;
    }
    let got = u1.next_publish().await;
    assert_eq!(
        (got.topic.as_str(), got.text().as_str()),
        ("a/c", "for u1"),
        "u1 got another tenant's message first"
    );
    let got = u2.next_publish().await;
    assert_eq!((got.topic.as_str(), got.text().as_str()), ("a/b", "for u2"));

    // No user name, no tenant: refused.
    let (_, connack) = Raw::connect(gw.addr(), V::V3, "nobody", 30, None);
    assert_eq!(connack.code(), 5);
}

/// The will is published under the tenant's mount point like the client's
/// other messages, not in the broker's root (where another tenant's
/// subscription, or a forged topic, would get it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mount_point_applies_to_the_will_topic() {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker])
        .mqtt(r#"{mount_point: "tenants/%u/"}"#)
        .start();
    let mut watcher = Mq::connect(V::V3, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("#", 1)]).await, vec![1]);
    let u1 = Mq::connect(
        V::V3,
        gw.addr(),
        "w-u1",
        Opts::default()
            .login("u1", "x")
            .will("status", b"u1 offline", 1),
    )
    .await;
    u1.kill().await;
    let seen = watcher.next_publish().await;
    assert_eq!(
        (seen.topic.as_str(), seen.text().as_str()),
        ("tenants/u1/status", "u1 offline")
    );
}

// ---------------------------------------------------------------------------
// Broker failures

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_broker_closes_its_sessions_and_clients_fail_over() {
    let mut a = Mosquitto::start();
    let mut b = Mosquitto::start();
    let gw = Config::new(&[&a, &b]).ring_hash().start();
    let topic = "k/survivor";
    let mut c = Mq::connect(V::V3, gw.addr(), "survivor", Opts::default()).await;
    assert_eq!(c.subscribe(&[(topic, 1)]).await, vec![1]);
    let home = home_of(&mut c, topic, &[("a", &a), ("b", &b)]).await;
    let live = if home == "a" {
        a.kill();
        &b
    } else {
        b.kill();
        &a
    };
    let end = c.closed().await;
    assert!(matches!(end, Ev::Closed(_)), "{end:?}");
    // Back through the gateway: on the live broker, and working.
    let mut c = Mq::connect(V::V3, gw.addr(), "survivor", Opts::default()).await;
    assert_eq!(c.subscribe(&[(topic, 1)]).await, vec![1]);
    c.publish_ok(topic, "still here", 1).await;
    assert_eq!(c.next_publish().await.text(), "still here");
    let mut direct = Mq::connect(V::V3, live.addr(), "direct-pub", Opts::default()).await;
    direct.publish_ok(topic, "from the live broker", 1).await;
    assert_eq!(c.next_publish().await.text(), "from the live broker");
    let mut v5 = Mq::connect(V::V5, gw.addr(), "survivor-5", Opts::default()).await;
    v5.publish_ok(topic, "v5 too", 1).await;
    assert_eq!(c.next_publish().await.text(), "v5 too");
    // The broker comes back (empty): the client id goes home again.
    c.disconnect().await;
    if home == "a" {
        a.restart();
    } else {
        b.restart();
    }
    let mut c = Mq::connect(V::V3, gw.addr(), "survivor", Opts::default()).await;
    assert_eq!(c.subscribe(&[(topic, 1)]).await, vec![1]);
    assert_eq!(home_of(&mut c, topic, &[("a", &a), ("b", &b)]).await, home);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_failover_a_down_broker_is_server_unavailable() {
    let mut a = Mosquitto::start();
    let b = Mosquitto::start();
    let gw = Config::new(&[&a, &b])
        .ring_hash()
        .cluster("failover: false")
        .start();
    a.kill();
    let mut refused = Vec::new();
    let mut accepted = Vec::new();
    for i in 0..32 {
        let id = format!("fo-{i}");
        let (mut c, connack) = Raw::connect(gw.addr(), V::V3, &id, 30, None);
        match connack.code() {
            0 => accepted.push(id),
            3 => {
                let (after, _) = c.read_until_closed();
                assert!(after.is_empty(), "{after:?}");
                refused.push(id);
            }
            other => panic!("{id}: CONNACK {other}"),
        }
    }
    assert!(
        !refused.is_empty() && !accepted.is_empty(),
        "ids owned by the dead broker are refused, the others served: refused {refused:?}, accepted {accepted:?}"
    );
    for id in &refused {
        let (_, connack) = Raw::connect(gw.addr(), V::V5, id, 30, None);
        assert_eq!(connack.code(), 0x88, "{id} (v5)");
        assert!(
            !broker_saw(&b, id),
            "{id} was failed over to the live broker"
        );
    }
    let unavailable = gw.metric(
        "switchyard_mqtt_connects_total",
        &[("listener", "mq"), ("outcome", "server_unavailable")],
    );
    assert_eq!(unavailable, (refused.len() * 2) as f64);
}

// ---------------------------------------------------------------------------
// Malformed packets, keep-alive

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_packets_close_only_their_connection() {
    let broker = Mosquitto::start();
    let ports = Ports::new();
    let fixed_port = free_port();
    // Two listeners: one sniffing, one with MQTT fixed (no detection).
    let yaml = Config::new(&[&broker]).render(&ports).replace(
        "route_tables:",
        &format!(
            "  - name: fixed\n    address: 127.0.0.1:{fixed_port}\n    protocol: mqtt\n    route_table: main\nroute_tables:"
        ),
    );
    let gw = Gateway::start(&yaml);
    let mut sub = Mq::connect(V::V3, gw.addr(), "healthy-sub", Opts::default()).await;
    assert_eq!(sub.subscribe(&[("ok/#", 1)]).await, vec![1]);
    let mut healthy = Mq::connect(V::V5, gw.addr(), "healthy-pub", Opts::default()).await;
    let mut round = 0;
    let mut still_works = async |what: &str| {
        round += 1;
        let text = format!("after {what}");
        healthy.publish_ok(&format!("ok/{round}"), &text, 1).await;
        assert_eq!(sub.next_publish().await.text(), text);
    };
    still_works("nothing").await;

    for listener in ["mq", "fixed"] {
        let addr = gw.listener(listener);
        // PUBLISH with QoS 3 after a good CONNECT (3.1.1): closed, nothing said.
        let (mut c, connack) = Raw::connect(addr, V::V3, "bad-qos", 30, None);
        assert_eq!(connack.code(), 0);
        c.send(b"\x36\x07\x00\x03a/b\x00\x01x");
        let (after, how) = c.read_until_closed();
        assert_eq!((after, how), (vec![], Closed::Eof), "{listener}: QoS 3");
        still_works("QoS 3").await;

        // A remaining length longer than 4 bytes (MQTT 5): DISCONNECT 0x81, closed.
        let (mut c, connack) = Raw::connect(addr, V::V5, "bad-length", 30, None);
        assert_eq!(connack.code(), 0);
        c.send(b"\x30\xff\xff\xff\xff\x01");
        let (after, how) = c.read_until_closed();
        assert_eq!(how, Closed::Eof, "{listener}: bad remaining length");
        assert_eq!(after.len(), 1, "{listener}: {after:?}");
        assert_eq!(after[0].disconnect_reason(), 0x81, "{listener}");
        still_works("a bad remaining length").await;

        // A second CONNECT: a protocol violation, closed.
        let (mut c, connack) = Raw::connect(addr, V::V3, "two-connects", 30, None);
        assert_eq!(connack.code(), 0);
        c.send(&raw::connect(V::V3, "two-connects", 30, None));
        let (after, how) = c.read_until_closed();
        assert_eq!(
            (after, how),
            (vec![], Closed::Eof),
            "{listener}: second CONNECT"
        );
        still_works("a second CONNECT").await;

        // A first packet that is not CONNECT: closed, nothing said.
        let mut c = RawConn::connect(addr);
        c.send(&raw::publish(V::V3, "a/b", b"hi", 0, 0));
        let (after, how) = c.read_until_closed();
        assert_eq!(
            (after, how),
            (vec![], Closed::Eof),
            "{listener}: PUBLISH first"
        );
        still_works("PUBLISH first").await;
    }
    let malformed = gw.metric(
        "switchyard_mqtt_connects_total",
        &[("listener", "fixed"), ("outcome", "malformed")],
    );
    assert!(
        malformed >= 1.0,
        "the fixed listener's non-CONNECT first packet"
    );
}

/// Packets that arrive in the same read as a malformed one are still the
/// client's: they reach the broker before the gateway closes at the malformed
/// packet, as they would one read earlier (found by `fuzz/driver_mqtt`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn packets_before_a_malformed_one_in_the_same_read_reach_the_broker() {
    let broker = Mosquitto::start();
    let gw = Config::new(&[&broker]).start();
    let mut watcher = Mq::connect(V::V3, broker.addr(), "watcher", Opts::default()).await;
    assert_eq!(watcher.subscribe(&[("in/#", 1)]).await, vec![1]);
    for (v, name) in [(V::V3, "v311"), (V::V5, "v5")] {
        let (mut c, connack) = Raw::connect(gw.addr(), v, &format!("device-{name}"), 60, None);
        assert_eq!(connack.code(), 0);
        // A QoS 0 and a QoS 1 PUBLISH, then a PUBLISH with QoS 3, in one write.
        let mut burst = raw::publish(v, &format!("in/{name}/qos0"), b"data", 0, 0);
        burst.extend(raw::publish(v, &format!("in/{name}/qos1"), b"data", 1, 7));
        burst.extend_from_slice(b"\x36\x07\x00\x03a/b\x00\x01x");
        c.send(&burst);
        let _ = c.read_until_closed();
        let got = received_before_marker(&mut watcher, &broker, &format!("in/{name}/marker")).await;
        let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            [format!("in/{name}/qos0"), format!("in/{name}/qos1")],
            "{name}: packets before the malformed one were dropped"
        );
    }
}

/// A broker stand-in that answers CONNECT and PINGREQ and never closes on
/// its own, so only the gateway can end an idle session. Reports on the
/// channel when the gateway closed its side.
fn lazy_broker(v: V) -> (SocketAddr, std_mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let connack: &[u8] = if v == V::V5 {
                    &[0x20, 0x03, 0, 0, 0]
                } else {
                    &[0x20, 0x02, 0, 0]
                };
                let mut session = false;
                while let Ok(p) = raw::read(&mut s) {
                    let answer: &[u8] = match p.kind {
                        1 => {
                            session = true;
                            connack
                        }
                        12 => &[0xd0, 0x00],
                        _ => &[],
                    };
                    if s.write_all(answer).is_err() {
                        break;
                    }
                }
                // Only sessions count (not the gateway's startup probe).
                if session {
                    let _ = tx.send(());
                }
            });
        }
    });
    (addr, rx)
}

fn keep_alive_gateway(broker: SocketAddr) -> Gateway {
    Config {
        brokers: vec![broker],
        mqtt: "{}",
        cluster: Vec::new(),
    }
    .start()
}

#[test]
fn a_silent_client_is_disconnected_after_its_keep_alive() {
    for v in [V::V3, V::V5] {
        let (broker, closed) = lazy_broker(v);
        let gw = keep_alive_gateway(broker);
        // Pinging keeps a 1 s keep-alive session open for 3 s.
        let (mut c, connack) = Raw::connect(gw.addr(), v, "pinger", 1, None);
        assert_eq!(connack.code(), 0);
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(500));
            c.send(&raw::PINGREQ);
            assert_eq!(
                c.read().kind,
                raw::PINGRESP,
                "{v:?}: the session ended while pinging"
            );
        }
        // Silence: closed by the gateway (1.5 × keep-alive), both sides.
        let (after, how) = c.read_until_closed();
        assert_eq!(how, Closed::Eof, "{v:?}");
        match v {
            V::V5 => {
                assert_eq!(after.len(), 1, "{after:?}");
                assert_eq!(after[0].disconnect_reason(), 0x8d, "keep alive timeout");
            }
            V::V3 => assert!(after.is_empty(), "{after:?}"),
        }
        closed
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("{v:?}: the broker side stayed open"));
        // A silent client with no keep-alive is not cut by it.
        let (mut quiet, connack) = Raw::connect(gw.addr(), v, "no-keep-alive", 0, None);
        assert_eq!(connack.code(), 0);
        std::thread::sleep(Duration::from_secs(2));
        quiet.send(&raw::PINGREQ);
        assert_eq!(quiet.read().kind, raw::PINGRESP, "{v:?}");
    }
}

// ---------------------------------------------------------------------------
// One port for HTTP, Redis and MQTT

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mqtt_http_and_redis_share_one_port() {
    let broker = Mosquitto::start();
    let redis = RedisServer::start();
    let up = HttpUpstream::start();
    let ports = Ports::new();
    let yaml = format!(
        "admin:
  address: 127.0.0.1:{admin}
listeners:
  - name: edge
    address: 127.0.0.1:{listen}
    protocols: [http1, redis, mqtt]
    route_table: main
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: [\"*\"]
        routes:
          - {{match: {{protocol: redis}}, cluster: redis}}
          - {{match: {{protocol: mqtt}}, cluster: brokers}}
          - {{match: {{protocol: http1}}, cluster: web}}
clusters:
  - {{name: redis, hosts: [\"{redis}\"]}}
  - {{name: brokers, hosts: [\"{broker}\"]}}
  - {{name: web, hosts: [\"{web}\"]}}
",
        admin = ports.admin,
        listen = ports.listen,
        redis = redis.addr(),
        broker = broker.addr(),
        web = up.addr(),
    );
    let gw = Gateway::start(&yaml);
    let addr = gw.addr();
    let mut tasks = Vec::new();
    for t in 0..2 {
        let url = gw.url("/hello");
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            for i in 0..50 {
                let r = client
                    .get(&url)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("http task {t} request {i}: {e}"));
                assert_eq!(r.status(), 200);
                assert_eq!(r.text().await.unwrap(), "hello from upstream\n");
            }
        }));
        tasks.push(tokio::spawn(async move {
            let mut con = redis_conn(addr).await;
            for i in 0..50 {
                let key = format!("shared{t}:{i}");
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(i)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                let v: i64 = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                assert_eq!(v, i);
            }
        }));
        tasks.push(tokio::spawn(async move {
            let v = if t == 0 { V::V3 } else { V::V5 };
            let topic = format!("shared/{t}");
            let mut sub = Mq::connect(v, addr, &format!("sub-{t}"), Opts::default()).await;
            assert_eq!(sub.subscribe(&[(&topic, 1)]).await, vec![1]);
            let mut publisher = Mq::connect(v, addr, &format!("pub-{t}"), Opts::default()).await;
            for i in 0..50 {
                let text = format!("message {i}");
                publisher.publish_ok(&topic, &text, 1).await;
                assert_eq!(sub.next_publish().await.text(), text);
            }
        }));
    }
    for t in tasks {
        t.await.expect("a client task failed");
    }
    let mqtt_conns = gw.metric(
        "switchyard_mqtt_connects_total",
        &[("listener", "edge"), ("outcome", "accepted")],
    );
    assert_eq!(mqtt_conns, 4.0);
}

// ---------------------------------------------------------------------------
// switchyard check

#[test]
fn check_reports_bad_mqtt_auth_entries_at_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "admin:
  address: 127.0.0.1:19901
listeners:
  - name: mq
    address: 127.0.0.1:11883
    protocols: [mqtt]
    route_table: main
    mqtt:
      auth:
        enabled: true
        password_file: missing-passwd.txt
        users:
          - username: bob
            password_hash: notahash
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: [\"*\"]
        routes:
          - {match: {protocol: mqtt}, cluster: brokers}
clusters:
  - name: brokers
    hosts: [\"127.0.0.1:1883\"]
";
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, yaml).unwrap();
    let check = |path: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("check")
            .arg(path)
            .output()
            .expect("run switchyard check")
    };
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let at = |needle: &str| {
        yaml.lines()
            .enumerate()
            .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
            .unwrap()
    };
    let (line, col) = at("notahash");
    let want = format!(
        "{}:{line}:{col}: listeners[mq].mqtt.auth.users[bob].password_hash: ",
        path.display()
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&want) && l.contains("mosquitto_passwd")),
        "want a line starting {want:?}:\n{stderr}"
    );
    let (line, _) = at("missing-passwd.txt");
    let want = format!("{}:{line}:", path.display());
    assert!(
        stderr.lines().any(|l| l.starts_with(&want)
            && l.contains("auth.password_file")
            && l.contains("missing-passwd.txt")),
        "want a line starting {want:?} about the password file:\n{stderr}"
    );

    // Fixed: a real password file beside the config and a real hash.
    mosquitto_passwd(&dir.path().join("passwd"), "alice", "pw", false);
    mosquitto_passwd(&dir.path().join("bob"), "bob", "pw", true);
    let bob = std::fs::read_to_string(dir.path().join("bob")).unwrap();
    let good = yaml.replace("missing-passwd.txt", "passwd").replace(
        "notahash",
        &format!("\"{}\"", bob.trim().trim_start_matches("bob:")),
    );
    std::fs::write(&path, good).unwrap();
    let out = check(&path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
