//! Property tests: the decoder never panics, read sizes do not change the
//! packets, gateway-made packets and mount-point re-encodings decode back to
//! what was asked for, and topic matching agrees with a reference matcher.
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

/// Decode everything that decodes; whether it stopped without an error.
fn drain(dec: &mut Decoder, buf: &mut BytesMut) -> (Vec<Packet>, bool) {
    let mut out = Vec::new();
    loop {
        match dec.decode(buf) {
            Ok(Some(p)) => out.push(p),
            Ok(None) => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

/// Feed `input` in pieces cut at `cuts`; the packets, whether it ended
/// without error, and the bytes left.
fn chunked(mut dec: Decoder, input: &[u8], cuts: &[usize]) -> (Vec<Packet>, bool, usize) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut from = 0;
    for to in points {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        let (items, ok) = drain(&mut dec, &mut buf);
        out.extend(items);
        if !ok {
            return (out, false, buf.len());
        }
    }
    (out, true, buf.len())
}

fn decoders() -> [Decoder; 4] {
    [
        Decoder::default(),
        Decoder::with_version(Limits::default(), Version::V31),
        Decoder::with_version(Limits::default(), Version::V311),
        Decoder::with_version(Limits { max_packet: 64 }, Version::V5),
    ]
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    packet::put_varint(out, len);
}

/// A packet with a valid fixed header around an MQTT-looking body.
fn noisy_packet() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(vec![0u8, 4, b'M', b'Q', b'T', b'T', 4]),
        Just(vec![0u8, 4, b'M', b'Q', b'T', b'T', 5]),
        Just(vec![0u8, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3]),
        Just(vec![0u8, 1, b'a']),
        Just(vec![0u8, 3, b'a', b'/', b'#']),
        Just(vec![0u8, 0]),
        Just(vec![0u8, 1]),
        Just(vec![0x26u8, 0, 1, b'k', 0, 1, b'v']),
        Just(vec![0x23u8, 0, 1]),
        Just(vec![0x0bu8, 7]),
        Just(vec![0x11u8, 0, 0, 0, 9]),
        Just(vec![0x1fu8, 0, 2, b'o', b'k']),
        Just(vec![0xffu8, 0xff, 0xff, 0x7f]),
        prop::collection::vec(any::<u8>(), 0..4),
    ];
    let body = prop::collection::vec(token, 0..8).prop_map(|t| t.concat());
    (any::<u8>(), body).prop_map(|(first, body)| {
        let mut out = vec![first];
        put_len(&mut out, body.len());
        out.extend_from_slice(&body);
        out
    })
}

/// A CONNECT of each version followed by noisy packets.
fn noisy_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![
            &b"\x10\x11\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x03abc"[..],
            b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc",
            b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc",
            b"",
        ]),
        prop::collection::vec(noisy_packet(), 0..6),
    )
        .prop_map(|(connect, rest)| {
            let mut out = connect.to_vec();
            for p in rest {
                out.extend_from_slice(&p);
            }
            out
        })
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V31), Just(Version::V311), Just(Version::V5)]
}

/// The MQTT matching rules, written as a recursion over levels.
fn reference_match(filter: &[&[u8]], topic: &[&[u8]]) -> bool {
    match (filter.split_first(), topic.split_first()) {
        (Some((f, _)), _) if *f == b"#" => true,
        (Some((f, fr)), Some((_, tr))) if *f == b"+" => reference_match(fr, tr),
        (Some((f, fr)), Some((t, tr))) => f == t && reference_match(fr, tr),
        (None, None) => true,
        _ => false,
    }
}

fn levels(s: &[u8]) -> Vec<&[u8]> {
    s.split(|&b| b == b'/').collect()
}

fn level() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"".to_vec()),
        Just(b"a".to_vec()),
        Just(b"b".to_vec()),
        Just(b"$SYS".to_vec()),
        Just(b"ab".to_vec()),
    ]
}

fn topic_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(level(), 1..5).prop_map(|l| l.join(&b'/'))
}

fn filter_strategy() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(prop_oneof![level(), Just(b"+".to_vec())], 0..4),
        any::<bool>(),
    )
        .prop_map(|(mut l, hash)| {
            if hash || l.is_empty() {
                l.push(b"#".to_vec());
            }
            let f = l.join(&b'/');
            if f.is_empty() { b"#".to_vec() } else { f }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Arbitrary bytes: no panic, for every kind of decoder.
    #[test]
    fn no_panic_on_bytes(input in prop::collection::vec(any::<u8>(), 0..256)) {
        for mut dec in decoders() {
            let mut buf = BytesMut::from(&input[..]);
            let (packets, _) = drain(&mut dec, &mut buf);
            let total: usize = packets.iter().map(|p| p.wire().len()).sum();
            prop_assert!(input.starts_with(&input[..total]));
        }
    }

    /// MQTT-looking streams: no panic; the packets are a prefix of the input;
    /// metadata and every view are reachable.
    #[test]
    fn no_panic_on_noise(input in noisy_stream()) {
        for mut dec in decoders() {
            let mut buf = BytesMut::from(&input[..]);
            let (packets, _) = drain(&mut dec, &mut buf);
            let wire: Vec<u8> = packets.iter().flat_map(|p| p.wire().to_vec()).collect();
            prop_assert!(input.starts_with(&wire));
            for p in &packets {
                let _ = p.get(&Field::Topic);
                let _ = p.get(&Field::ClientId);
                let _ = p.get(&Field::User);
                let _ = p.packet_id();
                let props = match p.body() {
                    Body::Publish(x) => x.properties().clone(),
                    Body::Connect(x) => x.properties().clone(),
                    Body::Connack(x) => x.properties().clone(),
                    Body::Subscribe(x) => x.properties().clone(),
                    Body::Disconnect(x) => x.properties().clone(),
                    _ => Properties::default(),
                };
                // Validated properties iterate over all their bytes.
                let n = props.iter().count();
                prop_assert_eq!(n == 0, props.is_empty());
            }
        }
    }

    /// Any read sizes give the same packets as one read.
    #[test]
    fn chunking_is_invisible(
        input in noisy_stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        for dec in decoders() {
            let (whole, ok_whole, left_whole) = chunked(dec.clone(), &input, &[]);
            let (pieces, ok_pieces, left_pieces) = chunked(dec, &input, &cuts);
            prop_assert_eq!(ok_whole, ok_pieces);
            prop_assert_eq!(&whole, &pieces);
            if ok_whole {
                prop_assert_eq!(left_whole, left_pieces);
            }
        }
    }

    /// Gateway-made packets decode to what was asked for.
    #[test]
    fn encoders_round_trip(
        version in version(),
        id in 1u16..,
        session_present in any::<bool>(),
        code in prop_oneof![Just(0u8), Just(3), Just(0x80), Just(0x87), Just(0x97)],
        codes in prop::collection::vec(prop_oneof![Just(0u8), Just(1), Just(2), Just(0x80)], 1..300),
    ) {
        let v5 = version == Version::V5;
        let reason = if v5 { code } else { 0 };
        let mut dec = Decoder::with_version(Limits::default(), version);
        let decode = |dec: &mut Decoder, b: Bytes| {
            let mut buf = BytesMut::from(&b[..]);
            let p = dec.decode(&mut buf).unwrap().unwrap();
            assert!(buf.is_empty());
            assert_eq!(p.wire(), &b);
            p
        };

        let p = decode(&mut dec, connack(version, session_present, code));
        let c = p.as_connack().unwrap();
        prop_assert_eq!(c.code(), code);
        prop_assert_eq!(
            c.session_present(),
            session_present && code == 0 && version != Version::V31
        );

        for (b, kind) in [
            (puback(version, id, code), PacketType::Puback),
            (pubrec(version, id, code), PacketType::Pubrec),
            (pubrel(version, id, code), PacketType::Pubrel),
            (pubcomp(version, id, code), PacketType::Pubcomp),
        ] {
            let p = decode(&mut dec, b);
            prop_assert_eq!(p.kind(), kind);
            let (Body::Puback(a) | Body::Pubrec(a) | Body::Pubrel(a) | Body::Pubcomp(a)) =
                p.body()
            else {
                panic!("{p:?}")
            };
            prop_assert_eq!((a.packet_id(), a.reason()), (id, reason));
        }

        let p = decode(&mut dec, suback(version, id, &codes));
        let Body::Suback(s) = p.body() else { panic!() };
        prop_assert_eq!(s.packet_id(), id);
        prop_assert_eq!(&s.codes()[..], &codes[..]);

        let p = decode(&mut dec, unsuback(version, id, &codes));
        let Body::Unsuback(s) = p.body() else { panic!() };
        prop_assert_eq!(s.packet_id(), id);
        prop_assert_eq!(&s.codes()[..], if v5 { &codes[..] } else { &[][..] });

        let p = decode(&mut dec, disconnect(version, code));
        let Body::Disconnect(d) = p.body() else { panic!() };
        prop_assert_eq!(d.reason(), reason);

        prop_assert_eq!(decode(&mut dec, pingresp()).kind(), PacketType::Pingresp);
        prop_assert_eq!(decode(&mut dec, pingreq()).kind(), PacketType::Pingreq);
    }

    /// A PUBLISH re-encoded with another topic decodes to that topic with the
    /// same flags, packet id, properties and payload.
    #[test]
    fn publish_with_topic_round_trip(
        version in version(),
        header in prop_oneof![Just(0x30u8), Just(0x31), Just(0x32), Just(0x3b), Just(0x35)],
        topic in "[a-z/]{1,20}",
        new_topic in "[a-z/]{1,300}",
        id in 1u16..,
        payload in prop::collection::vec(any::<u8>(), 0..200),
        user in prop::collection::vec(("[a-z]{0,6}", "[a-z]{0,6}"), 0..3),
    ) {
        let mut body = Vec::new();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        if header & 0x06 != 0 {
            body.extend_from_slice(&id.to_be_bytes());
        }
        if version == Version::V5 {
            let mut props = Vec::new();
            for (k, v) in &user {
                props.push(properties::id::USER_PROPERTY);
                props.extend_from_slice(&(k.len() as u16).to_be_bytes());
                props.extend_from_slice(k.as_bytes());
                props.extend_from_slice(&(v.len() as u16).to_be_bytes());
                props.extend_from_slice(v.as_bytes());
            }
            put_len(&mut body, props.len());
            body.extend_from_slice(&props);
        }
        body.extend_from_slice(&payload);
        let mut wire = vec![header];
        put_len(&mut wire, body.len());
        wire.extend_from_slice(&body);

        let mut dec = Decoder::with_version(Limits::default(), version);
        let mut buf = BytesMut::from(&wire[..]);
        let original = dec.decode(&mut buf).unwrap().unwrap();
        let p = original.as_publish().unwrap();
        prop_assert_eq!(&p.topic()[..], topic.as_bytes());
        let expected_user = if version == Version::V5 { user.len() } else { 0 };
        prop_assert_eq!(p.properties().user_properties().count(), expected_user);

        let out = publish_with_topic(p, new_topic.as_bytes()).unwrap();
        let mut buf = BytesMut::from(&out[..]);
        let again = dec.decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        let q = again.as_publish().unwrap();
        prop_assert_eq!(&q.topic()[..], new_topic.as_bytes());
        prop_assert_eq!(q.payload(), p.payload());
        prop_assert_eq!(q.properties(), p.properties());
        prop_assert_eq!(q.packet_id(), p.packet_id());
        prop_assert_eq!((q.dup(), q.qos(), q.retain()), (p.dup(), p.qos(), p.retain()));
        // And back.
        let back = publish_with_topic(q, topic.as_bytes()).unwrap();
        prop_assert_eq!(&back[..], &wire[..]);
    }

    /// SUBSCRIBE / UNSUBSCRIBE re-encoded with other filters decode to them.
    #[test]
    fn filters_round_trip(
        version in version(),
        id in 1u16..,
        filters in prop::collection::vec(("[a-z/+#]{1,40}", 0u8..3), 1..5),
        mount in "[a-z]{0,8}/",
    ) {
        let mut body = id.to_be_bytes().to_vec();
        if version == Version::V5 {
            body.extend_from_slice(b"\x02\x0b\x05");
        }
        let mut unsub_body = id.to_be_bytes().to_vec();
        if version == Version::V5 {
            unsub_body.push(0);
        }
        for (f, o) in &filters {
            body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            body.extend_from_slice(f.as_bytes());
            body.push(*o);
            unsub_body.extend_from_slice(&(f.len() as u16).to_be_bytes());
            unsub_body.extend_from_slice(f.as_bytes());
        }
        let mut dec = Decoder::with_version(Limits::default(), version);
        let one = |dec: &mut Decoder, b: &[u8]| {
            let mut buf = BytesMut::from(b);
            let p = dec.decode(&mut buf).unwrap().unwrap();
            assert!(buf.is_empty());
            p
        };

        let mut wire = vec![0x82];
        put_len(&mut wire, body.len());
        wire.extend_from_slice(&body);
        let p = one(&mut dec, &wire);
        let s = p.as_subscribe().unwrap();
        let mounted: Vec<(Vec<u8>, u8)> = s
            .filters()
            .iter()
            .map(|(f, o)| (topic::mount(mount.as_bytes(), f), *o))
            .collect();
        let out = subscribe_with_filters(s, mounted.iter().map(|(f, o)| (f, *o))).unwrap();
        let q = one(&mut dec, &out);
        let t = q.as_subscribe().unwrap();
        prop_assert_eq!(t.packet_id(), id);
        prop_assert_eq!(t.properties(), s.properties());
        let got: Vec<(Vec<u8>, u8)> = t.filters().iter().map(|(f, o)| (f.to_vec(), *o)).collect();
        prop_assert_eq!(got, mounted);
        // The same filters give back the same bytes.
        let same = subscribe_with_filters(s, s.filters().iter().map(|(f, o)| (f, *o))).unwrap();
        prop_assert_eq!(&same[..], &wire[..]);

        let mut wire = vec![0xa2];
        put_len(&mut wire, unsub_body.len());
        wire.extend_from_slice(&unsub_body);
        let p = one(&mut dec, &wire);
        let u = p.as_unsubscribe().unwrap();
        let same = unsubscribe_with_filters(u, u.filters()).unwrap();
        prop_assert_eq!(&same[..], &wire[..]);
        let out = unsubscribe_with_filters(
            u,
            u.filters().iter().map(|f| topic::mount(mount.as_bytes(), f)),
        )
        .unwrap();
        let q = one(&mut dec, &out);
        prop_assert_eq!(q.as_unsubscribe().unwrap().filters().len(), filters.len());
    }

    /// `matches` agrees with the reference matcher; mounting a filter and a
    /// topic under the same mount point keeps the answer.
    #[test]
    fn matching(filter in filter_strategy(), topic in topic_strategy(), mount in "[a-z]{1,4}/") {
        prop_assert!(topic::valid_filter(&filter), "{:?}", String::from_utf8_lossy(&filter));
        let expected = reference_match(&levels(&filter), &levels(&topic))
            && !(topic.first() == Some(&b'$') && matches!(filter.first(), Some(b'+' | b'#')));
        prop_assert_eq!(topic::matches(&filter, &topic), expected);
        if topic.first() != Some(&b'$') {
            let m = mount.as_bytes();
            prop_assert_eq!(
                topic::matches(&topic::mount(m, &filter), &topic::mount(m, &topic)),
                expected
            );
            let mounted = topic::mount(m, &topic);
            prop_assert_eq!(topic::unmount(m, &mounted), Some(&topic[..]));
        }
        // A topic name is a filter that matches exactly itself.
        if topic::valid_topic_name(&topic) {
            prop_assert!(topic::matches(&topic, &topic));
        }
    }

    /// Filter validity agrees with the level rules.
    #[test]
    fn filter_validity(filter in "[a-z/+#]{1,12}") {
        let f = filter.as_bytes();
        let ls = levels(f);
        let expected = ls.iter().enumerate().all(|(i, l)| {
            let plus_ok = !l.contains(&b'+') || *l == b"+";
            let hash_ok = !l.contains(&b'#') || (*l == b"#" && i == ls.len() - 1);
            plus_ok && hash_ok
        });
        prop_assert_eq!(topic::valid_filter(f), expected);
        prop_assert_eq!(
            topic::valid_topic_name(f),
            !f.contains(&b'+') && !f.contains(&b'#')
        );
    }
}
