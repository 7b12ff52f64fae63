//! The ClientHello reader and TLS admission over byte streams.

mod support;

use sluice_proxy::tls::{
    ClientHello, ClientHelloReader, HelloProgress, Limits, ResetReason, TlsDecision, TlsError,
};
use support::{
    client_hello_body, handshake, records, run_tls, server_name_extension, simple_hello,
    supported_versions_extension, tls_rules,
};

const CURL_HELLO: &[u8] = include_bytes!("data/hello-curl.bin");
const OPENSSL_HELLO: &[u8] = include_bytes!("data/hello-openssl.bin");

fn read(stream: &[u8]) -> HelloProgress {
    ClientHelloReader::new(Limits::default()).receive(stream)
}

fn named(name: &str) -> HelloProgress {
    HelloProgress::Complete(ClientHello {
        server_name: Some(name.to_string()),
        encrypted_client_hello: false,
    })
}

#[test]
fn real_client_hellos_name_their_server() {
    assert_eq!(read(CURL_HELLO), named("api.example.com"));
    assert_eq!(read(OPENSSL_HELLO), named("api.example.com"));
}

#[test]
fn a_hello_split_at_every_byte_and_across_records_reads_the_same() {
    let message = handshake(&client_hello_body(&[
        supported_versions_extension(),
        server_name_extension(&["API.Example.com"]),
    ]));
    for record_size in [1, 2, 7, 40, 1 << 14] {
        let stream = records(&message, record_size.max(message.len() / 16 + 1));
        for split in 0..=stream.len() {
            let mut reader = ClientHelloReader::new(Limits::default());
            let first = reader.receive(&stream[..split]);
            let progress = if split == stream.len() {
                first
            } else {
                assert_eq!(first, HelloProgress::NeedMore, "split {split}");
                reader.receive(&stream[split..])
            };
            assert_eq!(
                progress,
                named("api.example.com"),
                "record size {record_size}, split {split}"
            );
        }
        let mut reader = ClientHelloReader::new(Limits::default());
        let mut last = HelloProgress::NeedMore;
        for byte in &stream {
            assert_eq!(last, HelloProgress::NeedMore);
            last = reader.receive(std::slice::from_ref(byte));
        }
        assert_eq!(last, named("api.example.com"));
    }
    // The captured hello, in 1-byte records (its handshake message is under 16 × 40 bytes).
    let captured = &CURL_HELLO[5..];
    let stream = records(captured, 40);
    assert_eq!(read(&stream), named("api.example.com"));
}

#[test]
fn admission_forwards_every_byte_or_resets() {
    let rules = tls_rules(&["api.example.com", "*.partner.example"]);
    let mut stream = simple_hello("api.example.com");
    // A client may send more after its hello (a ChangeCipherSpec, early data).
    stream.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
    for splits in [vec![], vec![10], vec![stream.len() - 3]] {
        let (decision, forwarded) = run_tls(rules.clone(), Limits::default(), &stream, &splits);
        let TlsDecision::Forward { allowed_by, .. } = decision else {
            panic!("{decision:?}");
        };
        assert_eq!(allowed_by, support::rule("default.cdn", 2));
        assert_eq!(forwarded, stream);
    }
    let (decision, _) = run_tls(
        rules.clone(),
        Limits::default(),
        &simple_hello("www.a.partner.example"),
        &[],
    );
    assert!(matches!(decision, TlsDecision::Forward { .. }));
    let (decision, forwarded) = run_tls(
        rules.clone(),
        Limits::default(),
        &simple_hello("other.example.com"),
        &[],
    );
    assert_eq!(
        decision,
        TlsDecision::Reset(ResetReason::Denied {
            hello: ClientHello {
                server_name: Some("other.example.com".to_string()),
                encrypted_client_hello: false,
            },
            alternatives: vec![support::rule("default.cdn", 2)],
        })
    );
    assert!(forwarded.is_empty());
}

#[test]
fn no_server_name() {
    let without_extensions = {
        let mut body = client_hello_body(&[]);
        body.truncate(body.len() - 2);
        records(&handshake(&body), 1 << 14)
    };
    let no_name = records(
        &handshake(&client_hello_body(&[supported_versions_extension()])),
        1 << 14,
    );
    let nameless = HelloProgress::Complete(ClientHello {
        server_name: None,
        encrypted_client_hello: false,
    });
    for stream in [&without_extensions, &no_name] {
        assert_eq!(read(stream), nameless);
        // Named rules reset a hello without a name; a rule without names admits it.
        let (decision, _) = run_tls(tls_rules(&["api.example.com"]), Limits::default(), stream, &[]);
        assert!(matches!(decision, TlsDecision::Reset(ResetReason::Denied { .. })));
        let (decision, _) = run_tls(tls_rules(&[]), Limits::default(), stream, &[]);
        assert!(matches!(decision, TlsDecision::Forward { .. }));
    }
}

#[test]
fn encrypted_client_hello_is_marked_and_not_admitted_by_name() {
    let stream = records(
        &handshake(&client_hello_body(&[
            server_name_extension(&["public.cdn.example"]),
            (0xfe0d, vec![0, 1, 2, 3]),
        ])),
        1 << 14,
    );
    assert_eq!(
        read(&stream),
        HelloProgress::Complete(ClientHello {
            server_name: Some("public.cdn.example".to_string()),
            encrypted_client_hello: true,
        })
    );
    let (decision, _) = run_tls(tls_rules(&["*.cdn.example"]), Limits::default(), &stream, &[]);
    assert!(matches!(decision, TlsDecision::Reset(ResetReason::Denied { .. })));
}

#[test]
fn garbage_and_other_protocols_are_reset() {
    let hello = simple_hello("api.example.com");
    let mut wrong_message = hello.clone();
    wrong_message[5] = 2;
    let mut old_record = hello.clone();
    old_record[1] = 2;
    let mut empty_record = vec![22, 3, 1, 0, 0];
    empty_record.extend_from_slice(&hello);
    let mut alert_between = records(&hello[5..40], 1 << 14);
    alert_between.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
    let mut ssl3_hello = hello.clone();
    ssl3_hello[9..11].copy_from_slice(&[3, 0]);
    let malformed = |detail| TlsError::Malformed { detail };
    let cases: Vec<(Vec<u8>, TlsError)> = vec![
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), TlsError::NotTls),
        (vec![0], TlsError::NotTls),
        (b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(), TlsError::NotTls),
        // An SSLv2-compatible hello: two-byte length with the high bit, message type 1.
        (
            vec![0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15],
            TlsError::SslVersion2,
        ),
        (vec![0x80, 0x2e, 0x04], TlsError::NotTls),
        (wrong_message, TlsError::NotClientHello),
        (old_record, TlsError::RecordVersion { major: 2, minor: 1 }),
        (empty_record, TlsError::RecordLength),
        (vec![22, 3, 1, 0x40, 0x01], TlsError::RecordLength),
        (alert_between, TlsError::UnexpectedRecord),
        (ssl3_hello, malformed("the legacy version is not TLS 1.0 to 1.2")),
        (
            records(
                &handshake(&client_hello_body(&[(5, vec![]), (5, vec![])])),
                1 << 14,
            ),
            TlsError::DuplicateExtension { extension: 5 },
        ),
        (
            records(
                &handshake(&client_hello_body(&[
                    server_name_extension(&["a.example"]),
                    server_name_extension(&["b.example"]),
                ])),
                1 << 14,
            ),
            TlsError::DuplicateExtension { extension: 0 },
        ),
        (
            records(
                &handshake(&client_hello_body(&[server_name_extension(&[
                    "a.example",
                    "b.example",
                ])])),
                1 << 14,
            ),
            TlsError::DuplicateServerName,
        ),
        (simple_hello("192.0.2.1"), TlsError::InvalidServerName),
        (simple_hello("api.example.com."), TlsError::InvalidServerName),
        (simple_hello("bad name.example"), TlsError::InvalidServerName),
        (simple_hello(""), TlsError::InvalidServerName),
        (
            records(
                &handshake(&client_hello_body(&[(0, vec![0, 9, 0, 0, 5, b'a'])])),
                1 << 14,
            ),
            malformed("the server name list is cut short"),
        ),
        (
            {
                let mut body = client_hello_body(&[supported_versions_extension()]);
                body.push(0);
                records(&handshake(&body), 1 << 14)
            },
            malformed("bytes follow the extension list"),
        ),
        (
            {
                let mut message = handshake(&client_hello_body(&[]));
                message.truncate(40);
                let length = (message.len() - 4) as u32;
                message[1..4].copy_from_slice(&length.to_be_bytes()[1..]);
                records(&message, 1 << 14)
            },
            malformed("no session id"),
        ),
    ];
    for (stream, expected) in cases {
        assert_eq!(
            read(&stream),
            HelloProgress::Failed(expected.clone()),
            "{stream:x?}"
        );
        let (decision, forwarded) = run_tls(tls_rules(&[]), Limits::default(), &stream, &[]);
        assert_eq!(decision, TlsDecision::Reset(ResetReason::Invalid(expected)));
        assert!(forwarded.is_empty());
    }
}

#[test]
fn truncated_hellos_wait_and_oversized_ones_are_reset() {
    let hello = simple_hello("api.example.com");
    for length in 0..hello.len() {
        assert_eq!(read(&hello[..length]), HelloProgress::NeedMore, "{length}");
    }
    let limits = Limits {
        maximum_hello_bytes: 512,
        maximum_records: 4,
    };
    let padding = (21, vec![0; 600]);
    let big = records(
        &handshake(&client_hello_body(&[
            server_name_extension(&["a.example"]),
            padding,
        ])),
        1 << 14,
    );
    let mut reader = ClientHelloReader::new(limits);
    assert_eq!(
        reader.receive(&big[..9]),
        HelloProgress::Failed(TlsError::HelloTooLarge { limit: 512 })
    );
    let message = handshake(&client_hello_body(&[server_name_extension(&["a.example"])]));
    let spread = records(&message, message.len() / 5 + 1);
    assert_eq!(
        ClientHelloReader::new(limits).receive(&spread),
        HelloProgress::Failed(TlsError::TooManyRecords { limit: 4 })
    );
    // A stream that keeps sending handshake bytes without a hello header's worth of sense is
    // cut off at the buffer bound rather than held.
    let endless: Vec<u8> = [22, 3, 1, 0xff, 0xff]
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    assert!(matches!(
        ClientHelloReader::new(limits).receive(&endless),
        HelloProgress::Failed(_)
    ));
}

#[test]
fn the_first_fault_found_does_not_depend_on_how_records_arrive() {
    // Two one-byte handshake records holding no ClientHello type, then a record of another
    // type: the wrong message type is the first fault, whole or a byte at a time (found by the
    // fuzz target).
    let mut stream = vec![22, 3, 2, 0, 1, 0, 22, 3, 2, 0, 1, 0];
    stream.extend_from_slice(&[1, 0xfc, 0x35, 0x2e, 0x63]);
    let every_byte: Vec<usize> = (1..stream.len()).collect();
    for splits in [vec![], every_byte] {
        let (decision, _) = run_tls(tls_rules(&[]), Limits::default(), &stream, &splits);
        assert_eq!(
            decision,
            TlsDecision::Reset(ResetReason::Invalid(TlsError::NotClientHello))
        );
    }
}
