//! Unit tests of the MQTT codec on literal bytes.
use super::*;

// ---- sniff ----

/// First bytes of `mqtt/v311-pub-qos0.c2s.bin`.
const V311: &[u8] = b"\x10\x19\x00\x04MQTT\x04\x02\x00\x3c\x00\x0dvec";
/// First bytes of `mqtt/v5-paho-python-full-session.c2s.bin`.
const V5: &[u8] = b"\x10\x7a\x00\x04MQTT\x05\xce\x00\x02";
/// An MQTT 3.1 CONNECT (mosquitto_pub -V mqttv31), two-byte remaining length.
const V31: &[u8] = b"\x10\x81\x01\x00\x06MQIsdp\x03\x02\x00\x3c";

fn check(packet: &[u8], match_at: usize) {
    for n in 0..match_at {
        assert_eq!(sniff(&packet[..n]), Verdict::NeedMore, "{n}");
    }
    for n in match_at..=packet.len() {
        assert_eq!(sniff(&packet[..n]), Verdict::Match(Protocol::Mqtt), "{n}");
    }
}

#[test]
fn connects() {
    check(V311, 8);
    check(V5, 8);
    check(V31, 11);
}

#[test]
fn rejects() {
    // PUBLISH, PINGREQ: not a first packet.
    assert_eq!(sniff(b"\x30"), Verdict::Reject);
    assert_eq!(sniff(b"\xc0\x00"), Verdict::Reject);
    // CONNECT with reserved flags set.
    assert_eq!(sniff(b"\x11\x19"), Verdict::Reject);
    // Remaining length too small for a CONNECT, or over 4 bytes.
    assert_eq!(sniff(b"\x10\x02"), Verdict::Reject);
    assert_eq!(sniff(b"\x10\xff\xff\xff\xff"), Verdict::Reject);
    assert_eq!(sniff(b"\x10\xff\xff\xff"), Verdict::NeedMore);
    // Another protocol name.
    assert_eq!(sniff(b"\x10\x19\x00\x04MQTX"), Verdict::Reject);
    assert_eq!(sniff(b"\x10\x19\x00\x05"), Verdict::Reject);
    assert_eq!(sniff(b"\x10\x19\x01"), Verdict::Reject);
}

// ---- helpers ----

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Decode everything in `input`; the packets and the bytes left.
fn run(dec: &mut Decoder, input: &[u8]) -> Result<(Vec<Packet>, usize), CodecError> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(p) = dec.decode(&mut buf)? {
        out.push(p);
    }
    Ok((out, buf.len()))
}

/// A client-side decoder that has seen a CONNECT of `version`.
fn client_after_connect(version: Version) -> Decoder {
    let mut dec = Decoder::default();
    let connect: &[u8] = match version {
        Version::V31 => b"\x10\x11\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x03abc",
        Version::V311 => b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc",
        Version::V5 => b"\x10\x10\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x03abc",
    };
    let (ps, left) = run(&mut dec, connect).unwrap();
    assert_eq!((ps.len(), left), (1, 0));
    assert_eq!(dec.version(), Some(version));
    dec
}

/// Decode exactly one packet with `dec`.
fn one_with(dec: &mut Decoder, input: &[u8]) -> Packet {
    let (mut ps, left) = run(dec, input).unwrap_or_else(|e| panic!("{e}: {input:02x?}"));
    assert_eq!((ps.len(), left), (1, 0), "{input:02x?}");
    let p = ps.remove(0);
    assert_eq!(&p.wire()[..], input);
    p
}

/// One packet from a client of `version` (CONNECT already seen).
fn c2s(version: Version, input: &[u8]) -> Packet {
    one_with(&mut client_after_connect(version), input)
}

/// One packet from a server of `version`.
fn s2c(version: Version, input: &[u8]) -> Packet {
    one_with(
        &mut Decoder::with_version(Limits::default(), version),
        input,
    )
}

fn connect(input: &[u8]) -> Connect {
    match one_with(&mut Decoder::default(), input).into_body() {
        Body::Connect(c) => *c,
        other => panic!("not a CONNECT: {other:?}"),
    }
}

fn err(version: Option<Version>, input: &[u8]) -> CodecError {
    let mut dec = match version {
        None => Decoder::default(),
        Some(v) => Decoder::with_version(Limits::default(), v),
    };
    match run(&mut dec, input) {
        Err(e) => e,
        Ok((ps, left)) => panic!("no error for {input:02x?}: {ps:?}, {left} left"),
    }
}

fn malformed_err(version: Option<Version>, input: &[u8]) -> &'static str {
    match err(version, input) {
        CodecError::Malformed { reason, .. } => reason,
        e => panic!("not Malformed: {e}"),
    }
}

fn within(wire: &Bytes, part: &Bytes) -> bool {
    let range = wire.as_ptr_range();
    part.is_empty() || (range.contains(&part.as_ptr()) && part.len() <= wire.len())
}

// ---- CONNECT ----

/// First packet of `v311-sub-qos2-will-auth.c2s.bin`.
const CONNECT_V311: &str = "104700044d51545404ce001e000a7665632d737562333131000c7665632f3331312f77696c6c\
    000f73756273637269626572206c6f7374000776656375736572000776656370617373";

/// First packet of `v5-paho-python-full-session.c2s.bin`.
const CONNECT_V5: &str = "107a00044d51545405ce000231110000001e21000a2600036c696200097061686f2d6d717474\
    260007707572706f73650007766563746f7273270001000000097665632d7061686f3500000d7665632f7061686f2f77696c6c\
    00097061686f20676f6e6500097061686f2d75736572000b7061686f2d736563726574";

#[test]
fn connect_v311() {
    let wire = hex(CONNECT_V311);
    let p = one_with(&mut Decoder::default(), &wire);
    assert_eq!(p.kind(), PacketType::Connect);
    assert_eq!(p.flags(), 0);
    assert_eq!(p.version(), Version::V311);
    assert_eq!(p.packet_id(), None);
    assert_eq!(p.get(&Field::ClientId), Some(&b"vec-sub311"[..]));
    assert_eq!(p.get(&Field::User), Some(&b"vecuser"[..]));
    assert_eq!(p.get(&Field::Topic), None);
    assert!(!p.has_body());
    let c = p.as_connect().unwrap();
    assert_eq!(&c.protocol_name()[..], b"MQTT");
    assert_eq!(c.version(), Version::V311);
    assert_eq!(c.flags(), 0xce);
    assert!(c.clean_start());
    assert_eq!(c.keep_alive(), 30);
    assert!(c.properties().is_empty());
    assert_eq!(c.session_expiry_interval(), None);
    let will = c.will().unwrap();
    assert_eq!(will.qos(), 1);
    assert!(!will.retain());
    assert_eq!(&will.topic()[..], b"vec/311/will");
    assert_eq!(&will.payload()[..], b"subscriber lost");
    assert!(will.properties().is_empty());
    assert_eq!(&c.username().unwrap()[..], b"vecuser");
    assert_eq!(&c.password().unwrap()[..], b"vecpass");
    // Views into the wire.
    for part in [
        c.client_id(),
        will.topic(),
        will.payload(),
        c.password().unwrap(),
    ] {
        assert!(within(p.wire(), part));
    }
}

#[test]
fn connect_v5() {
    let wire = hex(CONNECT_V5);
    let c = connect(&wire);
    assert_eq!(c.version(), Version::V5);
    assert_eq!(&c.client_id()[..], b"vec-paho5");
    assert_eq!(c.keep_alive(), 2);
    assert!(c.clean_start());
    assert_eq!(c.session_expiry_interval(), Some(30));
    assert_eq!(c.receive_maximum(), Some(10));
    assert_eq!(c.maximum_packet_size(), Some(65536));
    assert_eq!(c.topic_alias_maximum(), None);
    assert_eq!(c.properties().raw().len(), 0x31);
    assert_eq!(c.properties().user_properties().count(), 2);
    let will = c.will().unwrap();
    assert_eq!((will.qos(), will.retain()), (1, false));
    assert!(will.properties().is_empty());
    assert_eq!(&will.topic()[..], b"vec/paho/will");
    assert_eq!(&will.payload()[..], b"paho gone");
    assert_eq!(&c.username().unwrap()[..], b"paho-user");
    assert_eq!(&c.password().unwrap()[..], b"paho-secret");
}

#[test]
fn connect_v5_will_properties() {
    // First packet of v5-pub-qos2-retained-will-props.c2s.bin.
    let c = connect(&hex(
        "105200044d515454050e003c03210014000b7665632d707562352d71321a1800000005260001770002777603000a\
         746578742f706c61696e000a7665632f352f77696c6c000e7075626c6973686572206c6f7374",
    ));
    assert_eq!(c.receive_maximum(), Some(20));
    let will = c.will().unwrap();
    assert_eq!((will.qos(), will.retain()), (1, false));
    assert_eq!(
        will.properties().get(properties::id::WILL_DELAY_INTERVAL),
        Some(PropertyValue::U32(5))
    );
    assert_eq!(
        will.properties()
            .string(properties::id::CONTENT_TYPE)
            .as_deref(),
        Some(&b"text/plain"[..])
    );
    assert_eq!(will.properties().iter().count(), 3);
    assert_eq!(c.username(), None);
    assert_eq!(c.password(), None);
}

#[test]
fn connect_v31() {
    let wire = b"\x10\x1d\x00\x06MQIsdp\x03\xc2\x00\x3c\x00\x03abc\x00\x04user\x00\x04pass";
    let c = connect(wire);
    assert_eq!(c.version(), Version::V31);
    assert_eq!(&c.protocol_name()[..], b"MQIsdp");
    assert_eq!(&c.client_id()[..], b"abc");
    assert_eq!(c.username().map(|u| &u[..]), Some(&b"user"[..]));
    assert_eq!(c.password().map(|u| &u[..]), Some(&b"pass"[..]));
}

#[test]
fn connect_empty_client_id_and_no_credentials() {
    let c = connect(b"\x10\x0c\x00\x04MQTT\x04\x00\x00\x00\x00\x00");
    assert!(c.client_id().is_empty());
    assert!(!c.clean_start());
    assert_eq!(c.keep_alive(), 0);
    assert!(c.will().is_none());
}

#[test]
fn connect_password_without_username() {
    // Allowed in MQTT 5 only.
    let c = connect(b"\x10\x13\x00\x04MQTT\x05\x42\x00\x3c\x00\x00\x01a\x00\x03pwd");
    assert_eq!(c.username(), None);
    assert_eq!(c.password().map(|p| &p[..]), Some(&b"pwd"[..]));
    assert_eq!(
        malformed_err(
            None,
            b"\x10\x12\x00\x04MQTT\x04\x42\x00\x3c\x00\x01a\x00\x03pwd"
        ),
        "password without a user name"
    );
    assert_eq!(
        malformed_err(
            None,
            b"\x10\x14\x00\x06MQIsdp\x03\x42\x00\x3c\x00\x01a\x00\x03pwd"
        ),
        "password without a user name"
    );
}

#[test]
fn connect_rejects() {
    let cases: &[(&[u8], &str)] = &[
        // Reserved flag.
        (
            b"\x10\x0f\x00\x04MQTT\x04\x03\x00\x3c\x00\x03abc",
            "reserved CONNECT flag set",
        ),
        // Will QoS 3; will QoS / retain without the will flag.
        (
            b"\x10\x0f\x00\x04MQTT\x04\x1e\x00\x3c\x00\x03abc",
            "will QoS 3",
        ),
        (
            b"\x10\x0f\x00\x04MQTT\x04\x0a\x00\x3c\x00\x03abc",
            "will QoS or retain set without a will",
        ),
        (
            b"\x10\x0f\x00\x04MQTT\x04\x22\x00\x3c\x00\x03abc",
            "will QoS or retain set without a will",
        ),
        // Unknown protocol name.
        (
            b"\x10\x0f\x00\x04MQTX\x04\x02\x00\x3c\x00\x03abc",
            "unknown protocol name",
        ),
        // Client id: invalid UTF-8, U+0000.
        (
            b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03a\xffc",
            "invalid UTF-8 string",
        ),
        (
            b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03a\x00c",
            "invalid UTF-8 string",
        ),
        // User name with U+0000.
        (
            b"\x10\x12\x00\x04MQTT\x04\x82\x00\x3c\x00\x01a\x00\x03u\x00u",
            "invalid UTF-8 string",
        ),
        // Trailing bytes; a field past the end.
        (
            b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abcX",
            "trailing bytes after the last field",
        ),
        (
            b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abc",
            "field runs past the end of the packet",
        ),
        (
            b"\x10\x0e\x00\x04MQTT\x04\x82\x00\x3c\x00\x02ab",
            "field runs past the end of the packet",
        ),
        // Will topic with a wildcard; empty will topic.
        (
            b"\x10\x15\x00\x04MQTT\x04\x06\x00\x3c\x00\x01a\x00\x03a/#\x00\x01x",
            "invalid will topic",
        ),
        (
            b"\x10\x12\x00\x04MQTT\x04\x06\x00\x3c\x00\x01a\x00\x00\x00\x01x",
            "invalid will topic",
        ),
        // Fixed-header flags.
        (
            b"\x12\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc",
            "invalid fixed header flags",
        ),
        // v5 CONNECT property not allowed there (topic alias).
        (
            b"\x10\x13\x00\x04MQTT\x05\x02\x00\x3c\x03\x23\x00\x01\x00\x03abc",
            "property not allowed in this packet",
        ),
    ];
    for (input, reason) in cases {
        assert_eq!(malformed_err(None, input), *reason, "{input:02x?}");
    }
    // An unknown level of a known name: Unsupported (answered with CONNACK 0x01).
    for input in [
        &b"\x10\x0f\x00\x04MQTT\x06\x02\x00\x3c\x00\x03abc"[..],
        b"\x10\x11\x00\x06MQIsdp\x04\x02\x00\x3c\x00\x03abc",
    ] {
        assert!(matches!(err(None, input), CodecError::Unsupported { .. }));
    }
}

#[test]
fn connect_first_and_once() {
    // Anything but CONNECT first: rejected on the first byte.
    for first in [0x20u8, 0x30, 0x82, 0xc0, 0xe0, 0xf0] {
        assert_eq!(
            malformed_err(None, &[first]),
            "first packet must be CONNECT",
            "{first:#x}"
        );
    }
    // A second CONNECT.
    let mut dec = client_after_connect(Version::V311);
    assert!(run(&mut dec, b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc").is_err());
    // A server-side decoder never takes a CONNECT.
    assert_eq!(
        malformed_err(Some(Version::V5), b"\x10"),
        "CONNECT after the first packet"
    );
}

// ---- CONNACK ----

#[test]
fn connacks() {
    let p = s2c(Version::V311, b"\x20\x02\x01\x00");
    assert_eq!(p.kind(), PacketType::Connack);
    let c = p.as_connack().unwrap();
    assert!(c.session_present());
    assert_eq!(c.code(), 0);
    assert!(c.properties().is_empty());

    let c = s2c(Version::V311, b"\x20\x02\x00\x05");
    assert_eq!(
        c.as_connack().map(|c| (c.session_present(), c.code())),
        Some((false, 5))
    );

    // 3.1: the first byte is reserved and ignored.
    let c = s2c(Version::V31, b"\x20\x02\x07\x04");
    assert_eq!(
        c.as_connack().map(|c| (c.session_present(), c.code())),
        Some((false, 4))
    );

    // v5 with properties (v5-pub-qos0-topic-alias.s2c.bin).
    let p = s2c(Version::V5, &hex("200900000622000a210014"));
    let c = p.as_connack().unwrap();
    assert_eq!((c.session_present(), c.code()), (false, 0));
    assert_eq!(
        c.properties().get(properties::id::TOPIC_ALIAS_MAXIMUM),
        Some(PropertyValue::U16(10))
    );
    assert_eq!(
        c.properties().get(properties::id::RECEIVE_MAXIMUM),
        Some(PropertyValue::U16(20))
    );
    // v5 refusal with a reason string; v5 without a property length.
    let c = s2c(Version::V5, b"\x20\x08\x00\x87\x05\x1f\x00\x02no");
    let c = c.as_connack().unwrap();
    assert_eq!(c.code(), 0x87);
    assert_eq!(c.properties().reason_string().as_deref(), Some(&b"no"[..]));
    let c = s2c(Version::V5, b"\x20\x02\x00\x88");
    assert_eq!(c.as_connack().map(|c| c.code()), Some(0x88));

    assert_eq!(
        malformed_err(Some(Version::V311), b"\x20\x02\x02\x00"),
        "reserved CONNACK flags set"
    );
    assert_eq!(
        malformed_err(Some(Version::V311), b"\x20\x03\x00\x00\x00"),
        "trailing bytes after the last field"
    );
    assert_eq!(
        malformed_err(Some(Version::V311), b"\x20\x01\x00"),
        "field runs past the end of the packet"
    );
    assert_eq!(
        malformed_err(Some(Version::V311), b"\x21\x02\x00\x00"),
        "invalid fixed header flags"
    );
    // A PUBLISH-only property in CONNACK.
    assert_eq!(
        malformed_err(Some(Version::V5), b"\x20\x06\x00\x00\x03\x23\x00\x01"),
        "property not allowed in this packet"
    );
}

// ---- PUBLISH ----

#[test]
fn publish_v311() {
    // QoS 0 (v311-pub-qos0.c2s.bin).
    let p = c2s(
        Version::V311,
        &hex("3016000a7665632f3331312f713068656c6c6f20716f7330"),
    );
    assert_eq!(p.kind(), PacketType::Publish);
    assert_eq!(p.flags(), 0);
    assert_eq!(p.packet_id(), None);
    assert_eq!(p.get(&Field::Topic), Some(&b"vec/311/q0"[..]));
    let pb = p.as_publish().unwrap();
    assert_eq!((pb.dup(), pb.qos(), pb.retain()), (false, 0, false));
    assert_eq!(&pb.topic()[..], b"vec/311/q0");
    assert_eq!(&pb.payload()[..], b"hello qos0");
    assert!(pb.properties().is_empty());
    assert_eq!(pb.topic_alias(), None);
    assert!(within(p.wire(), pb.topic()));
    assert!(within(p.wire(), &pb.payload()));

    // QoS 1 retained (v311-pub-qos1-retained.c2s.bin).
    let p = c2s(
        Version::V311,
        &hex(
            "332900107665632f3331312f72657461696e6564000172657461696e6564206d65737361676520716f7331",
        ),
    );
    let pb = p.as_publish().unwrap();
    assert_eq!((pb.dup(), pb.qos(), pb.retain()), (false, 1, true));
    assert_eq!(pb.packet_id(), Some(1));
    assert_eq!(p.packet_id(), Some(1));
    assert_eq!(&pb.payload()[..], b"retained message qos1");

    // QoS 2 with DUP, empty payload.
    let pb = c2s(Version::V311, b"\x3c\x07\x00\x03a/b\x12\x34");
    let pb = pb.as_publish().unwrap();
    assert_eq!((pb.dup(), pb.qos(), pb.retain()), (true, 2, false));
    assert_eq!(pb.packet_id(), Some(0x1234));
    assert!(pb.payload().is_empty());

    // The same bytes from the server side.
    let pb = s2c(Version::V311, b"\x30\x05\x00\x01a\xff\x00");
    assert_eq!(&pb.as_publish().unwrap().payload()[..], b"\xff\x00");
}

#[test]
fn publish_v5() {
    // QoS 1 with user properties, content type, expiry, response topic,
    // correlation data, payload format (v5-pub-qos1-user-properties.c2s.bin).
    let p = c2s(
        Version::V5,
        &hex(
            "326a000b7665632f352f70726f707300014d26000874726163652d696400066162633132332600026b320002\
             76320300106170706c69636174696f6e2f6a736f6e020000007808000a7665632f352f72657370090007636f\
             72722d343201017b2274656d70223a32312e357d",
        ),
    );
    let pb = p.as_publish().unwrap();
    assert_eq!(&pb.topic()[..], b"vec/5/props");
    assert_eq!(pb.qos(), 1);
    assert_eq!(pb.packet_id(), Some(1));
    assert_eq!(&pb.payload()[..], br#"{"temp":21.5}"#);
    let props = pb.properties();
    assert_eq!(props.raw().len(), 0x4d);
    assert!(within(p.wire(), props.raw()));
    assert_eq!(pb.payload_len(), pb.payload().len());
    assert_eq!(props.user_properties().count(), 2);
    assert_eq!(
        props.string(properties::id::CONTENT_TYPE).as_deref(),
        Some(&b"application/json"[..])
    );
    assert_eq!(
        props.get(properties::id::MESSAGE_EXPIRY_INTERVAL),
        Some(PropertyValue::U32(120))
    );
    assert_eq!(
        props.get(properties::id::CORRELATION_DATA),
        Some(PropertyValue::Binary(Bytes::from_static(b"corr-42")))
    );
    assert_eq!(
        props.get(properties::id::PAYLOAD_FORMAT_INDICATOR),
        Some(PropertyValue::Byte(1))
    );
    assert_eq!(props.iter().count(), 7);

    // Topic alias with a topic, then alias only.
    let p = c2s(
        Version::V5,
        &hex("3026000b7665632f352f616c69617303230001716f7330207769746820746f70696320616c696173"),
    );
    assert_eq!(p.as_publish().unwrap().topic_alias(), Some(1));
    let p = c2s(Version::V5, b"\x30\x07\x00\x00\x03\x23\x00\x01x");
    let pb = p.as_publish().unwrap();
    assert!(pb.topic().is_empty());
    assert_eq!(pb.topic_alias(), Some(1));
    assert_eq!(&pb.payload()[..], b"x");
    assert_eq!(p.get(&Field::Topic), Some(&b""[..]));

    // From the broker, with two subscription identifiers.
    let p = s2c(Version::V5, b"\x30\x0a\x00\x01a\x04\x0b\x01\x0b\x02hi");
    assert_eq!(&p.as_publish().unwrap().payload()[..], b"hi");
}

#[test]
fn publish_rejects() {
    let v3 = Some(Version::V311);
    let v5 = Some(Version::V5);
    assert_eq!(malformed_err(v3, b"\x36"), "PUBLISH with QoS 3");
    assert_eq!(malformed_err(v3, b"\x38"), "DUP set on a QoS 0 PUBLISH");
    assert_eq!(
        malformed_err(v3, b"\x30\x05\x00\x03a/#"),
        "wildcard in a PUBLISH topic"
    );
    assert_eq!(
        malformed_err(v3, b"\x30\x05\x00\x03+/a"),
        "wildcard in a PUBLISH topic"
    );
    assert_eq!(
        malformed_err(v3, b"\x30\x03\x00\x00x"),
        "empty PUBLISH topic without a topic alias"
    );
    assert_eq!(
        malformed_err(v5, b"\x30\x04\x00\x00\x00x"),
        "empty PUBLISH topic without a topic alias"
    );
    assert_eq!(
        malformed_err(v3, b"\x32\x05\x00\x01a\x00\x00"),
        "packet identifier 0"
    );
    assert_eq!(
        malformed_err(v3, b"\x32\x04\x00\x01a\x00"),
        "field runs past the end of the packet"
    );
    assert_eq!(
        malformed_err(v3, b"\x30\x03\x00\x01\xc0"),
        "invalid UTF-8 string"
    );
    // v5: properties missing, past the end, not allowed, alias 0.
    assert_eq!(
        malformed_err(v5, b"\x30\x03\x00\x01a"),
        "field runs past the end of the packet"
    );
    assert_eq!(
        malformed_err(v5, b"\x30\x05\x00\x01a\x05\x01"),
        "property length runs past the end of the packet"
    );
    assert_eq!(
        malformed_err(v5, b"\x30\x09\x00\x01a\x05\x11\x00\x00\x00\x01"),
        "property not allowed in this packet"
    );
    assert_eq!(
        malformed_err(v5, b"\x30\x07\x00\x01a\x03\x23\x00\x00"),
        "property value must not be 0"
    );
}

// ---- PUBACK, PUBREC, PUBREL, PUBCOMP ----

#[test]
fn acks() {
    for (first, kind) in [
        (0x40u8, PacketType::Puback),
        (0x50, PacketType::Pubrec),
        (0x62, PacketType::Pubrel),
        (0x70, PacketType::Pubcomp),
    ] {
        for version in [Version::V311, Version::V5] {
            let p = s2c(version, &[first, 0x02, 0x00, 0x07]);
            assert_eq!(p.kind(), kind);
            assert_eq!(p.packet_id(), Some(7));
            let (Body::Puback(a) | Body::Pubrec(a) | Body::Pubrel(a) | Body::Pubcomp(a)) = p.body()
            else {
                panic!("{p:?}")
            };
            assert_eq!((a.packet_id(), a.reason()), (7, 0));
            assert!(a.properties().is_empty());
            let p = c2s(version, &[first, 0x02, 0x00, 0x07]);
            assert_eq!(p.kind(), kind);
        }
        // v5 with a reason code; with a reason code and properties.
        let p = s2c(Version::V5, &[first, 0x03, 0x00, 0x07, 0x10]);
        let (Body::Puback(a) | Body::Pubrec(a) | Body::Pubrel(a) | Body::Pubcomp(a)) = p.body()
        else {
            panic!("{p:?}")
        };
        assert_eq!(a.reason(), 0x10);
        let p = s2c(
            Version::V5,
            &[
                first, 0x09, 0x00, 0x07, 0x80, 0x05, 0x1f, 0x00, 0x02, b'n', b'o',
            ],
        );
        let (Body::Puback(a) | Body::Pubrec(a) | Body::Pubrel(a) | Body::Pubcomp(a)) = p.body()
        else {
            panic!("{p:?}")
        };
        assert_eq!(a.reason(), 0x80);
        assert_eq!(a.properties().reason_string().as_deref(), Some(&b"no"[..]));
        // MQTT 3 has no reason code.
        assert_eq!(
            malformed_err(Some(Version::V311), &[first, 0x03, 0x00, 0x07, 0x10]),
            "trailing bytes after the last field"
        );
        assert_eq!(
            malformed_err(Some(Version::V311), &[first, 0x02, 0x00, 0x00]),
            "packet identifier 0"
        );
        assert_eq!(
            malformed_err(Some(Version::V5), &[first, 0x01, 0x00]),
            "field runs past the end of the packet"
        );
        // Wrong fixed-header flags.
        assert_eq!(
            malformed_err(Some(Version::V5), &[first ^ 0x02, 0x02, 0x00, 0x01]),
            "invalid fixed header flags"
        );
    }
    // MQTT 3.1 does not check the flags of PUBREL (which carried QoS 1 and DUP).
    let p = s2c(Version::V31, b"\x6a\x02\x00\x01");
    assert_eq!(p.kind(), PacketType::Pubrel);
    let p = s2c(Version::V31, b"\x60\x02\x00\x01");
    assert_eq!(p.flags(), 0);
}

// ---- SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK ----

#[test]
fn subscribe_v311() {
    let p = c2s(Version::V311, &hex("820e000100097665632f3331312f2302"));
    assert_eq!(p.kind(), PacketType::Subscribe);
    assert_eq!(p.flags(), 2);
    assert_eq!(p.packet_id(), Some(1));
    assert_eq!(p.get(&Field::Topic), Some(&b"vec/311/#"[..]));
    let s = p.as_subscribe().unwrap();
    assert_eq!(s.packet_id(), 1);
    assert_eq!(s.filters().len(), 1);
    assert_eq!(&s.filters()[0].0[..], b"vec/311/#");
    assert_eq!(s.filters()[0].1, 2);
    assert!(s.properties().is_empty());
    assert_eq!(s.subscription_identifier(), None);

    let p = c2s(
        Version::V311,
        b"\x82\x0c\x00\x02\x00\x01a\x00\x00\x03b/+\x01",
    );
    let s = p.as_subscribe().unwrap();
    let filters: Vec<_> = s.filters().iter().map(|(f, o)| (&f[..], *o)).collect();
    assert_eq!(filters, [(&b"a"[..], 0), (&b"b/+"[..], 1)]);

    let v3 = Some(Version::V311);
    assert_eq!(
        malformed_err(v3, b"\x82\x02\x00\x01"),
        "SUBSCRIBE without a topic filter"
    );
    assert_eq!(
        malformed_err(v3, b"\x82\x06\x00\x01\x00\x01a\x04"),
        "reserved subscription option bits set"
    );
    assert_eq!(
        malformed_err(v3, b"\x82\x06\x00\x01\x00\x01a\x03"),
        "subscription QoS 3"
    );
    assert_eq!(
        malformed_err(v3, b"\x82\x05\x00\x01\x00\x00\x00"),
        "empty topic filter"
    );
    assert_eq!(
        malformed_err(v3, b"\x82\x05\x00\x01\x00\x01a"),
        "field runs past the end of the packet"
    );
    assert_eq!(malformed_err(v3, b"\x80"), "invalid fixed header flags");
    assert_eq!(
        malformed_err(v3, b"\x82\x02\x00\x00"),
        "packet identifier 0"
    );
}

#[test]
fn subscribe_v5() {
    // v5-paho-python-full-session.c2s.bin: subscription identifier 7, options
    // QoS 2 + retain as published.
    let p = c2s(
        Version::V5,
        &hex("82120001020b07000a7665632f7061686f2f230a"),
    );
    let s = p.as_subscribe().unwrap();
    assert_eq!(s.subscription_identifier(), Some(7));
    assert_eq!(s.filters().len(), 1);
    let (filter, options) = &s.filters()[0];
    assert_eq!(&filter[..], b"vec/paho/#");
    assert_eq!(sub_options::qos(*options), 2);
    assert!(sub_options::retain_as_published(*options));
    assert!(!sub_options::no_local(*options));
    assert_eq!(sub_options::retain_handling(*options), 0);
    // With a user property (v5-sub-props-unsub-disconnect-reason.c2s.bin).
    let p = c2s(
        Version::V5,
        &hex("82220001152600077375622d6b657900097375622d76616c756500077665632f352f2302"),
    );
    let s = p.as_subscribe().unwrap();
    assert_eq!(s.properties().user_properties().count(), 1);
    assert_eq!(s.filters()[0].1, 2);
    // No local, retain handling 2.
    let p = c2s(Version::V5, b"\x82\x07\x00\x01\x00\x00\x01a\x26");
    let o = p.as_subscribe().unwrap().filters()[0].1;
    assert!(sub_options::no_local(o));
    assert_eq!(sub_options::retain_handling(o), 2);

    let v5 = Some(Version::V5);
    assert_eq!(
        malformed_err(v5, b"\x82\x07\x00\x01\x00\x00\x01a\x40"),
        "reserved subscription option bits set"
    );
    assert_eq!(
        malformed_err(v5, b"\x82\x07\x00\x01\x00\x00\x01a\x30"),
        "retain handling 3"
    );
    assert_eq!(
        malformed_err(v5, b"\x82\x03\x00\x01\x00"),
        "SUBSCRIBE without a topic filter"
    );
    assert_eq!(
        malformed_err(v5, b"\x82\x0b\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00"),
        "property included more than once"
    );
}

#[test]
fn unsubscribe() {
    let p = c2s(Version::V311, b"\xa2\x0a\x00\x03\x00\x01a\x00\x03b/#");
    assert_eq!(p.kind(), PacketType::Unsubscribe);
    assert_eq!(p.packet_id(), Some(3));
    assert_eq!(p.get(&Field::Topic), Some(&b"a"[..]));
    let u = p.as_unsubscribe().unwrap();
    assert_eq!(u.packet_id(), 3);
    let filters: Vec<_> = u.filters().iter().map(|f| &f[..]).collect();
    assert_eq!(filters, [&b"a"[..], b"b/#"]);

    // v5-paho-python-full-session.c2s.bin.
    let p = c2s(Version::V5, &hex("a20f000500000a7665632f7061686f2f23"));
    let u = p.as_unsubscribe().unwrap();
    assert_eq!(u.packet_id(), 5);
    assert!(u.properties().is_empty());
    assert_eq!(&u.filters()[0][..], b"vec/paho/#");

    assert_eq!(
        malformed_err(Some(Version::V311), b"\xa2\x02\x00\x01"),
        "UNSUBSCRIBE without a topic filter"
    );
    assert_eq!(
        malformed_err(Some(Version::V5), b"\xa2\x03\x00\x01\x00"),
        "UNSUBSCRIBE without a topic filter"
    );
    assert_eq!(
        malformed_err(Some(Version::V311), b"\xa0"),
        "invalid fixed header flags"
    );
    // A subscription identifier is not allowed in UNSUBSCRIBE.
    assert_eq!(
        malformed_err(Some(Version::V5), b"\xa2\x08\x00\x01\x02\x0b\x01\x00\x01a"),
        "property not allowed in this packet"
    );
}

#[test]
fn subacks() {
    let p = s2c(Version::V311, &hex("9003000102"));
    assert_eq!(p.kind(), PacketType::Suback);
    let Body::Suback(s) = p.body() else { panic!() };
    assert_eq!(s.packet_id(), 1);
    assert_eq!(&s.codes()[..], b"\x02");
    let p = s2c(Version::V311, b"\x90\x05\x00\x09\x00\x01\x80");
    let Body::Suback(s) = p.body() else { panic!() };
    assert_eq!(&s.codes()[..], b"\x00\x01\x80");
    let p = s2c(Version::V5, &hex("900400010002"));
    let Body::Suback(s) = p.body() else { panic!() };
    assert_eq!((s.packet_id(), &s.codes()[..]), (1, &b"\x02"[..]));

    let p = s2c(Version::V311, b"\xb0\x02\x00\x05");
    assert_eq!(p.kind(), PacketType::Unsuback);
    assert_eq!(p.packet_id(), Some(5));
    let Body::Unsuback(u) = p.body() else {
        panic!()
    };
    assert!(u.codes().is_empty());
    let p = s2c(Version::V5, &hex("b00400020011"));
    let Body::Unsuback(u) = p.body() else {
        panic!()
    };
    assert_eq!((u.packet_id(), &u.codes()[..]), (2, &b"\x11"[..]));

    assert_eq!(
        malformed_err(Some(Version::V311), b"\x90\x03\x00\x01\x03"),
        "invalid SUBACK return code"
    );
    let p = s2c(Version::V5, b"\x90\x04\x00\x01\x00\x8f");
    let Body::Suback(s) = p.body() else { panic!() };
    assert_eq!(&s.codes()[..], b"\x8f");
    assert_eq!(
        malformed_err(Some(Version::V311), b"\x90\x02\x00\x01"),
        "acknowledgement without a return code"
    );
    assert_eq!(
        malformed_err(Some(Version::V5), b"\x90\x03\x00\x01\x00"),
        "acknowledgement without a return code"
    );
    assert_eq!(
        malformed_err(Some(Version::V5), b"\xb0\x03\x00\x01\x00"),
        "acknowledgement without a return code"
    );
    assert_eq!(
        malformed_err(Some(Version::V311), b"\xb0\x03\x00\x01\x00"),
        "trailing bytes after the last field"
    );
}

// ---- PINGREQ, PINGRESP, DISCONNECT, AUTH ----

#[test]
fn pings() {
    for version in [Version::V31, Version::V311, Version::V5] {
        let p = c2s(version, b"\xc0\x00");
        assert_eq!((p.kind(), p.body()), (PacketType::Pingreq, &Body::Pingreq));
        let p = s2c(version, b"\xd0\x00");
        assert_eq!(
            (p.kind(), p.body()),
            (PacketType::Pingresp, &Body::Pingresp)
        );
    }
    assert_eq!(
        malformed_err(Some(Version::V5), b"\xc0\x01\x00"),
        "trailing bytes after the last field"
    );
    assert_eq!(
        malformed_err(Some(Version::V311), b"\xd1\x00"),
        "invalid fixed header flags"
    );
}

#[test]
fn disconnects() {
    for version in [Version::V31, Version::V311, Version::V5] {
        let p = c2s(version, b"\xe0\x00");
        let Body::Disconnect(d) = p.body() else {
            panic!()
        };
        assert_eq!(d.reason(), 0);
        assert!(d.properties().is_empty());
    }
    // v5 reason only; with session expiry (paho); with a reason string.
    let p = c2s(Version::V5, b"\xe0\x01\x04");
    let Body::Disconnect(d) = p.body() else {
        panic!()
    };
    assert_eq!(d.reason(), 4);
    let p = c2s(Version::V5, &hex("e00700051100000000"));
    let Body::Disconnect(d) = p.body() else {
        panic!()
    };
    assert_eq!((d.reason(), d.session_expiry_interval()), (0, Some(0)));
    let p = c2s(Version::V5, &hex("e00b00091f0006627965627965"));
    let Body::Disconnect(d) = p.body() else {
        panic!()
    };
    assert_eq!(
        d.properties().reason_string().as_deref(),
        Some(&b"byebye"[..])
    );
    assert_eq!(d.session_expiry_interval(), None);
    // Server-side DISCONNECT with a server reference.
    let p = s2c(Version::V5, b"\xe0\x07\x9c\x05\x1c\x00\x02h2");
    let Body::Disconnect(d) = p.body() else {
        panic!()
    };
    assert_eq!(d.reason(), 0x9c);

    assert_eq!(
        malformed_err(Some(Version::V311), b"\xe0\x01\x00"),
        "trailing bytes after the last field"
    );
    assert_eq!(
        malformed_err(Some(Version::V5), b"\xe0\x07\x00\x05\x23\x00\x01\x00\x00"),
        "property not allowed in this packet"
    );
}

#[test]
fn auth() {
    let p = c2s(Version::V5, b"\xf0\x00");
    let Body::Auth(a) = p.body() else { panic!() };
    assert_eq!(a.reason(), 0);
    let p = s2c(
        Version::V5,
        b"\xf0\x0b\x18\x09\x15\x00\x02sc\x16\x00\x01\xaa",
    );
    let Body::Auth(a) = p.body() else { panic!() };
    assert_eq!(a.reason(), 0x18);
    assert_eq!(
        a.properties()
            .string(properties::id::AUTHENTICATION_METHOD)
            .as_deref(),
        Some(&b"sc"[..])
    );
    assert_eq!(
        malformed_err(Some(Version::V311), b"\xf0\x00"),
        "AUTH is MQTT 5 only"
    );
    assert_eq!(
        malformed_err(Some(Version::V31), b"\xf0"),
        "AUTH is MQTT 5 only"
    );
    assert_eq!(
        malformed_err(Some(Version::V5), b"\xf1\x00"),
        "invalid fixed header flags"
    );
}

// ---- framing ----

#[test]
fn reserved_type() {
    assert_eq!(
        malformed_err(Some(Version::V311), b"\x00\x00"),
        "reserved packet type 0"
    );
    assert_eq!(malformed_err(None, b"\x0f"), "reserved packet type 0");
}

#[test]
fn remaining_length() {
    let v3 = Some(Version::V311);
    // A fifth length byte.
    assert_eq!(
        malformed_err(v3, b"\x30\xff\xff\xff\xff"),
        "variable byte integer longer than 4 bytes"
    );
    assert_eq!(
        malformed_err(v3, b"\x30\x80\x80\x80\x80\x01"),
        "variable byte integer longer than 4 bytes"
    );
    // Incomplete: nothing consumed.
    let mut dec = Decoder::with_version(Limits::default(), Version::V311);
    for input in [
        &b""[..],
        b"\x30",
        b"\x30\x80",
        b"\x30\xff\xff\xff",
        b"\x30\x05\x00\x01a",
    ] {
        let mut buf = BytesMut::from(input);
        assert_eq!(dec.decode(&mut buf).unwrap(), None, "{input:02x?}");
        assert_eq!(&buf[..], input);
    }
    // A non-minimal remaining length decodes and is kept byte-exact.
    let p = s2c(Version::V311, b"\xd0\x80\x00");
    assert_eq!(p.kind(), PacketType::Pingresp);
    let p = s2c(Version::V311, b"\x30\x84\x00\x00\x01ab");
    assert_eq!(&p.as_publish().unwrap().payload()[..], b"b");
}

#[test]
fn limits() {
    let limits = Limits { max_packet: 10 };
    // Over the limit: refused once the header is read, with no body bytes.
    let mut dec = Decoder::with_version(limits, Version::V311);
    let mut buf = BytesMut::from(&b"\x30\x0b"[..]);
    assert_eq!(
        dec.decode(&mut buf),
        Err(CodecError::FrameTooLarge {
            what: "mqtt packet",
            size: 11,
            limit: 10
        })
    );
    // A huge announced length in 4 bytes.
    let mut dec = Decoder::with_version(limits, Version::V311);
    let mut buf = BytesMut::from(&b"\x30\xff\xff\xff\x7f"[..]);
    assert!(matches!(
        dec.decode(&mut buf),
        Err(CodecError::FrameTooLarge {
            size: 268_435_455,
            ..
        })
    ));
    // At the limit: fine.
    let mut dec = Decoder::with_version(limits, Version::V311);
    let (ps, left) = run(&mut dec, b"\x30\x0a\x00\x01a0123456").unwrap();
    assert_eq!((ps.len(), left), (1, 0));
    // The CONNECT is limited too.
    let mut dec = Decoder::new(Limits { max_packet: 12 });
    assert!(matches!(
        run(&mut dec, &hex(CONNECT_V311)),
        Err(CodecError::FrameTooLarge { .. })
    ));
    assert_eq!(Limits::default().max_packet, 1 << 20);
    assert_eq!(dec.limits().max_packet, 12);
    dec.set_limits(Limits::default());
    assert!(run(&mut dec, &hex(CONNECT_V311)).is_ok());
}

#[test]
fn byte_by_byte() {
    // A whole client session fed one byte at a time gives the same packets.
    let mut session = hex(CONNECT_V5);
    session.extend_from_slice(&hex("82120001020b07000a7665632f7061686f2f230a"));
    session.extend_from_slice(b"\x30\x07\x00\x00\x03\x23\x00\x01x\xc0\x00\xe0\x00");
    let (whole, left) = run(&mut Decoder::default(), &session).unwrap();
    assert_eq!((whole.len(), left), (5, 0));
    let mut dec = Decoder::default();
    let mut buf = BytesMut::new();
    let mut pieces = Vec::new();
    for &b in &session {
        buf.extend_from_slice(&[b]);
        while let Some(p) = dec.decode(&mut buf).unwrap() {
            pieces.push(p);
        }
    }
    assert_eq!(pieces, whole);
    assert!(whole.iter().all(|p| p.version() == Version::V5));
}

#[test]
fn versions_and_types() {
    for v in [Version::V31, Version::V311, Version::V5] {
        assert_eq!(Version::from_level(v.level()), Some(v));
    }
    assert_eq!(Version::from_level(6), None);
    assert_eq!(PacketType::from_type(0), None);
    assert_eq!(PacketType::from_type(16), None);
    for n in 1..=15 {
        let t = PacketType::from_type(n).unwrap();
        assert_eq!(t.number(), n);
        assert!(!t.name().is_empty());
    }
    assert_eq!(PacketType::Publish.name(), "PUBLISH");
}

// ---- encoders ----

#[test]
fn encoders() {
    use Version::*;
    assert_eq!(&connack(V311, true, 0)[..], b"\x20\x02\x01\x00");
    assert_eq!(
        &connack(V311, true, code::V3_NOT_AUTHORIZED)[..],
        b"\x20\x02\x00\x05"
    );
    assert_eq!(&connack(V31, true, 0)[..], b"\x20\x02\x00\x00");
    assert_eq!(
        &connack(V5, false, code::NOT_AUTHORIZED)[..],
        b"\x20\x03\x00\x87\x00"
    );
    assert_eq!(&connack(V5, true, 0)[..], b"\x20\x03\x01\x00\x00");
    assert_eq!(&puback(V311, 1, 0x80)[..], b"\x40\x02\x00\x01");
    assert_eq!(&puback(V5, 1, 0)[..], b"\x40\x02\x00\x01");
    assert_eq!(
        &puback(V5, 0x0102, code::QUOTA_EXCEEDED)[..],
        b"\x40\x03\x01\x02\x97"
    );
    assert_eq!(&pubrec(V5, 2, 0x10)[..], b"\x50\x03\x00\x02\x10");
    assert_eq!(&pubrel(V311, 2, 0)[..], b"\x62\x02\x00\x02");
    assert_eq!(&pubcomp(V5, 2, 0x92)[..], b"\x70\x03\x00\x02\x92");
    assert_eq!(
        &suback(V311, 9, &[0, 1, 0x80])[..],
        b"\x90\x05\x00\x09\x00\x01\x80"
    );
    assert_eq!(&suback(V5, 9, &[0x87])[..], b"\x90\x04\x00\x09\x00\x87");
    assert_eq!(&unsuback(V311, 9, &[0x11])[..], b"\xb0\x02\x00\x09");
    assert_eq!(
        &unsuback(V5, 9, &[0, 0x11])[..],
        b"\xb0\x05\x00\x09\x00\x00\x11"
    );
    assert_eq!(&disconnect(V311, code::SERVER_BUSY)[..], b"\xe0\x00");
    assert_eq!(&disconnect(V5, 0)[..], b"\xe0\x00");
    assert_eq!(
        &disconnect(V5, code::KEEP_ALIVE_TIMEOUT)[..],
        b"\xe0\x02\x8d\x00"
    );
    assert_eq!(&pingresp()[..], b"\xd0\x00");
    assert_eq!(&pingreq()[..], b"\xc0\x00");
    // A long SUBACK needs a two-byte remaining length.
    let codes = vec![1u8; 200];
    let s = suback(V311, 1, &codes);
    assert_eq!(&s[..3], b"\x90\xca\x01");
    assert_eq!(s.len(), 3 + 202);
}

#[test]
fn reason_codes() {
    use code::*;
    assert_eq!(
        (
            SERVER_UNAVAILABLE,
            BAD_USER_NAME_OR_PASSWORD,
            NOT_AUTHORIZED,
            UNSPECIFIED_ERROR
        ),
        (0x88, 0x86, 0x87, 0x80)
    );
    assert_eq!(
        (
            KEEP_ALIVE_TIMEOUT,
            MESSAGE_RATE_TOO_HIGH,
            PACKET_TOO_LARGE,
            QUOTA_EXCEEDED
        ),
        (0x8d, 0x96, 0x95, 0x97)
    );
    assert_eq!(
        (
            V3_SERVER_UNAVAILABLE,
            V3_BAD_USERNAME_OR_PASSWORD,
            V3_NOT_AUTHORIZED
        ),
        (3, 4, 5)
    );
    assert_eq!(connack_code(Version::V5, NOT_AUTHORIZED), NOT_AUTHORIZED);
    assert_eq!(
        connack_code(Version::V311, NOT_AUTHORIZED),
        V3_NOT_AUTHORIZED
    );
    assert_eq!(connack_code(Version::V311, BAD_USER_NAME_OR_PASSWORD), 4);
    assert_eq!(connack_code(Version::V31, SERVER_UNAVAILABLE), 3);
    assert_eq!(connack_code(Version::V311, QUOTA_EXCEEDED), 3);
    assert_eq!(connack_code(Version::V311, SUCCESS), 0);
    assert_eq!(connack_code(Version::V311, UNSUPPORTED_PROTOCOL_VERSION), 1);
    assert_eq!(connack_code(Version::V311, CLIENT_IDENTIFIER_NOT_VALID), 2);
}

#[test]
fn publish_rewrite() {
    // v5 QoS 1 with properties: only the topic and the length change.
    let original = hex(
        "326a000b7665632f352f70726f707300014d26000874726163652d696400066162633132332600026b320002\
         76320300106170706c69636174696f6e2f6a736f6e020000007808000a7665632f352f72657370090007636f\
         72722d343201017b2274656d70223a32312e357d",
    );
    let p = c2s(Version::V5, &original);
    let pb = p.as_publish().unwrap();
    let mounted = topic::mount(b"tenant-a/", pb.topic());
    let out = publish_with_topic(pb, &mounted).unwrap();
    let mut expected = vec![0x32, 0x6a + 9, 0x00, 0x0b + 9];
    expected.extend_from_slice(b"tenant-a/vec/5/props");
    expected.extend_from_slice(&original[15..]);
    assert_eq!(&out[..], &expected[..]);
    let q = c2s(Version::V5, &out);
    let qb = q.as_publish().unwrap();
    assert_eq!(&qb.topic()[..], b"tenant-a/vec/5/props");
    assert_eq!(qb.payload(), pb.payload());
    assert_eq!(qb.properties(), pb.properties());
    assert_eq!(qb.packet_id(), pb.packet_id());
    assert_eq!(p.flags(), q.flags());
    // Back out of the mount point, on the server side.
    let back = publish_with_topic(qb, topic::unmount(b"tenant-a/", qb.topic()).unwrap()).unwrap();
    assert_eq!(&back[..], &original[..]);
    // Growing past 127 bytes moves to a two-byte remaining length.
    let long = vec![b'x'; 200];
    let out = publish_with_topic(pb, &long).unwrap();
    let q = s2c(Version::V5, &out);
    assert_eq!(&q.as_publish().unwrap().topic()[..], &long[..]);
    // A topic over 65,535 bytes.
    let huge = vec![b'x'; 65_536];
    assert!(matches!(
        publish_with_topic(pb, &huge),
        Err(CodecError::FrameTooLarge { .. })
    ));
}

#[test]
fn publish_user_property_replaced_or_added() {
    // v5 QoS 1 with properties (user properties trace-id and k2, content
    // type, message expiry, response topic, correlation data, format).
    let original = hex(
        "326a000b7665632f352f70726f707300014d26000874726163652d696400066162633132332600026b320002\
         76320300106170706c69636174696f6e2f6a736f6e020000007808000a7665632f352f72657370090007636f\
         72722d343201017b2274656d70223a32312e357d",
    );
    let p = c2s(Version::V5, &original);
    let pb = p.as_publish().unwrap();
    let users = |p: &Publish| -> Vec<(Vec<u8>, Vec<u8>)> {
        p.properties()
            .user_properties()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    };
    // `trace-id` replaced (moved last), the others kept in order.
    let out = publish_with_user_property(pb, pb.topic(), b"trace-id", b"xyz").unwrap();
    let q = c2s(Version::V5, &out);
    let qb = q.as_publish().unwrap();
    assert_eq!(
        users(qb),
        [
            (b"k2".to_vec(), b"v2".to_vec()),
            (b"trace-id".to_vec(), b"xyz".to_vec())
        ]
    );
    assert_eq!(qb.payload(), pb.payload());
    assert_eq!(qb.packet_id(), pb.packet_id());
    assert_eq!(qb.topic(), pb.topic());
    assert_eq!(pb.user_property(b"trace-id"), Some(&b"abc123"[..]));
    assert_eq!(qb.user_property(b"trace-id"), Some(&b"xyz"[..]));
    assert_eq!(qb.user_property(b"k2"), Some(&b"v2"[..]));
    assert_eq!(qb.user_property(b"none"), None);
    assert_eq!(
        q.get(&crate::Field::Header("trace-id".into())),
        Some(&b"xyz"[..])
    );
    let others = |p: &Publish| -> Vec<Property> {
        p.properties()
            .iter()
            .filter(|p| p.id != properties::id::USER_PROPERTY)
            .collect()
    };
    assert_eq!(others(qb), others(pb));
    // Added under a new topic (a mount point) to a QoS 0 publish without properties.
    let bare = hex("300b0003612f620068656c6c6f");
    let p = c2s(Version::V5, &bare);
    let pb = p.as_publish().unwrap();
    let out = publish_with_user_property(pb, b"t/a/b", b"traceparent", b"00-x").unwrap();
    let q = s2c(Version::V5, &out);
    let qb = q.as_publish().unwrap();
    assert_eq!(&qb.topic()[..], b"t/a/b");
    assert_eq!(users(qb), [(b"traceparent".to_vec(), b"00-x".to_vec())]);
    assert_eq!(&qb.payload()[..], b"hello");
    assert!(publish_with_user_property(pb, b"t", b"n", &vec![b'v'; 65_536]).is_err());
}

#[test]
fn subscribe_rewrite() {
    let original = hex("82220001152600077375622d6b657900097375622d76616c756500077665632f352f2302");
    let p = c2s(Version::V5, &original);
    let s = p.as_subscribe().unwrap();
    let out = subscribe_with_filters(
        s,
        s.filters()
            .iter()
            .map(|(f, o)| (topic::mount(b"t/", f), *o)),
    )
    .unwrap();
    let mut expected = vec![0x82, 0x24];
    expected.extend_from_slice(&original[2..26]);
    expected.extend_from_slice(b"\x00\x09t/vec/5/#\x02");
    assert_eq!(&out[..], &expected[..]);
    let q = c2s(Version::V5, &out);
    let t = q.as_subscribe().unwrap();
    assert_eq!(t.packet_id(), 1);
    assert_eq!(t.properties(), s.properties());
    assert_eq!(&t.filters()[0].0[..], b"t/vec/5/#");
    // Several filters, other options; none is an error.
    let out = subscribe_with_filters(s, [(&b"a"[..], 0u8), (b"b/+", 1)]).unwrap();
    let t = c2s(Version::V5, &out);
    assert_eq!(t.as_subscribe().unwrap().filters().len(), 2);
    assert!(subscribe_with_filters(s, std::iter::empty::<(&[u8], u8)>()).is_err());

    let p = c2s(Version::V311, b"\xa2\x0a\x00\x03\x00\x01a\x00\x03b/#");
    let u = p.as_unsubscribe().unwrap();
    let out =
        unsubscribe_with_filters(u, u.filters().iter().map(|f| topic::mount(b"t/", f))).unwrap();
    assert_eq!(&out[..], b"\xa2\x0e\x00\x03\x00\x03t/a\x00\x05t/b/#");
    assert!(unsubscribe_with_filters(u, std::iter::empty::<&[u8]>()).is_err());
}

#[test]
fn topic_aliases() {
    let mut aliases = TopicAliases::new(2);
    assert_eq!(aliases.maximum(), 2);
    let set = c2s(Version::V5, b"\x30\x0a\x00\x03a/b\x03\x23\x00\x02x");
    let use_ = c2s(Version::V5, b"\x30\x07\x00\x00\x03\x23\x00\x02y");
    let unknown = c2s(Version::V5, b"\x30\x07\x00\x00\x03\x23\x00\x01y");
    let over = c2s(Version::V5, b"\x30\x07\x00\x00\x03\x23\x00\x03y");
    let plain = c2s(Version::V5, b"\x30\x05\x00\x01c\x00z");
    assert!(aliases.resolve(unknown.as_publish().unwrap()).is_err());
    assert_eq!(
        &aliases.resolve(set.as_publish().unwrap()).unwrap()[..],
        b"a/b"
    );
    assert_eq!(
        &aliases.resolve(use_.as_publish().unwrap()).unwrap()[..],
        b"a/b"
    );
    assert!(aliases.resolve(over.as_publish().unwrap()).is_err());
    assert!(aliases.resolve(unknown.as_publish().unwrap()).is_err());
    assert_eq!(
        &aliases.resolve(plain.as_publish().unwrap()).unwrap()[..],
        b"c"
    );
    assert!(
        TopicAliases::default()
            .resolve(set.as_publish().unwrap())
            .is_err()
    );
}

#[test]
fn connect_rewrite() {
    for (wire, version) in [
        (hex(CONNECT_V311), Version::V311),
        (hex(CONNECT_V5), Version::V5),
        (
            b"\x10\x1d\x00\x06MQIsdp\x03\xc2\x00\x3c\x00\x03abc\x00\x04user\x00\x04pass".to_vec(),
            Version::V31,
        ),
        (
            hex(
                "105200044d515454050e003c03210014000b7665632d707562352d71321a1800000005260001770002777603000a\
                 746578742f706c61696e000a7665632f352f77696c6c000e7075626c6973686572206c6f7374",
            ),
            Version::V5,
        ),
    ] {
        let c = connect(&wire);
        // No changes: the same bytes.
        assert_eq!(
            &connect_with(&c, &ConnectEdit::default()).unwrap()[..],
            &wire[..]
        );
        // Client id and will topic under a tenant, credentials removed.
        let client_id = [b"t1:".as_slice(), c.client_id()].concat();
        let will_topic = c.will().map(|w| topic::mount(b"t1/", w.topic()));
        let edit = ConnectEdit {
            client_id: Some(&client_id),
            will_topic: will_topic.as_deref(),
            credentials: Some((None, None)),
        };
        let out = connect_with(&c, &edit).unwrap();
        let d = connect(&out);
        assert_eq!(d.version(), version);
        assert_eq!(&d.client_id()[..], &client_id[..]);
        assert_eq!(d.username(), None);
        assert_eq!(d.password(), None);
        assert_eq!(d.keep_alive(), c.keep_alive());
        assert_eq!(d.clean_start(), c.clean_start());
        assert_eq!(d.properties(), c.properties());
        assert_eq!(d.flags() & 0x3f, c.flags() & 0x3f);
        match (c.will(), d.will()) {
            (Some(a), Some(b)) => {
                assert_eq!(&b.topic()[..], &will_topic.clone().unwrap()[..]);
                assert_eq!(a.payload(), b.payload());
                assert_eq!(a.properties(), b.properties());
                assert_eq!((a.qos(), a.retain()), (b.qos(), b.retain()));
            }
            (None, None) => {}
            other => panic!("{other:?}"),
        }
        // New credentials.
        let edit = ConnectEdit {
            credentials: Some((Some(b"up-user"), Some(b"up-pass"))),
            ..ConnectEdit::default()
        };
        let d = connect(&connect_with(&c, &edit).unwrap());
        assert_eq!(d.username().map(|u| &u[..]), Some(&b"up-user"[..]));
        assert_eq!(d.password().map(|u| &u[..]), Some(&b"up-pass"[..]));
        // A password alone: MQTT 5 only.
        let edit = ConnectEdit {
            credentials: Some((None, Some(b"p"))),
            ..ConnectEdit::default()
        };
        assert_eq!(connect_with(&c, &edit).is_ok(), version == Version::V5);
    }
    let c = connect(&hex(CONNECT_V311));
    let long = vec![b'a'; 70_000];
    let edit = ConnectEdit {
        client_id: Some(&long),
        ..ConnectEdit::default()
    };
    assert!(matches!(
        connect_with(&c, &edit),
        Err(CodecError::FrameTooLarge { .. })
    ));
}
