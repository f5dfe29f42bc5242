//! MQTT through the gateway (the session shape): the client's CONNECT is read
//! and checked (credentials), routed once (client id, user, ...), and the
//! session is bound to one broker — chosen by the cluster's balancer, with
//! `ring_hash` on the client id so a device always reaches the same broker.
//! Then every packet still passes the edge policy: topic ACL on PUBLISH and
//! SUBSCRIBE, per-client rate limits, the tenant mount point; everything else
//! is forwarded byte-exact.
//!
//! An idle session holds no buffers: each side's buffer is released once
//! drained, and the task waits on socket readiness, not on a read into a
//! buffer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::net::stream::Stream;
use bytes::{Bytes, BytesMut};
use switchyard_codecs::mqtt::{self, Body, Packet, PacketType, TopicAliases, Version, code, topic};
use switchyard_codecs::{Decoder, Protocol};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{Conn, drained};
use crate::config::DeniedPublish;
use crate::filters::acl::Action;
use crate::filters::chain::{Refusal, RefusalClass};
use crate::filters::mqtt::MqttPolicy;
use crate::filters::users::Denied;

/// Serve one MQTT client connection; `buf` holds the bytes detection read.
pub async fn serve(mut client: Stream, mut buf: BytesMut, mut conn: Conn) {
    let Some(policy) = conn.listener.mqtt.clone() else {
        return;
    };
    let m = &policy.metrics;
    if let Some(bucket) = &policy.connection_rate
        && !bucket.try_take()
    {
        m.connection_rate_limited.increment(1);
        return;
    }
    let limits = mqtt::Limits {
        max_packet: policy.max_packet,
    };
    let mut decoder = mqtt::Decoder::new(limits);
    // The CONNECT's first bytes are in: the rest is bounded by request_head_timeout too.
    let first = match tokio::time::timeout(
        policy
            .connect_timeout
            .min(conn.listener.request_head_timeout),
        read_packet(&mut client, &mut buf, &mut decoder),
    )
    .await
    {
        Ok(Ok(Some(p))) => p,
        _ => {
            m.malformed.increment(1);
            return;
        }
    };
    let Some(connect) = first.as_connect() else {
        return;
    };
    let version = connect.version();
    let refuse = |v3: u8, v5: u8| {
        mqtt::connack(version, false, if version == Version::V5 { v5 } else { v3 })
    };

    // A verified client certificate's common name is the user, when so configured.
    let cert_user = if policy.client_cert_identity {
        client.peer_common_name()
    } else {
        None
    };
    if let Some(users) = policy.users.as_ref().filter(|_| cert_user.is_none()) {
        let verdict = users.check(
            connect.username().map(|u| &u[..]),
            connect.password().map(|p| &p[..]),
        );
        let answer = match verdict {
            Ok(()) => None,
            Err(Denied::BadCredentials) => {
                m.bad_credentials.increment(1);
                Some(refuse(
                    code::V3_BAD_USERNAME_OR_PASSWORD,
                    code::BAD_USER_NAME_OR_PASSWORD,
                ))
            }
            Err(Denied::NoCredentials) => {
                m.not_authorized.increment(1);
                Some(refuse(code::V3_NOT_AUTHORIZED, code::NOT_AUTHORIZED))
            }
        };
        if let Some(answer) = answer {
            let _ = client.write_all(&answer).await;
            return;
        }
    }
    let user = cert_user
        .map(Bytes::from)
        .or_else(|| connect.username().map(|u| Bytes::copy_from_slice(u)));
    // Own copies: slices would keep the whole detection buffer alive for the
    // session's lifetime (an idle device must cost little).
    let client_id = Bytes::copy_from_slice(connect.client_id());
    let mount = match policy.mount_for(user.as_deref(), &client_id) {
        None => None,
        Some(Ok(mount)) => Some(mount),
        Some(Err(())) => {
            // The mount point needs a user or a client id that cannot widen it.
            m.not_authorized.increment(1);
            let _ = client
                .write_all(&refuse(code::V3_NOT_AUTHORIZED, code::NOT_AUTHORIZED))
                .await;
            return;
        }
    };

    // A will is a publish the client makes in advance: it must pass the ACL too
    // (mosquitto refuses such a CONNECT as well).
    if let Some(will) = connect.will()
        && !policy
            .acl
            .allows(user.as_deref(), &client_id, Action::Publish, will.topic())
    {
        m.acl_denied.increment(1);
        m.not_authorized.increment(1);
        let _ = client
            .write_all(&refuse(code::V3_NOT_AUTHORIZED, code::NOT_AUTHORIZED))
            .await;
        return;
    }

    // Route once, then bind to the first broker that answers CONNECT.
    let route = conn
        .listener
        .routes
        .route_to(Protocol::Mqtt, &first, conn.destination);
    let admitted = conn
        .admit_packet(Protocol::Mqtt, Some("CONNECT"), &first, route, None)
        .await;
    let mut permit = match admitted {
        Ok(permit) => permit,
        Err(refusal) => {
            m.not_authorized
                .increment(u64::from(refusal.class() == RefusalClass::Forbidden));
            let reason = refusal_reason(&refusal, PacketType::Connect);
            let _ = client
                .write_all(&mqtt::connack(
                    version,
                    false,
                    code::connack_code(version, reason),
                ))
                .await;
            return;
        }
    };
    let Some(cluster) = route
        .and_then(|r| r.action.cluster())
        .map(|c| c.for_destination(conn.destination))
    else {
        permit.log_refused(503);
        m.unavailable.increment(1);
        let _ = client
            .write_all(&refuse(
                code::V3_SERVER_UNAVAILABLE,
                code::SERVER_UNAVAILABLE,
            ))
            .await;
        return;
    };
    // Under a mount point the broker sees the tenant's namespace: the will
    // topic is mounted and the client id prefixed, so tenants sharing a broker
    // can neither publish outside their mount nor take over each other's sessions.
    let upstream_connect = match &mount {
        None => first.wire().clone(),
        Some(mount) => {
            let will_topic = connect.will().map(|w| topic::mount(mount, w.topic()));
            let client = (!client_id.is_empty()).then(|| [&mount[..], &client_id[..]].concat());
            let edit = mqtt::ConnectEdit {
                client_id: client.as_deref(),
                will_topic: will_topic.as_deref(),
                credentials: None,
            };
            match mqtt::connect_with(connect, &edit) {
                Ok(c) => c,
                Err(_) => {
                    m.malformed.increment(1);
                    return;
                }
            }
        }
    };
    let mut bound = None;
    let mut broker_addr = None;
    for host in cluster.hosts_for(&first, conn.client) {
        let Ok(mut broker) = cluster.connect(host).await else {
            continue;
        };
        let ends = conn.endpoints(client.local_addr());
        if crate::upstream::send_proxy_header(&mut broker, &cluster, ends)
            .await
            .is_err()
        {
            continue;
        }
        // The slot under `max_connections` lives as long as the session.
        let (broker, slot) = broker.into_parts();
        let mut broker = Stream::from(broker);
        if broker.write_all(&upstream_connect).await.is_err() {
            continue;
        }
        let sent = Instant::now();
        let mut broker_decoder = mqtt::Decoder::with_version(limits, version);
        let mut broker_buf = BytesMut::new();
        let answer = tokio::time::timeout(
            policy.connect_timeout,
            read_packet(&mut broker, &mut broker_buf, &mut broker_decoder),
        )
        .await;
        if let Ok(Ok(Some(connack))) = answer
            && connack.kind() == PacketType::Connack
        {
            if let Some(h) = cluster.hosts.get(host) {
                permit.log_upstream(h.address);
                broker_addr = Some(h.address);
            }
            // The cluster's requests: the CONNECT (timed to its CONNACK) ...
            cluster.stats.observe(1, sent.elapsed());
            bound = Some((broker, broker_buf, broker_decoder, connack, slot));
            break;
        }
    }
    let Some((broker, broker_buf, broker_decoder, connack, _slot)) = bound else {
        permit.log_upstream_failed(503);
        m.unavailable.increment(1);
        let _ = client
            .write_all(&refuse(
                code::V3_SERVER_UNAVAILABLE,
                code::SERVER_UNAVAILABLE,
            ))
            .await;
        return;
    };
    if let Some(r) = permit.log() {
        r.status = connack.as_connack().map(|c| c.code().into());
        r.bytes_out = Some(connack.wire().len() as u64);
    }
    drop(permit);
    if client.write_all(connack.wire()).await.is_err() {
        return;
    }
    if connack.as_connack().is_some_and(|c| c.code() != 0) {
        return; // The broker refused the client and closes; so do we.
    }
    // Views of the handshake's read buffers: drop them before the session,
    // so an idle session holds no buffer at all.
    drop(connack);
    drop(upstream_connect);
    m.accepted.increment(1);

    let keep_alive = connect.keep_alive();
    drop(first);
    let mut session = Session {
        policy: policy.clone(),
        version,
        user,
        client_id,
        mount,
        broker: broker_addr,
        aliases: TopicAliases::new(u16::MAX),
        denied_qos2: HashSet::new(),
        pending_subacks: HashMap::new(),
        stats: cluster.stats.clone(),
        unacked: HashMap::new(),
        to_broker: BytesMut::new(),
        to_client: BytesMut::new(),
        close: None,
    };
    // Idle beyond 1.5 × keep-alive closes both sides (MQTT 3.1.2.10).
    let keep_alive = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
    session
        .run(
            client,
            buf,
            decoder,
            broker,
            broker_buf,
            broker_decoder,
            keep_alive,
            &mut conn,
        )
        .await;
}

/// Why a session ends after the current packets are flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// Close both sides (after sending what is queued).
    Both,
}

/// A PUBLISH or SUBSCRIBE with the session's identity, as the filters and
/// the router see it.
struct SessionView<'a> {
    packet: &'a Packet,
    client_id: &'a [u8],
    user: Option<&'a [u8]>,
}

impl switchyard_codecs::Metadata for SessionView<'_> {
    fn get(&self, field: &switchyard_codecs::Field) -> Option<&[u8]> {
        use switchyard_codecs::Field;
        match field {
            Field::ClientId => Some(self.client_id),
            Field::User => self.user,
            other => self.packet.get(other),
        }
    }
}

/// The MQTT 5 reason code for a refusal of a CONNECT, PUBLISH or SUBSCRIBE
/// (each packet allows its own set; MQTT 3 answers are derived from it).
fn refusal_reason(refusal: &Refusal, packet: PacketType) -> u8 {
    match (refusal.class(), packet) {
        (RefusalClass::Forbidden, _) => code::NOT_AUTHORIZED,
        (RefusalClass::TooMany, PacketType::Connect) => 0x9F, // connection rate exceeded
        (RefusalClass::TooMany, _) => code::QUOTA_EXCEEDED,
        (RefusalClass::TooLarge, PacketType::Connect) => code::PACKET_TOO_LARGE,
        (RefusalClass::Unavailable, PacketType::Connect) => code::SERVER_BUSY,
        (RefusalClass::Unavailable, _) => code::QUOTA_EXCEEDED,
        _ => code::UNSPECIFIED_ERROR,
    }
}

struct Session {
    policy: Arc<MqttPolicy>,
    version: Version,
    user: Option<Bytes>,
    client_id: Bytes,
    mount: Option<Vec<u8>>,
    /// The broker the session is bound to (for the spans of its PUBLISHes).
    broker: Option<std::net::SocketAddr>,
    /// Client → broker topic aliases (to apply the ACL to alias-only PUBLISHes).
    aliases: TopicAliases,
    /// QoS 2 PUBLISHes answered by the gateway: their PUBREL is answered here too.
    denied_qos2: HashSet<u16>,
    /// SUBSCRIBEs forwarded with some filters removed: per packet id, the
    /// gateway's code for each original filter (`None`: the broker's next code).
    pending_subacks: HashMap<u16, Vec<Option<u8>>>,
    /// The cluster's request series: each PUBLISH forwarded is a request.
    stats: Arc<crate::observe::ClusterMetrics>,
    /// QoS 1/2 PUBLISHes forwarded and not yet acknowledged by the broker
    /// (PUBACK / PUBREC), by packet id: their latency is recorded then.
    unacked: HashMap<u16, Instant>,
    to_broker: BytesMut,
    to_client: BytesMut,
    close: Option<Close>,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &mut self,
        mut client: Stream,
        mut client_buf: BytesMut,
        mut client_decoder: mqtt::Decoder,
        mut broker: Stream,
        mut broker_buf: BytesMut,
        mut broker_decoder: mqtt::Decoder,
        keep_alive: Option<Duration>,
        conn: &mut Conn,
    ) {
        let mut last_heard = Instant::now();
        // Packets that arrived with the CONNECT, or with the CONNACK.
        let mut client_ready = !client_buf.is_empty();
        let mut broker_ready = !broker_buf.is_empty();
        let mut head = crate::net::deadline::HeadDeadline::new(conn.listener.request_head_timeout);
        loop {
            if client_ready {
                client_ready = false;
                let before = client_buf.len();
                if self
                    .client_bytes(&mut client_buf, &mut client_decoder, conn)
                    .await
                    .is_err()
                {
                    self.policy.metrics.malformed.increment(1);
                    // The packets before the malformed one are the client's,
                    // whether or not they came in the same read: pass them on
                    // (and the gateway's answers to them) before closing.
                    let _ = flush(&mut broker, &mut self.to_broker).await;
                    let _ = flush(&mut client, &mut self.to_client).await;
                    if self.version == Version::V5 {
                        let _ = client
                            .write_all(&mqtt::disconnect(self.version, code::MALFORMED_PACKET))
                            .await;
                    }
                    break;
                }
                // A packet begun must end within request_head_timeout (slowloris).
                head.update(client_buf.len() < before, !client_buf.is_empty());
            }
            if broker_ready {
                broker_ready = false;
                if self
                    .broker_bytes(&mut broker_buf, &mut broker_decoder)
                    .is_err()
                {
                    break;
                }
            }
            conn.metrics
                .bytes_out
                .increment(self.to_client.len() as u64);
            if flush(&mut broker, &mut self.to_broker).await.is_err()
                || flush(&mut client, &mut self.to_client).await.is_err()
                || self.close.is_some()
            {
                break;
            }
            release(&mut client_buf);
            release(&mut broker_buf);
            let deadline = keep_alive.map(|k| last_heard + k);
            tokio::select! {
                r = client.read_some(&mut client_buf) => match r {
                    Ok(n) if n > 0 => {
                        conn.metrics.bytes_in.increment(n as u64);
                        last_heard = Instant::now();
                        client_ready = true;
                    }
                    _ => break,
                },
                r = broker.read_some(&mut broker_buf) => match r {
                    Ok(n) if n > 0 => broker_ready = true,
                    _ => break,
                },
                () = head.expired() => break,
                () = sleep_until(deadline) => {
                    if self.version == Version::V5 {
                        let _ = client.write_all(&mqtt::disconnect(self.version, code::KEEP_ALIVE_TIMEOUT)).await;
                    }
                    break;
                }
                () = drained(&mut conn.drain) => {
                    if self.version == Version::V5 {
                        let _ = client.write_all(&mqtt::disconnect(self.version, code::SERVER_SHUTTING_DOWN)).await;
                    }
                    break;
                }
            }
        }
        let _ = client.shutdown().await;
        // Close our side of the broker connection and read until it closes too
        // (briefly): dropping a socket with unread bytes resets it, and the
        // broker would lose packets it had not read yet.
        let _ = broker.shutdown().await;
        let mut sink = BytesMut::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(n) = broker.read_some(&mut sink).await {
                if n == 0 {
                    break;
                }
                sink.clear();
            }
        })
        .await;
    }

    /// Decode and filter every complete client packet in `buf`.
    async fn client_bytes(
        &mut self,
        buf: &mut BytesMut,
        decoder: &mut mqtt::Decoder,
        conn: &Conn,
    ) -> Result<(), ()> {
        while let Some(packet) = decoder.decode(buf).map_err(|_| ())? {
            self.client_packet(packet, conn).await?;
            if self.close.is_some() {
                break;
            }
        }
        Ok(())
    }

    async fn client_packet(&mut self, packet: Packet, conn: &Conn) -> Result<(), ()> {
        let m = &self.policy.metrics;
        // PUBLISH and SUBSCRIBE are the requests the shared filters see,
        // with the session's client id and user beside their topic.
        let mut traceparent = None;
        if let Body::Publish(_) | Body::Subscribe(_) = packet.body() {
            let view = SessionView {
                packet: &packet,
                client_id: &self.client_id,
                user: self.user.as_deref(),
            };
            let routes = &conn.listener.routes;
            let route = routes
                .has_filters()
                .then(|| routes.route_to(Protocol::Mqtt, &view, conn.destination))
                .flatten();
            let size = match packet.body() {
                Body::Publish(p) => Some(p.payload().len() as u64),
                _ => None,
            };
            let kind = match packet.body() {
                Body::Publish(_) => "PUBLISH",
                _ => "SUBSCRIBE",
            };
            let admitted = conn
                .admit_packet(Protocol::Mqtt, Some(kind), &view, route, size)
                .await;
            // A PUBLISH is done once it is written on; under `tracing` its
            // MQTT 5 form carries the attempt's `traceparent` user property.
            let refusal = match admitted {
                Ok(mut permit) => {
                    if self.version == Version::V5 && matches!(packet.body(), Body::Publish(_)) {
                        traceparent = permit.trace_attempt(self.broker);
                    }
                    None
                }
                Err(refusal) => Some(refusal),
            };
            if let Some(refusal) = refusal {
                match packet.body() {
                    // `over_limit: close` (`mqtt.rate_limit` `disconnect`):
                    // the session ends; 0x96 is a DISCONNECT reason only.
                    Body::Publish(_) if refusal.close => self.disconnect(match refusal.class() {
                        RefusalClass::TooMany => code::MESSAGE_RATE_TOO_HIGH,
                        _ => refusal_reason(&refusal, PacketType::Publish),
                    }),
                    Body::Publish(p) => {
                        let reason = refusal_reason(&refusal, PacketType::Publish);
                        self.refuse_publish(p.qos(), p.packet_id().unwrap_or(0), reason);
                    }
                    Body::Subscribe(s) => {
                        let reason = if self.version == Version::V5 {
                            refusal_reason(&refusal, PacketType::Subscribe)
                        } else {
                            code::V3_SUBACK_FAILURE
                        };
                        let codes = vec![reason; s.filters().len()];
                        self.to_client.extend_from_slice(&mqtt::suback(
                            self.version,
                            s.packet_id(),
                            &codes,
                        ));
                    }
                    _ => {}
                }
                return Ok(());
            }
        }
        match packet.body() {
            Body::Publish(p) => {
                let topic_name = self.aliases.resolve(p).map_err(|_| ())?;
                m.publishes_in.increment(1);
                m.bytes_in.increment(p.payload().len() as u64);
                let packet_id = p.packet_id().unwrap_or(0);
                let qos = p.qos();
                if !self.policy.acl.allows(
                    self.user.as_deref(),
                    &self.client_id,
                    Action::Publish,
                    &topic_name,
                ) {
                    m.acl_denied.increment(1);
                    if self.policy.on_denied_publish == DeniedPublish::Disconnect {
                        self.disconnect(code::NOT_AUTHORIZED);
                    } else {
                        self.refuse_publish(qos, packet_id, code::NOT_AUTHORIZED);
                    }
                    return Ok(());
                }
                let mounted = match &self.mount {
                    Some(mount) if !p.topic().is_empty() => Some(topic::mount(mount, p.topic())),
                    _ => None,
                };
                match (mounted, traceparent) {
                    (topic, Some(tp)) => {
                        let topic = topic.as_deref().unwrap_or(p.topic());
                        let rewritten = mqtt::publish_with_user_property(
                            p,
                            topic,
                            b"traceparent",
                            tp.as_bytes(),
                        )
                        .map_err(|_| ())?;
                        self.to_broker.extend_from_slice(&rewritten);
                    }
                    (Some(mounted), None) => {
                        let rewritten = mqtt::publish_with_topic(p, &mounted).map_err(|_| ())?;
                        self.to_broker.extend_from_slice(&rewritten);
                    }
                    (None, None) => self.to_broker.extend_from_slice(packet.wire()),
                }
                // ... and each PUBLISH forwarded, timed to the broker's
                // PUBACK/PUBREC when it has a QoS.
                self.stats.count(1);
                if qos > 0 {
                    self.unacked.insert(packet_id, Instant::now());
                }
            }
            Body::Pubrel(ack) if self.denied_qos2.remove(&ack.packet_id()) => {
                self.to_client.extend_from_slice(&mqtt::pubcomp(
                    self.version,
                    ack.packet_id(),
                    code::SUCCESS,
                ));
            }
            Body::Subscribe(s) => {
                let refused = if self.version == Version::V5 {
                    code::NOT_AUTHORIZED
                } else {
                    code::V3_SUBACK_FAILURE
                };
                let verdicts: Vec<Option<u8>> = s
                    .filters()
                    .iter()
                    .map(|(filter, _)| {
                        let allowed = self.policy.acl.allows(
                            self.user.as_deref(),
                            &self.client_id,
                            Action::Subscribe,
                            filter,
                        );
                        (!allowed).then_some(refused)
                    })
                    .collect();
                let denied = verdicts.iter().filter(|v| v.is_some()).count();
                m.acl_denied.increment(denied as u64);
                if denied == verdicts.len() {
                    let codes: Vec<u8> = verdicts.iter().map(|v| v.unwrap_or(refused)).collect();
                    self.to_client.extend_from_slice(&mqtt::suback(
                        self.version,
                        s.packet_id(),
                        &codes,
                    ));
                    return Ok(());
                }
                let kept = s
                    .filters()
                    .iter()
                    .zip(&verdicts)
                    .filter(|(_, v)| v.is_none())
                    .map(|(f, _)| f);
                let rewritten = match &self.mount {
                    None if denied == 0 => None,
                    None => Some(mqtt::subscribe_with_filters(
                        s,
                        kept.map(|(f, o)| (f.clone(), *o)),
                    )),
                    Some(mount) => Some(mqtt::subscribe_with_filters(
                        s,
                        kept.map(|(f, o)| (topic::mount(mount, f), *o)),
                    )),
                };
                if denied > 0 {
                    self.pending_subacks.insert(s.packet_id(), verdicts);
                }
                match rewritten {
                    Some(r) => self.to_broker.extend_from_slice(&r.map_err(|_| ())?),
                    None => self.to_broker.extend_from_slice(packet.wire()),
                }
            }
            Body::Unsubscribe(u) => match &self.mount {
                Some(mount) => {
                    let filters = u.filters().iter().map(|f| topic::mount(mount, f));
                    let rewritten = mqtt::unsubscribe_with_filters(u, filters).map_err(|_| ())?;
                    self.to_broker.extend_from_slice(&rewritten);
                }
                None => self.to_broker.extend_from_slice(packet.wire()),
            },
            _ => self.to_broker.extend_from_slice(packet.wire()),
        }
        Ok(())
    }

    /// Answer a PUBLISH the gateway will not forward: QoS 0 is dropped; QoS 1
    /// gets PUBACK and QoS 2 PUBREC with `reason` (MQTT 5; MQTT 3 has no
    /// reason codes, so the client just sees it acknowledged).
    fn refuse_publish(&mut self, qos: u8, packet_id: u16, reason: u8) {
        let reason = if self.version == Version::V5 {
            reason
        } else {
            code::SUCCESS
        };
        match qos {
            1 => self
                .to_client
                .extend_from_slice(&mqtt::puback(self.version, packet_id, reason)),
            2 => {
                self.to_client
                    .extend_from_slice(&mqtt::pubrec(self.version, packet_id, reason));
                // MQTT 5: a PUBREC with an error ends the exchange; MQTT 3 expects PUBREL.
                if self.version != Version::V5 {
                    self.denied_qos2.insert(packet_id);
                }
            }
            _ => {}
        }
    }

    /// End the session: MQTT 5 clients get DISCONNECT with `reason` first.
    fn disconnect(&mut self, reason: u8) {
        if self.version == Version::V5 {
            self.to_client
                .extend_from_slice(&mqtt::disconnect(self.version, reason));
        }
        self.close = Some(Close::Both);
    }

    /// Decode and fix up every complete broker packet in `buf`.
    fn broker_bytes(&mut self, buf: &mut BytesMut, decoder: &mut mqtt::Decoder) -> Result<(), ()> {
        while let Some(packet) = decoder.decode(buf).map_err(|_| ())? {
            match packet.body() {
                Body::Suback(s) if self.pending_subacks.contains_key(&s.packet_id()) => {
                    let verdicts = self
                        .pending_subacks
                        .remove(&s.packet_id())
                        .unwrap_or_default();
                    let mut from_broker = s.codes().iter().copied();
                    let codes: Vec<u8> = verdicts
                        .iter()
                        .map(|v| v.unwrap_or_else(|| from_broker.next().unwrap_or(0x80)))
                        .collect();
                    self.to_client.extend_from_slice(&mqtt::suback(
                        self.version,
                        s.packet_id(),
                        &codes,
                    ));
                }
                Body::Puback(ack) | Body::Pubrec(ack) => {
                    if let Some(sent) = self.unacked.remove(&ack.packet_id()) {
                        self.stats.latency(sent.elapsed());
                    }
                    self.to_client.extend_from_slice(packet.wire());
                }
                Body::Publish(p) => {
                    let m = &self.policy.metrics;
                    m.publishes_out.increment(1);
                    m.bytes_out.increment(p.payload().len() as u64);
                    match &self.mount {
                        Some(mount) if !p.topic().is_empty() => {
                            // A topic not under the mount point is not this tenant's: dropped.
                            if let Some(t) = topic::unmount(mount, p.topic()) {
                                let rewritten = mqtt::publish_with_topic(p, t).map_err(|_| ())?;
                                self.to_client.extend_from_slice(&rewritten);
                            }
                        }
                        _ => self.to_client.extend_from_slice(packet.wire()),
                    }
                }
                _ => self.to_client.extend_from_slice(packet.wire()),
            }
        }
        Ok(())
    }
}

/// Read one packet (for the CONNECT/CONNACK exchange).
async fn read_packet(
    io: &mut Stream,
    buf: &mut BytesMut,
    decoder: &mut mqtt::Decoder,
) -> std::io::Result<Option<Packet>> {
    loop {
        match decoder.decode(buf) {
            Ok(Some(p)) => return Ok(Some(p)),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        if io.read_some(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn flush(io: &mut Stream, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    release(out);
    Ok(())
}

/// Give an empty buffer's memory back, so idle sessions cost little.
fn release(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
