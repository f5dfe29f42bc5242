//! The MQTT codec over the captured sessions in `shared/vectors/mqtt`, and
//! against an independent implementation, `rmqtt-codec`, as a differential
//! oracle: on the vectors, on packets that oracle encodes from generated
//! values, and on MQTT-looking noise both accept.
//!
//! Every `*.c2s.bin` decodes with a client-side decoder (the CONNECT sets the
//! version) and every `*.s2c.bin` with a server-side decoder told the version
//! of the matching CONNECT: completely, in any read size, the wire bytes
//! concatenating back to the file, with the packet types the README lists.

/// One module, so that `cargo test mqtt` selects these tests by name.
mod mqtt_codec {
    use std::collections::BTreeMap;
    use std::num::{NonZeroU16, NonZeroU32};
    use std::path::{Path, PathBuf};

    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;
    use rmqtt_codec::types::{Protocol, QoS};
    use rmqtt_codec::{v3, v5};
    use switchyard_codecs::mqtt::{
        self, Body, Decoder, Limits, Packet, PacketType, Version, properties::id,
    };
    use switchyard_codecs::{CodecError, Decoder as _, Field, Metadata};
    use tokio_util::codec::{Decoder as _, Encoder as _};

    // ---- vectors ----

    fn vectors_dir() -> PathBuf {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/vectors/mqtt"
        ));
        assert!(
            dir.is_dir(),
            "test vectors not found at {}: the shared/ folder must sit beside the repository",
            dir.display()
        );
        dir.to_path_buf()
    }

    fn read(name: &str) -> Vec<u8> {
        let path = vectors_dir().join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// Decode `bytes` fed in pieces of `chunk` bytes; the packets and the bytes left.
    fn decode_all(mut dec: Decoder, bytes: &[u8], chunk: usize) -> (Vec<Packet>, usize) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(p)) => out.push(p),
                    Ok(None) => break,
                    Err(e) => panic!("decode error after {} packets: {e}", out.len()),
                }
            }
        }
        (out, buf.len())
    }

    /// Decode one vector file completely, in several read sizes.
    fn decode_file(name: &str, dec: impl Fn() -> Decoder) -> Vec<Packet> {
        let bytes = read(name);
        let (packets, left) = decode_all(dec(), &bytes, bytes.len());
        assert_eq!(left, 0, "{name}: bytes left over");
        for chunk in [1, 2, 3, 7, 64] {
            let (again, left) = decode_all(dec(), &bytes, chunk);
            assert_eq!(left, 0, "{name}: bytes left over in chunks of {chunk}");
            assert_eq!(again, packets, "{name}: chunks of {chunk} differ");
        }
        let wire: Vec<u8> = packets.iter().flat_map(|p| p.wire().to_vec()).collect();
        assert_eq!(wire, bytes, "{name}: wire bytes do not concatenate back");
        packets
    }

    /// Both directions of a session: the client's packets (client-side
    /// decoder) and the server's (told the version of the client's CONNECT).
    fn session(name: &str) -> (Vec<Packet>, Vec<Packet>, Version) {
        let c2s = decode_file(&format!("{name}.c2s.bin"), Decoder::default);
        let connect = c2s
            .first()
            .and_then(|p| p.as_connect())
            .unwrap_or_else(|| panic!("{name}: the first client packet is not a CONNECT"));
        let version = connect.version();
        assert!(c2s.iter().all(|p| p.version() == version));
        let s2c = decode_file(&format!("{name}.s2c.bin"), || {
            let mut dec = Decoder::new(Limits::default());
            dec.set_version(version);
            dec
        });
        (c2s, s2c, version)
    }

    fn counts(packets: &[Packet]) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for p in packets {
            *out.entry(p.kind().name()).or_default() += 1;
        }
        out
    }

    fn expect(list: &[(&'static str, usize)]) -> BTreeMap<&'static str, usize> {
        list.iter().copied().collect()
    }

    /// Each session with the packet types the README describes for each direction.
    #[allow(clippy::type_complexity)]
    const SESSIONS: &[(&str, Version, &[(&str, usize)], &[(&str, usize)])] = &[
        (
            "v311-pub-qos0",
            Version::V311,
            &[("CONNECT", 1), ("PUBLISH", 1), ("DISCONNECT", 1)],
            &[("CONNACK", 1)],
        ),
        (
            "v311-pub-qos1-retained",
            Version::V311,
            &[("CONNECT", 1), ("PUBLISH", 1), ("DISCONNECT", 1)],
            &[("CONNACK", 1), ("PUBACK", 1)],
        ),
        (
            "v311-pub-qos2-will",
            Version::V311,
            &[
                ("CONNECT", 1),
                ("PUBLISH", 1),
                ("PUBREL", 1),
                ("DISCONNECT", 1),
            ],
            &[("CONNACK", 1), ("PUBREC", 1), ("PUBCOMP", 1)],
        ),
        (
            "v311-sub-qos2-will-auth",
            Version::V311,
            &[
                ("CONNECT", 1),
                ("SUBSCRIBE", 1),
                ("PUBACK", 1),
                ("PUBREC", 1),
                ("PUBCOMP", 1),
                ("DISCONNECT", 1),
            ],
            &[("CONNACK", 1), ("SUBACK", 1), ("PUBLISH", 3), ("PUBREL", 1)],
        ),
        (
            "v5-sub-props-unsub-disconnect-reason",
            Version::V5,
            &[
                ("CONNECT", 1),
                ("SUBSCRIBE", 1),
                ("UNSUBSCRIBE", 1),
                ("PUBACK", 1),
                ("PUBREC", 1),
                ("PUBCOMP", 1),
                ("DISCONNECT", 1),
            ],
            &[
                ("CONNACK", 1),
                ("SUBACK", 1),
                ("UNSUBACK", 1),
                ("PUBLISH", 3),
                ("PUBREL", 1),
            ],
        ),
        (
            "v5-pub-qos0-topic-alias",
            Version::V5,
            &[("CONNECT", 1), ("PUBLISH", 1), ("DISCONNECT", 1)],
            &[("CONNACK", 1)],
        ),
        (
            "v5-pub-qos1-user-properties",
            Version::V5,
            &[("CONNECT", 1), ("PUBLISH", 1), ("DISCONNECT", 1)],
            &[("CONNACK", 1), ("PUBACK", 1)],
        ),
        (
            "v5-pub-qos2-retained-will-props",
            Version::V5,
            &[
                ("CONNECT", 1),
                ("PUBLISH", 1),
                ("PUBREL", 1),
                ("DISCONNECT", 1),
            ],
            &[("CONNACK", 1), ("PUBREC", 1), ("PUBCOMP", 1)],
        ),
        (
            "v5-paho-python-full-session",
            Version::V5,
            &[
                ("CONNECT", 1),
                ("SUBSCRIBE", 1),
                ("PUBLISH", 3),
                ("PUBACK", 1),
                ("PUBREC", 1),
                ("PUBREL", 1),
                ("PUBCOMP", 1),
                ("PINGREQ", 1),
                ("UNSUBSCRIBE", 1),
                ("DISCONNECT", 1),
            ],
            &[
                ("CONNACK", 1),
                ("SUBACK", 1),
                ("PUBLISH", 3),
                ("PUBACK", 1),
                ("PUBREC", 1),
                ("PUBREL", 1),
                ("PUBCOMP", 1),
                ("PINGRESP", 1),
                ("UNSUBACK", 1),
            ],
        ),
    ];

    #[test]
    fn every_vector_is_listed() {
        let mut files: Vec<String> = std::fs::read_dir(vectors_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".bin"))
            .collect();
        files.sort();
        let mut listed: Vec<String> = SESSIONS
            .iter()
            .flat_map(|(name, ..)| [format!("{name}.c2s.bin"), format!("{name}.s2c.bin")])
            .collect();
        listed.sort();
        assert_eq!(files, listed);
    }

    #[test]
    fn sessions_decode_with_the_readme_packet_counts() {
        for (name, version, c2s_counts, s2c_counts) in SESSIONS {
            let (c2s, s2c, v) = session(name);
            assert_eq!(v, *version, "{name}");
            assert_eq!(counts(&c2s), expect(c2s_counts), "{name}: client packets");
            assert_eq!(counts(&s2c), expect(s2c_counts), "{name}: server packets");
            // Metadata of every packet is reachable; only the expected fields exist.
            for p in c2s.iter().chain(&s2c) {
                let topic = p.get(&Field::Topic);
                assert_eq!(
                    topic.is_some(),
                    matches!(
                        p.kind(),
                        PacketType::Publish | PacketType::Subscribe | PacketType::Unsubscribe
                    ),
                    "{name}: {:?}",
                    p.kind()
                );
                assert_eq!(
                    p.get(&Field::ClientId).is_some(),
                    p.kind() == PacketType::Connect
                );
                assert_eq!(p.get(&Field::Host), None);
            }
        }
    }

    #[test]
    fn session_details() {
        // mosquitto_sub 3.1.1 with will and credentials.
        let (c2s, s2c, _) = session("v311-sub-qos2-will-auth");
        let p = &c2s[0];
        assert_eq!(p.get(&Field::ClientId), Some(&b"vec-sub311"[..]));
        assert_eq!(p.get(&Field::User), Some(&b"vecuser"[..]));
        let connect = p.as_connect().unwrap();
        assert_eq!(connect.keep_alive(), 30);
        assert_eq!(connect.will().unwrap().qos(), 1);
        assert_eq!(c2s[1].get(&Field::Topic), Some(&b"vec/311/#"[..]));
        let qos: Vec<u8> = s2c
            .iter()
            .filter_map(|p| p.as_publish())
            .map(|p| p.qos())
            .collect();
        assert_eq!(qos, [0, 1, 2]);

        // MQTT 5: topic alias with its topic, CONNECT properties.
        let (c2s, s2c, _) = session("v5-pub-qos0-topic-alias");
        let publish = c2s[1].as_publish().unwrap();
        assert_eq!(&publish.topic()[..], b"vec/5/alias");
        assert_eq!(publish.topic_alias(), Some(1));
        assert_eq!(c2s[0].as_connect().unwrap().topic_alias_maximum(), Some(5));
        let connack = s2c[0].as_connack().unwrap();
        assert_eq!(
            connack.properties().get(id::TOPIC_ALIAS_MAXIMUM),
            Some(mqtt::PropertyValue::U16(10))
        );
        let mut aliases = mqtt::TopicAliases::new(10);
        assert_eq!(&aliases.resolve(publish).unwrap()[..], b"vec/5/alias");

        // UNSUBACK reason 0x11, DISCONNECT with a reason string.
        let (c2s, s2c, _) = session("v5-sub-props-unsub-disconnect-reason");
        let Body::Unsuback(unsuback) = s2c[2].body() else {
            panic!("{:?}", s2c[2])
        };
        assert_eq!(
            &unsuback.codes()[..],
            &[mqtt::code::NO_SUBSCRIPTION_EXISTED]
        );
        let Body::Disconnect(d) = c2s.last().unwrap().body() else {
            panic!()
        };
        assert_eq!(
            d.properties().reason_string().as_deref(),
            Some(&b"byebye"[..])
        );

        // paho: the 256-byte QoS 2 payload, SUBSCRIBE options, PINGREQ/PINGRESP.
        let (c2s, s2c, _) = session("v5-paho-python-full-session");
        let q2 = c2s
            .iter()
            .filter_map(|p| p.as_publish())
            .find(|p| p.qos() == 2)
            .unwrap();
        assert_eq!(q2.payload().len(), 256);
        assert!(q2.payload().iter().enumerate().all(|(i, &b)| b == i as u8));
        let sub = c2s[1].as_subscribe().unwrap();
        assert_eq!(sub.subscription_identifier(), Some(7));
        assert_eq!(sub.filters()[0].1, 0x0a);
        assert!(c2s.iter().any(|p| p.kind() == PacketType::Pingreq));
        assert!(s2c.iter().any(|p| p.kind() == PacketType::Pingresp));
        // The broker echoes the subscription identifier.
        let echoed = s2c.iter().find_map(|p| p.as_publish()).unwrap();
        assert_eq!(
            echoed.properties().get(id::SUBSCRIPTION_IDENTIFIER),
            Some(mqtt::PropertyValue::VarInt(7))
        );
    }

    #[test]
    fn client_packets_need_connect_first() {
        // A server stream given to a client-side decoder fails on its first byte.
        let bytes = read("v311-pub-qos0.s2c.bin");
        let mut dec = Decoder::default();
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(CodecError::Malformed {
                reason: "first packet must be CONNECT",
                ..
            })
        ));
    }

    #[test]
    fn mount_point_round_trip_on_vectors() {
        // Every client PUBLISH/SUBSCRIBE/UNSUBSCRIBE re-encoded under a mount point
        // decodes to the mounted topic with everything else unchanged; taking the
        // mount point off again gives back the original bytes.
        for (name, ..) in SESSIONS {
            let (c2s, _, version) = session(name);
            for p in &c2s {
                match p.body() {
                    Body::Connect(connect) => {
                        let same =
                            mqtt::connect_with(connect, &mqtt::ConnectEdit::default()).unwrap();
                        assert_eq!(&same[..], &p.wire()[..], "{name}");
                        let will = connect
                            .will()
                            .map(|w| mqtt::topic::mount(b"tenant/", w.topic()));
                        let edit = mqtt::ConnectEdit {
                            client_id: Some(b"tenant:id"),
                            will_topic: will.as_deref(),
                            credentials: None,
                        };
                        let mut dec = Decoder::default();
                        let mut buf =
                            BytesMut::from(&mqtt::connect_with(connect, &edit).unwrap()[..]);
                        let q = dec.decode(&mut buf).unwrap().unwrap();
                        let qc = q.as_connect().unwrap();
                        assert_eq!(&qc.client_id()[..], b"tenant:id");
                        assert_eq!(qc.will().map(|w| w.topic().to_vec()), will);
                        assert_eq!(qc.username(), connect.username());
                        assert_eq!(qc.password(), connect.password());
                    }
                    Body::Publish(publish) => {
                        let mounted = mqtt::publish_with_topic(
                            publish,
                            &mqtt::topic::mount(b"tenant/", publish.topic()),
                        )
                        .unwrap();
                        let q = one(version, &mounted);
                        let qp = q.as_publish().unwrap();
                        assert_eq!(qp.topic().len(), publish.topic().len() + 7);
                        assert_eq!(qp.payload(), publish.payload());
                        assert_eq!(qp.properties(), publish.properties());
                        assert_eq!(qp.packet_id(), publish.packet_id());
                        assert_eq!(q.flags(), p.flags());
                        let back = mqtt::publish_with_topic(
                            qp,
                            mqtt::topic::unmount(b"tenant/", qp.topic()).unwrap(),
                        )
                        .unwrap();
                        assert_eq!(&back[..], &p.wire()[..]);
                    }
                    Body::Subscribe(sub) => {
                        let out = mqtt::subscribe_with_filters(
                            sub,
                            sub.filters()
                                .iter()
                                .map(|(f, o)| (mqtt::topic::mount(b"tenant/", f), *o)),
                        )
                        .unwrap();
                        let q = one(version, &out);
                        let qs = q.as_subscribe().unwrap();
                        assert_eq!(qs.properties(), sub.properties());
                        assert_eq!(qs.packet_id(), sub.packet_id());
                        for ((a, ao), (b, bo)) in qs.filters().iter().zip(sub.filters()) {
                            assert_eq!(&a[..7], b"tenant/");
                            assert_eq!(&a[7..], &b[..]);
                            assert_eq!(ao, bo);
                        }
                    }
                    Body::Unsubscribe(unsub) => {
                        let out = mqtt::unsubscribe_with_filters(
                            unsub,
                            unsub
                                .filters()
                                .iter()
                                .map(|f| mqtt::topic::mount(b"tenant/", f)),
                        )
                        .unwrap();
                        let q = one(version, &out);
                        let qu = q.as_unsubscribe().unwrap();
                        assert_eq!(qu.filters().len(), unsub.filters().len());
                        assert_eq!(qu.packet_id(), unsub.packet_id());
                    }
                    _ => {}
                }
            }
        }
    }

    /// Decode one packet of a session of `version` (server-side decoder: the
    /// packet grammar is the same in both directions).
    fn one(version: Version, bytes: &[u8]) -> Packet {
        let mut dec = Decoder::with_version(Limits::default(), version);
        let mut buf = BytesMut::from(bytes);
        let p = dec.decode(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        p
    }

    // ---- the rmqtt-codec oracle ----

    /// What both decoders must agree on, per packet.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Norm {
        Connect {
            level: u8,
            client_id: Bytes,
            clean: bool,
            keep_alive: u16,
            username: Option<Bytes>,
            password: Option<Bytes>,
            /// qos, retain, topic, payload
            will: Option<(u8, bool, Bytes, Bytes)>,
            /// MQTT 5: session expiry (0 when absent), receive maximum, maximum
            /// packet size, topic alias maximum (0 when absent), user properties.
            v5: Option<ConnectV5>,
        },
        Connack {
            session_present: bool,
            code: u8,
        },
        Publish {
            dup: bool,
            qos: u8,
            retain: bool,
            topic: Bytes,
            packet_id: Option<u16>,
            payload: Bytes,
            /// MQTT 5: topic alias, user properties, subscription identifiers,
            /// content type, response topic, correlation data.
            v5: Option<PublishV5>,
        },
        Ack {
            kind: u8,
            packet_id: u16,
            reason: u8,
        },
        Subscribe {
            packet_id: u16,
            filters: Vec<(Bytes, u8)>,
            subscription_id: Option<u32>,
        },
        Suback {
            packet_id: u16,
            codes: Vec<u8>,
        },
        Unsubscribe {
            packet_id: u16,
            filters: Vec<Bytes>,
        },
        Unsuback {
            packet_id: u16,
            codes: Vec<u8>,
        },
        Pingreq,
        Pingresp,
        Disconnect {
            reason: u8,
        },
        Auth {
            reason: u8,
        },
    }

    /// CONNECT, MQTT 5: session expiry (0 when absent), receive maximum,
    /// maximum packet size, topic alias maximum (0 when absent), user properties.
    type ConnectV5 = (u32, Option<u16>, Option<u32>, u16, Vec<(Bytes, Bytes)>);

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct PublishV5 {
        topic_alias: Option<u16>,
        user_properties: Vec<(Bytes, Bytes)>,
        subscription_ids: Vec<u32>,
        content_type: Option<Bytes>,
        response_topic: Option<Bytes>,
        correlation_data: Option<Bytes>,
    }

    fn ours(p: &Packet) -> Norm {
        let v5 = p.version() == Version::V5;
        match p.body() {
            Body::Connect(c) => Norm::Connect {
                level: c.version().level(),
                client_id: c.client_id().clone(),
                clean: c.clean_start(),
                keep_alive: c.keep_alive(),
                username: c.username().cloned(),
                password: c.password().cloned(),
                will: c
                    .will()
                    .map(|w| (w.qos(), w.retain(), w.topic().clone(), w.payload().clone())),
                v5: v5.then(|| {
                    (
                        c.session_expiry_interval().unwrap_or(0),
                        c.receive_maximum(),
                        c.maximum_packet_size(),
                        c.topic_alias_maximum().unwrap_or(0),
                        c.properties().user_properties().collect(),
                    )
                }),
            },
            Body::Connack(c) => Norm::Connack {
                session_present: c.session_present(),
                code: c.code(),
            },
            Body::Publish(pb) => Norm::Publish {
                dup: pb.dup(),
                qos: pb.qos(),
                retain: pb.retain(),
                topic: pb.topic().clone(),
                packet_id: pb.packet_id(),
                payload: pb.payload().clone(),
                v5: v5.then(|| {
                    let props = pb.properties();
                    PublishV5 {
                        topic_alias: pb.topic_alias(),
                        user_properties: props.user_properties().collect(),
                        subscription_ids: props
                            .iter()
                            .filter_map(|p| match p.value {
                                mqtt::PropertyValue::VarInt(v)
                                    if p.id == id::SUBSCRIPTION_IDENTIFIER =>
                                {
                                    Some(v)
                                }
                                _ => None,
                            })
                            .collect(),
                        content_type: props.string(id::CONTENT_TYPE),
                        response_topic: props.string(id::RESPONSE_TOPIC),
                        correlation_data: match props.get(id::CORRELATION_DATA) {
                            Some(mqtt::PropertyValue::Binary(b)) => Some(b),
                            _ => None,
                        },
                    }
                }),
            },
            Body::Puback(a) | Body::Pubrec(a) | Body::Pubrel(a) | Body::Pubcomp(a) => Norm::Ack {
                kind: p.kind().number(),
                packet_id: a.packet_id(),
                reason: a.reason(),
            },
            Body::Subscribe(s) => Norm::Subscribe {
                packet_id: s.packet_id(),
                filters: s.filters().to_vec(),
                subscription_id: s.subscription_identifier(),
            },
            Body::Suback(s) => Norm::Suback {
                packet_id: s.packet_id(),
                codes: s.codes().to_vec(),
            },
            Body::Unsubscribe(u) => Norm::Unsubscribe {
                packet_id: u.packet_id(),
                filters: u.filters().to_vec(),
            },
            Body::Unsuback(u) => Norm::Unsuback {
                packet_id: u.packet_id(),
                codes: u.codes().to_vec(),
            },
            Body::Pingreq => Norm::Pingreq,
            Body::Pingresp => Norm::Pingresp,
            Body::Disconnect(d) => Norm::Disconnect { reason: d.reason() },
            Body::Auth(a) => Norm::Auth { reason: a.reason() },
        }
    }

    /// rmqtt's strings (`ByteString`) as bytes.
    fn s(b: &impl AsRef<[u8]>) -> Bytes {
        Bytes::copy_from_slice(b.as_ref())
    }

    fn users<K: AsRef<[u8]>>(list: &[(K, K)]) -> Vec<(Bytes, Bytes)> {
        list.iter().map(|(k, v)| (s(k), s(v))).collect()
    }

    /// Generated strings as rmqtt's strings.
    fn strings<K: From<String>>(list: Vec<(String, String)>) -> Vec<(K, K)> {
        list.into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect()
    }

    fn theirs_publish(p: &rmqtt_codec::types::Publish, v5: bool) -> Norm {
        Norm::Publish {
            dup: p.dup,
            qos: p.qos as u8,
            retain: p.retain,
            topic: s(&p.topic),
            packet_id: p.packet_id.map(NonZeroU16::get),
            payload: p.payload.clone(),
            v5: v5.then(|| {
                let props = p.properties.clone().unwrap_or_default();
                PublishV5 {
                    topic_alias: props.topic_alias.map(NonZeroU16::get),
                    user_properties: users(&props.user_properties),
                    subscription_ids: props.subscription_ids.iter().map(|i| i.get()).collect(),
                    content_type: props.content_type.as_ref().map(s),
                    response_topic: props.response_topic.as_ref().map(s),
                    correlation_data: props.correlation_data.clone(),
                }
            }),
        }
    }

    fn theirs_v3(p: &v3::Packet) -> Norm {
        match p {
            v3::Packet::Connect(c) => Norm::Connect {
                level: c.protocol.level(),
                client_id: s(&c.client_id),
                clean: c.clean_session,
                keep_alive: c.keep_alive,
                username: c.username.as_ref().map(s),
                password: c.password.clone(),
                will: c
                    .last_will
                    .as_ref()
                    .map(|w| (w.qos as u8, w.retain, s(&w.topic), w.message.clone())),
                v5: None,
            },
            v3::Packet::ConnectAck(c) => Norm::Connack {
                session_present: c.session_present,
                code: u8::from(c.return_code),
            },
            v3::Packet::Publish(p) => theirs_publish(p, false),
            v3::Packet::PublishAck { packet_id } => ack(4, *packet_id, 0),
            v3::Packet::PublishReceived { packet_id } => ack(5, *packet_id, 0),
            v3::Packet::PublishRelease { packet_id } => ack(6, *packet_id, 0),
            v3::Packet::PublishComplete { packet_id } => ack(7, *packet_id, 0),
            v3::Packet::Subscribe {
                packet_id,
                topic_filters,
            } => Norm::Subscribe {
                packet_id: packet_id.get(),
                filters: topic_filters
                    .iter()
                    .map(|(f, q)| (s(f), *q as u8))
                    .collect(),
                subscription_id: None,
            },
            v3::Packet::SubscribeAck { packet_id, status } => Norm::Suback {
                packet_id: packet_id.get(),
                codes: status
                    .iter()
                    .map(|c| match c {
                        v3::SubscribeReturnCode::Success(q) => *q as u8,
                        v3::SubscribeReturnCode::Failure => 0x80,
                    })
                    .collect(),
            },
            v3::Packet::Unsubscribe {
                packet_id,
                topic_filters,
            } => Norm::Unsubscribe {
                packet_id: packet_id.get(),
                filters: topic_filters.iter().map(s).collect(),
            },
            v3::Packet::UnsubscribeAck { packet_id } => Norm::Unsuback {
                packet_id: packet_id.get(),
                codes: Vec::new(),
            },
            v3::Packet::PingRequest => Norm::Pingreq,
            v3::Packet::PingResponse => Norm::Pingresp,
            v3::Packet::Disconnect => Norm::Disconnect { reason: 0 },
        }
    }

    fn ack(kind: u8, packet_id: NonZeroU16, reason: u8) -> Norm {
        Norm::Ack {
            kind,
            packet_id: packet_id.get(),
            reason,
        }
    }

    fn theirs_v5(p: &v5::Packet) -> Norm {
        match p {
            v5::Packet::Connect(c) => Norm::Connect {
                level: 5,
                client_id: s(&c.client_id),
                clean: c.clean_start,
                keep_alive: c.keep_alive,
                username: c.username.as_ref().map(s),
                password: c.password.clone(),
                will: c
                    .last_will
                    .as_ref()
                    .map(|w| (w.qos as u8, w.retain, s(&w.topic), w.message.clone())),
                v5: Some((
                    c.session_expiry_interval_secs,
                    c.receive_max.map(NonZeroU16::get),
                    c.max_packet_size.map(NonZeroU32::get),
                    c.topic_alias_max,
                    users(&c.user_properties),
                )),
            },
            v5::Packet::ConnectAck(c) => Norm::Connack {
                session_present: c.session_present,
                code: c.reason_code as u8,
            },
            v5::Packet::Publish(p) => theirs_publish(p, true),
            v5::Packet::PublishAck(a) => ack(4, a.packet_id, a.reason_code as u8),
            v5::Packet::PublishReceived(a) => ack(5, a.packet_id, a.reason_code as u8),
            v5::Packet::PublishRelease(a) => ack(6, a.packet_id, a.reason_code as u8),
            v5::Packet::PublishComplete(a) => ack(7, a.packet_id, a.reason_code as u8),
            v5::Packet::Subscribe(sub) => Norm::Subscribe {
                packet_id: sub.packet_id.get(),
                filters: sub
                    .topic_filters
                    .iter()
                    .map(|(f, o)| {
                        let options = o.qos as u8
                            | u8::from(o.no_local) << 2
                            | u8::from(o.retain_as_published) << 3
                            | u8::from(o.retain_handling) << 4;
                        (s(f), options)
                    })
                    .collect(),
                subscription_id: sub.id.map(NonZeroU32::get),
            },
            v5::Packet::SubscribeAck(a) => Norm::Suback {
                packet_id: a.packet_id.get(),
                codes: a.status.iter().map(|c| *c as u8).collect(),
            },
            v5::Packet::Unsubscribe(u) => Norm::Unsubscribe {
                packet_id: u.packet_id.get(),
                filters: u.topic_filters.iter().map(s).collect(),
            },
            v5::Packet::UnsubscribeAck(a) => Norm::Unsuback {
                packet_id: a.packet_id.get(),
                codes: a.status.iter().map(|c| *c as u8).collect(),
            },
            v5::Packet::PingRequest => Norm::Pingreq,
            v5::Packet::PingResponse => Norm::Pingresp,
            v5::Packet::Disconnect(d) => Norm::Disconnect {
                reason: d.reason_code as u8,
            },
            v5::Packet::Auth(a) => Norm::Auth {
                reason: a.reason_code as u8,
            },
        }
    }

    /// The oracle's packets for a whole stream, or the error it stopped on.
    fn oracle(version: Version, bytes: &[u8]) -> (Vec<Norm>, bool) {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        match version {
            Version::V5 => {
                let mut codec = v5::Codec::new(1 << 20, 0);
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some((p, _))) => out.push(theirs_v5(&p)),
                        Ok(None) => return (out, true),
                        Err(_) => return (out, false),
                    }
                }
            }
            Version::V31 | Version::V311 => {
                let mut codec = v3::Codec::new(1 << 20);
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some((p, _))) => out.push(theirs_v3(&p)),
                        Ok(None) => return (out, true),
                        Err(_) => return (out, false),
                    }
                }
            }
        }
    }

    #[test]
    fn oracle_agrees_on_every_vector() {
        for (name, ..) in SESSIONS {
            let (c2s, s2c, version) = session(name);
            for (dir, packets) in [("c2s", c2s), ("s2c", s2c)] {
                let bytes = read(&format!("{name}.{dir}.bin"));
                let (theirs, ok) = oracle(version, &bytes);
                assert!(ok, "{name}.{dir}: rmqtt-codec failed");
                let ours: Vec<Norm> = packets.iter().map(ours).collect();
                assert_eq!(ours, theirs, "{name}.{dir}");
            }
        }
    }

    // ---- generated packets, encoded by the oracle ----

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                8 => proptest::char::range('a', 'z'),
                1 => Just('/'),
                1 => proptest::char::range('\u{80}', '\u{7ff}'),
                1 => Just('\u{1f600}'),
            ],
            0..max,
        )
        .prop_map(|c| c.into_iter().collect())
    }

    fn topic_name() -> impl Strategy<Value = String> {
        text(24).prop_map(|t| if t.is_empty() { "t".to_owned() } else { t })
    }

    fn filter() -> impl Strategy<Value = String> {
        prop_oneof![
            topic_name(),
            topic_name().prop_map(|t| format!("{t}/#")),
            topic_name().prop_map(|t| format!("+/{t}")),
            Just("#".to_owned()),
        ]
    }

    fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn qos() -> impl Strategy<Value = QoS> {
        prop_oneof![
            Just(QoS::AtMostOnce),
            Just(QoS::AtLeastOnce),
            Just(QoS::ExactlyOnce)
        ]
    }

    fn nz16() -> impl Strategy<Value = NonZeroU16> {
        (1u16..).prop_map(|n| NonZeroU16::new(n).unwrap())
    }

    fn user_props() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec((text(8), text(8)), 0..3)
    }

    fn publish(v5: bool) -> impl Strategy<Value = rmqtt_codec::types::Publish> {
        (
            any::<bool>(),
            qos(),
            any::<bool>(),
            topic_name(),
            nz16(),
            bytes(64),
            (
                proptest::option::of(nz16()),
                user_props(),
                proptest::option::of(text(12)),
                proptest::option::of(bytes(8)),
            ),
        )
            .prop_map(
                move |(dup, qos, retain, topic, id, payload, (alias, user, content_type, corr))| {
                    let at_most_once = qos == QoS::AtMostOnce;
                    rmqtt_codec::types::Publish {
                        dup: dup && !at_most_once,
                        retain,
                        qos,
                        topic: topic.into(),
                        packet_id: (!at_most_once).then_some(id),
                        payload,
                        properties: v5.then(|| v5::PublishProperties {
                            topic_alias: alias,
                            user_properties: strings(user),
                            content_type: content_type.map(Into::into),
                            correlation_data: corr,
                            ..Default::default()
                        }),
                    }
                },
            )
    }

    fn v3_packet() -> impl Strategy<Value = v3::Packet> {
        prop_oneof![
            publish(false).prop_map(|p| v3::Packet::Publish(Box::new(p))),
            nz16().prop_map(|packet_id| v3::Packet::PublishAck { packet_id }),
            nz16().prop_map(|packet_id| v3::Packet::PublishReceived { packet_id }),
            nz16().prop_map(|packet_id| v3::Packet::PublishRelease { packet_id }),
            nz16().prop_map(|packet_id| v3::Packet::PublishComplete { packet_id }),
            (nz16(), proptest::collection::vec((filter(), qos()), 1..4)).prop_map(
                |(packet_id, filters)| v3::Packet::Subscribe {
                    packet_id,
                    topic_filters: filters.into_iter().map(|(f, q)| (f.into(), q)).collect(),
                }
            ),
            (nz16(), proptest::collection::vec(filter(), 1..4)).prop_map(|(packet_id, filters)| {
                v3::Packet::Unsubscribe {
                    packet_id,
                    topic_filters: filters.into_iter().map(Into::into).collect(),
                }
            }),
            (
                nz16(),
                proptest::collection::vec(
                    prop_oneof![
                        qos().prop_map(v3::SubscribeReturnCode::Success),
                        Just(v3::SubscribeReturnCode::Failure)
                    ],
                    1..4
                )
            )
                .prop_map(|(packet_id, status)| v3::Packet::SubscribeAck { packet_id, status }),
            nz16().prop_map(|packet_id| v3::Packet::UnsubscribeAck { packet_id }),
            Just(v3::Packet::PingRequest),
            Just(v3::Packet::PingResponse),
            Just(v3::Packet::Disconnect),
        ]
    }

    fn v3_connect() -> impl Strategy<Value = v3::Packet> {
        (
            prop_oneof![Just(3u8), Just(4u8)],
            text(23),
            any::<bool>(),
            any::<u16>(),
            proptest::option::of((qos(), any::<bool>(), topic_name(), bytes(16))),
            proptest::option::of((text(12), proptest::option::of(bytes(12)))),
        )
            .prop_map(
                |(level, client_id, clean_session, keep_alive, will, creds)| {
                    let (username, password) = match creds {
                        Some((u, p)) => (Some(u.into()), p),
                        None => (None, None),
                    };
                    v3::Packet::Connect(Box::new(v3::Connect {
                        protocol: Protocol(level),
                        clean_session,
                        keep_alive,
                        last_will: will.map(|(qos, retain, topic, message)| v3::LastWill {
                            qos,
                            retain,
                            topic: topic.into(),
                            message,
                        }),
                        client_id: client_id.into(),
                        username,
                        password,
                        cert: None,
                    }))
                },
            )
    }

    fn v5_connect() -> impl Strategy<Value = v5::Packet> {
        (
            text(23),
            any::<bool>(),
            any::<u16>(),
            (
                any::<u32>(),
                proptest::option::of(nz16()),
                any::<u16>(),
                user_props(),
                proptest::option::of((1u32..).prop_map(|n| NonZeroU32::new(n).unwrap())),
            ),
            proptest::option::of((qos(), any::<bool>(), topic_name(), bytes(16))),
            proptest::option::of(text(12)),
            proptest::option::of(bytes(12)),
        )
            .prop_map(
                |(
                    client_id,
                    clean_start,
                    keep_alive,
                    (expiry, rmax, tamax, user, mps),
                    will,
                    username,
                    password,
                )| {
                    v5::Packet::Connect(Box::new(v5::Connect {
                        clean_start,
                        keep_alive,
                        session_expiry_interval_secs: expiry,
                        auth_method: None,
                        auth_data: None,
                        request_problem_info: true,
                        request_response_info: false,
                        receive_max: rmax,
                        topic_alias_max: tamax,
                        user_properties: strings(user),
                        max_packet_size: mps,
                        last_will: will.map(|(qos, retain, topic, message)| v5::LastWill {
                            qos,
                            retain,
                            topic: topic.into(),
                            message,
                            will_delay_interval_sec: None,
                            correlation_data: None,
                            message_expiry_interval: None,
                            content_type: None,
                            user_properties: Vec::new(),
                            is_utf8_payload: None,
                            response_topic: None,
                        }),
                        client_id: client_id.into(),
                        username: username.map(Into::into),
                        password,
                        cert: None,
                    }))
                },
            )
    }

    fn v5_packet() -> impl Strategy<Value = v5::Packet> {
        prop_oneof![
            publish(true).prop_map(|p| v5::Packet::Publish(Box::new(p))),
            (
                nz16(),
                prop_oneof![Just(0u8), Just(0x10), Just(0x80), Just(0x97)],
                user_props()
            )
                .prop_map(|(packet_id, reason, properties)| {
                    v5::Packet::PublishAck(v5::PublishAck {
                        packet_id,
                        reason_code: v5::PublishAckReason::try_from(reason).unwrap(),
                        properties: strings(properties),
                        reason_string: None,
                    })
                }),
            (nz16(), prop_oneof![Just(0u8), Just(0x92)]).prop_map(|(packet_id, reason)| {
                v5::Packet::PublishRelease(v5::PublishAck2 {
                    packet_id,
                    reason_code: v5::PublishAck2Reason::try_from(reason).unwrap(),
                    properties: Vec::new(),
                    reason_string: None,
                })
            }),
            (
                nz16(),
                proptest::option::of((1u32..1 << 20).prop_map(|n| NonZeroU32::new(n).unwrap())),
                user_props(),
                proptest::collection::vec(
                    (filter(), qos(), any::<bool>(), any::<bool>(), 0u8..3),
                    1..4
                )
            )
                .prop_map(|(packet_id, id, user_properties, filters)| {
                    v5::Packet::Subscribe(v5::Subscribe {
                        packet_id,
                        id,
                        user_properties: strings(user_properties),
                        topic_filters: filters
                            .into_iter()
                            .map(|(f, qos, no_local, rap, rh)| {
                                (
                                    f.into(),
                                    v5::SubscriptionOptions {
                                        qos,
                                        no_local,
                                        retain_as_published: rap,
                                        retain_handling: v5::RetainHandling::try_from(rh).unwrap(),
                                    },
                                )
                            })
                            .collect(),
                    })
                }),
            (
                nz16(),
                user_props(),
                proptest::collection::vec(filter(), 1..4)
            )
                .prop_map(|(packet_id, user_properties, filters)| {
                    v5::Packet::Unsubscribe(v5::Unsubscribe {
                        packet_id,
                        user_properties: strings(user_properties),
                        topic_filters: filters.into_iter().map(Into::into).collect(),
                    })
                }),
            (
                nz16(),
                proptest::collection::vec(
                    prop_oneof![Just(0u8), Just(1), Just(2), Just(0x80), Just(0x87)],
                    1..4
                )
            )
                .prop_map(|(packet_id, codes)| {
                    v5::Packet::SubscribeAck(v5::SubscribeAck {
                        packet_id,
                        properties: Vec::new(),
                        reason_string: None,
                        status: codes
                            .into_iter()
                            .map(|c| v5::SubscribeAckReason::try_from(c).unwrap())
                            .collect(),
                    })
                }),
            Just(v5::Packet::PingRequest),
            Just(v5::Packet::PingResponse),
            (
                prop_oneof![Just(0u8), Just(4), Just(0x8d), Just(0x96)],
                proptest::option::of(any::<u32>())
            )
                .prop_map(|(reason, expiry)| {
                    v5::Packet::Disconnect(v5::Disconnect {
                        reason_code: v5::DisconnectReasonCode::try_from(reason).unwrap(),
                        session_expiry_interval_secs: expiry,
                        server_reference: None,
                        reason_string: None,
                        user_properties: Vec::new(),
                    })
                }),
        ]
    }

    /// Decode `bytes` with our decoder, client-side: the packets or the error.
    fn ours_stream(bytes: &[u8]) -> (Vec<Packet>, Option<CodecError>) {
        let mut dec = Decoder::default();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// MQTT 3.1 / 3.1.1 streams encoded by rmqtt-codec decode to the same
        /// values with our codec, and the wire bytes are the encoder's.
        #[test]
        fn oracle_encoded_v3(connect in v3_connect(), packets in proptest::collection::vec(v3_packet(), 0..8)) {
            let mut codec = v3::Codec::new(0);
            let mut wire = BytesMut::new();
            let mut expected = Vec::new();
            for p in std::iter::once(connect).chain(packets) {
                expected.push(theirs_v3(&p));
                codec.encode(p, &mut wire).unwrap();
            }
            // rmqtt-codec 0.3 writes level 4 after the 3.1 name `MQIsdp`; make
            // it the level 3 it stands for.
            if let Some(at) = wire.windows(8).position(|w| w == b"\x00\x06MQIsdp") {
                wire[at + 8] = 3;
            }
            let (decoded, error) = ours_stream(&wire);
            prop_assert_eq!(error, None);
            let got: Vec<Norm> = decoded.iter().map(ours).collect();
            prop_assert_eq!(got, expected);
            let concat: Vec<u8> = decoded.iter().flat_map(|p| p.wire().to_vec()).collect();
            prop_assert_eq!(&concat[..], &wire[..]);
        }

        /// The same for MQTT 5, properties included.
        #[test]
        fn oracle_encoded_v5(connect in v5_connect(), packets in proptest::collection::vec(v5_packet(), 0..8)) {
            let mut codec = v5::Codec::new(0, 0);
            let mut wire = BytesMut::new();
            let mut expected = Vec::new();
            for p in std::iter::once(connect).chain(packets) {
                expected.push(theirs_v5(&p));
                codec.encode(p, &mut wire).unwrap();
            }
            let (decoded, error) = ours_stream(&wire);
            prop_assert_eq!(error, None);
            let got: Vec<Norm> = decoded.iter().map(ours).collect();
            prop_assert_eq!(got, expected);
        }

        /// Our gateway-made packets decode with the oracle to what was asked for.
        #[test]
        fn oracle_decodes_our_packets(
            v5 in any::<bool>(),
            id in 1u16..,
            sp in any::<bool>(),
            codes in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(2), Just(0x80)], 1..6),
            reason in prop_oneof![Just(0u8), Just(0x80), Just(0x87), Just(0x97)],
            v5_code in prop_oneof![Just(0u8), Just(0x86), Just(0x87), Just(0x88)],
        ) {
            let version = if v5 { Version::V5 } else { Version::V311 };
            let connack_code = mqtt::code::connack_code(version, v5_code);
            let mut stream = Vec::new();
            let mut expected = vec![
                Norm::Connack { session_present: sp && connack_code == 0, code: connack_code },
                Norm::Ack { kind: 4, packet_id: id, reason: if v5 { reason } else { 0 } },
                Norm::Ack { kind: 5, packet_id: id, reason: if v5 { reason } else { 0 } },
                Norm::Suback { packet_id: id, codes: codes.clone() },
                Norm::Unsuback { packet_id: id, codes: if v5 { vec![0; codes.len()] } else { Vec::new() } },
                Norm::Pingresp,
            ];
            for b in [
                mqtt::connack(version, sp, connack_code),
                mqtt::puback(version, id, reason),
                mqtt::pubrec(version, id, reason),
                mqtt::suback(version, id, &codes),
                mqtt::unsuback(version, id, &vec![0; codes.len()]),
                mqtt::pingresp(),
            ] {
                stream.extend_from_slice(&b);
            }
            if v5 {
                stream.extend_from_slice(&mqtt::disconnect(version, 0x8d));
                expected.push(Norm::Disconnect { reason: 0x8d });
            }
            let (theirs, ok) = oracle(version, &stream);
            prop_assert!(ok);
            prop_assert_eq!(theirs, expected);
        }
    }

    // ---- noise both decoders see ----

    /// Packets with valid fixed headers around MQTT-ish bodies: reaches the body
    /// parsers of both decoders far more often than uniform bytes.
    fn noisy_packet() -> impl Strategy<Value = Vec<u8>> {
        let body = proptest::collection::vec(
            prop_oneof![
                Just(vec![0u8, 1, b'a']),
                Just(vec![0u8, 3, b'a', b'/', b'b']),
                Just(vec![0u8, 0]),
                Just(vec![0u8, 1]),
                Just(vec![0x26u8, 0, 1, b'k', 0, 1, b'v']),
                Just(vec![0x23u8, 0, 1]),
                Just(vec![0x0bu8, 7]),
                Just(vec![0x1fu8, 0, 2, b'o', b'k']),
                proptest::collection::vec(any::<u8>(), 0..4),
            ],
            0..6,
        )
        .prop_map(|parts| parts.concat());
        (
            prop_oneof![
                (3u8..=3, 0u8..16).prop_map(|(t, f)| (t << 4) | f),
                prop::sample::select(vec![
                    0x20u8, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xa2, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0
                ]),
                any::<u8>(),
            ],
            body,
        )
            .prop_map(|(first, body)| {
                let mut out = vec![first];
                let mut len = body.len();
                loop {
                    let b = (len & 0x7f) as u8;
                    len >>= 7;
                    if len == 0 {
                        out.push(b);
                        break;
                    }
                    out.push(b | 0x80);
                }
                out.extend_from_slice(&body);
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Where both decoders accept a packet, they agree on its content.
        #[test]
        fn differential_noise(v5 in any::<bool>(), packets in proptest::collection::vec(noisy_packet(), 1..6)) {
            let connect: &[u8] = if v5 {
                b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc"
            } else {
                b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc"
            };
            let version = if v5 { Version::V5 } else { Version::V311 };
            let mut stream = connect.to_vec();
            for p in &packets {
                stream.extend_from_slice(p);
            }
            let (mine, _) = ours_stream(&stream);
            let (theirs, _) = oracle(version, &stream);
            let mine: Vec<Norm> = mine.iter().map(ours).collect();
            let n = mine.len().min(theirs.len());
            prop_assert_eq!(&mine[..n], &theirs[..n]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Valid streams with a few bytes changed after the CONNECT: where both
        /// decoders accept a packet, they agree on its content.
        #[test]
        fn differential_mutations_v3(
            packets in proptest::collection::vec(v3_packet(), 1..6),
            mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut codec = v3::Codec::new(0);
            let mut wire = BytesMut::from(&b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc"[..]);
            let start = wire.len();
            for p in packets {
                codec.encode(p, &mut wire).unwrap();
            }
            mutate(&mut wire, start, &mutations);
            let (mine, _) = ours_stream(&wire);
            let (theirs, _) = oracle(Version::V311, &wire);
            let mine: Vec<Norm> = mine.iter().map(ours).collect();
            let n = mine.len().min(theirs.len());
            prop_assert_eq!(&mine[..n], &theirs[..n]);
        }

        /// The same for MQTT 5.
        #[test]
        fn differential_mutations_v5(
            packets in proptest::collection::vec(v5_packet(), 1..6),
            mutations in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut codec = v5::Codec::new(0, 0);
            let mut wire = BytesMut::from(&b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc"[..]);
            let start = wire.len();
            for p in packets {
                codec.encode(p, &mut wire).unwrap();
            }
            mutate(&mut wire, start, &mutations);
            let (mine, _) = ours_stream(&wire);
            let (theirs, _) = oracle(Version::V5, &wire);
            let mine: Vec<Norm> = mine.iter().map(ours).collect();
            let n = mine.len().min(theirs.len());
            prop_assert_eq!(&mine[..n], &theirs[..n]);
        }
    }

    /// Overwrite bytes of `wire` at or after `start`.
    fn mutate(wire: &mut BytesMut, start: usize, mutations: &[(usize, u8)]) {
        let span = wire.len() - start;
        if span == 0 {
            return;
        }
        for &(at, value) in mutations {
            wire[start + at % span] = value;
        }
    }
}
