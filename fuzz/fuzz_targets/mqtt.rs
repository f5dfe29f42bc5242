//! Fuzz the MQTT codec: a client-side decoder (CONNECT first) and
//! server-side decoders told MQTT 5, 3.1.1 and 3.1 must never panic on the
//! input; decoded packets' wire bytes concatenate to a prefix of the input;
//! decoding in small reads gives the same packets as at once; every view and
//! metadata field is reachable; CONNECT/PUBLISH/SUBSCRIBE/UNSUBSCRIBE
//! re-encoded for a mount point decode to the new client id / topic / filters
//! with everything else kept.
//!
//! The whole input is the stream (so the seeds are the captured vectors as
//! they are); the read size is derived from the input's bytes.
//! Seeds: `fuzz/seeds/mqtt/` (client and server streams of the captured vectors).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use switchyard_codecs::mqtt::{self, Body, Decoder, Limits, Packet, Version};
use switchyard_codecs::{CodecError, Decoder as _, Field, Metadata};

/// Decode `input` in reads of `chunk` bytes, until an error or the end:
/// the packets, and whether it ended without error.
fn run(mut dec: Decoder, input: &[u8], chunk: usize) -> (Vec<Packet>, bool) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    (out, true)
}

/// Decode one packet that must decode completely.
fn one(version: Version, bytes: &[u8]) -> Packet {
    let mut dec = Decoder::with_version(Limits::default(), version);
    let mut buf = BytesMut::from(bytes);
    let p = dec
        .decode(&mut buf)
        .expect("a re-encoded packet decodes")
        .expect("a re-encoded packet is complete");
    assert!(buf.is_empty(), "bytes left after a re-encoded packet");
    p
}

/// A re-encoded packet, or `None` if a field grew over 65,535 bytes.
fn reencoded(result: Result<Bytes, CodecError>) -> Option<Bytes> {
    match result {
        Ok(b) => Some(b),
        Err(CodecError::FrameTooLarge { .. }) => None,
        Err(e) => panic!("re-encoding failed: {e}"),
    }
}

fn check(packets: &[Packet], input: &[u8]) {
    let wire: Vec<u8> = packets.iter().flat_map(|p| p.wire().to_vec()).collect();
    assert!(input.starts_with(&wire), "wire bytes are not the input");
    for p in packets {
        let _ = p.get(&Field::Topic);
        let _ = p.get(&Field::ClientId);
        let _ = p.get(&Field::User);
        let _ = p.packet_id();
        let _ = p.flags();
        let version = p.version();
        match p.body() {
            Body::Connect(c) => {
                let _ = c.properties().iter().count();
                if let Some(w) = c.will() {
                    assert!(mqtt::topic::valid_topic_name(w.topic()));
                    let _ = w.properties().iter().count();
                }
                let will = c.will().map(|w| mqtt::topic::mount(b"t/", w.topic()));
                let edit = mqtt::ConnectEdit {
                    client_id: Some(b"t:c"),
                    will_topic: will.as_deref(),
                    credentials: None,
                };
                let Some(out) = reencoded(mqtt::connect_with(c, &edit)) else {
                    continue;
                };
                let mut buf = BytesMut::from(&out[..]);
                let q = Decoder::default()
                    .decode(&mut buf)
                    .expect("a re-encoded CONNECT decodes")
                    .expect("a re-encoded CONNECT is complete");
                assert!(buf.is_empty());
                let qc = q.as_connect().expect("still a CONNECT");
                assert_eq!(&qc.client_id()[..], b"t:c");
                assert_eq!(qc.will().map(|w| w.topic().to_vec()), will);
                assert_eq!(
                    qc.will().map(|w| w.payload()),
                    c.will().map(|w| w.payload())
                );
                assert_eq!(qc.properties(), c.properties());
                assert_eq!((qc.username(), qc.password()), (c.username(), c.password()));
            }
            Body::Publish(publish) => {
                let props = publish.properties();
                assert_eq!(props.iter().count() == 0, props.is_empty());
                let mounted = mqtt::topic::mount(b"tenant/", publish.topic());
                let Some(out) = reencoded(mqtt::publish_with_topic(publish, &mounted)) else {
                    continue;
                };
                let q = one(version, &out);
                let qp = q.as_publish().expect("still a PUBLISH");
                assert_eq!(&qp.topic()[..], &mounted[..]);
                assert_eq!(qp.payload(), publish.payload());
                assert_eq!(qp.properties(), props);
                assert_eq!(qp.packet_id(), publish.packet_id());
                assert_eq!(q.flags(), p.flags());
            }
            Body::Subscribe(sub) => {
                let mounted = sub
                    .filters()
                    .iter()
                    .map(|(f, o)| (mqtt::topic::mount(b"t/", f), *o));
                let Some(out) = reencoded(mqtt::subscribe_with_filters(sub, mounted)) else {
                    continue;
                };
                let q = one(version, &out);
                let qs = q.as_subscribe().expect("still a SUBSCRIBE");
                assert_eq!(qs.filters().len(), sub.filters().len());
                assert_eq!(qs.properties(), sub.properties());
                for (f, _) in sub.filters() {
                    let _ = mqtt::topic::valid_filter(f);
                    let _ = mqtt::topic::matches(f, b"a/b/c");
                }
            }
            Body::Unsubscribe(unsub) => {
                let out = mqtt::unsubscribe_with_filters(unsub, unsub.filters())
                    .expect("the same filters re-encode");
                let q = one(version, &out);
                let qu = q.as_unsubscribe().expect("still an UNSUBSCRIBE");
                assert_eq!(qu.filters(), unsub.filters());
                assert_eq!(qu.properties(), unsub.properties());
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let chunk = usize::from(data.iter().fold(0u8, |a, &b| a.wrapping_add(b)) % 16) + 1;
    let small = Limits { max_packet: 64 };
    let decoders = [
        Decoder::new(Limits::default()),
        Decoder::new(small),
        Decoder::with_version(Limits::default(), Version::V5),
        Decoder::with_version(small, Version::V5),
        Decoder::with_version(Limits::default(), Version::V311),
        Decoder::with_version(Limits::default(), Version::V31),
    ];
    for dec in decoders {
        let (whole, ok) = run(dec.clone(), data, data.len());
        check(&whole, data);
        let (pieces, ok_pieces) = run(dec, data, chunk);
        assert_eq!(ok, ok_pieces, "errors differ in reads of {chunk}");
        assert_eq!(whole, pieces, "packets differ in reads of {chunk}");
    }
    let _ = mqtt::sniff(data);
});
