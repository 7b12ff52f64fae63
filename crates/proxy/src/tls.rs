//! The first bytes of a TLS connection: the ClientHello's server name, and whether the
//! connection may go on. TLS is never decrypted; only the plaintext ClientHello is read.
//!
//! The shell hands every read from the client to [`TlsConnection::receive`] until it returns a
//! decision: [`TlsDecision::Forward`] (write [`TlsDecision::Forward::bytes`] — everything
//! received so far — to the original destination, then copy bytes both ways without the core)
//! or [`TlsDecision::Reset`] (reset the client's connection; nothing reached the destination).
//! If the client closes before a decision, the shell closes without forwarding anything.
//!
//! The ClientHello may arrive split anywhere: across reads, and across TLS records (the
//! handshake message is reassembled from consecutive handshake records, RFC 8446 §5.1). What is
//! not a TLS ClientHello is reset: another first byte (not TLS, or an SSLv2-compatible hello,
//! which carries no extensions and so no server name), another record type before the hello
//! ends, records or a hello over the limits, a hello whose fields do not add up, two extensions
//! of one type (so two parsers cannot pick different server names), two host names in the
//! server-name extension, or a server name that is not a DNS host name (RFC 6066 §3: no
//! addresses, no trailing dot).

use std::sync::Arc;

use thiserror::Error;

use crate::matcher::{RuleIdentity, TlsAlternative, match_client_hello};

/// TLS record types and handshake types read here.
const HANDSHAKE_RECORD: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const RECORD_HEADER_BYTES: usize = 5;
/// The largest plaintext record (RFC 8446 §5.1).
const MAXIMUM_RECORD_BYTES: usize = 1 << 14;
const SERVER_NAME_EXTENSION: u16 = 0;
const ENCRYPTED_CLIENT_HELLO_EXTENSION: u16 = 0xfe0d;
const HOST_NAME_TYPE: u8 = 0;

/// Bounds on what one connection may make the core hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The ClientHello message without its 4-byte handshake header. Hellos with post-quantum
    /// key shares are about 2 KiB; large session tickets add a few more.
    pub maximum_hello_bytes: usize,
    /// Records the hello may be spread over (clients use one, sometimes two).
    pub maximum_records: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            maximum_hello_bytes: 16 * 1024,
            maximum_records: 16,
        }
    }
}

/// What a ClientHello said that rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The host name of the server-name extension, lowercased; `None` without one.
    pub server_name: Option<String>,
    /// The hello carries `encrypted_client_hello`: its server name is the provider's public
    /// name, not the site's.
    pub encrypted_client_hello: bool,
}

/// Why a connection is reset before a ClientHello is read to the end.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TlsError {
    #[error("the connection does not start with a TLS handshake record")]
    NotTls,
    #[error("the connection starts with an SSLv2 ClientHello, which names no server")]
    SslVersion2,
    #[error("a record before the end of the ClientHello is not a handshake record")]
    UnexpectedRecord,
    #[error("a record has version {major}.{minor}, not TLS's 3.x")]
    RecordVersion { major: u8, minor: u8 },
    #[error("a record is empty or longer than {MAXIMUM_RECORD_BYTES} bytes")]
    RecordLength,
    #[error("the first handshake message is not a ClientHello")]
    NotClientHello,
    #[error("the ClientHello is longer than {limit} bytes")]
    HelloTooLarge { limit: usize },
    #[error("the ClientHello is spread over more than {limit} records")]
    TooManyRecords { limit: usize },
    #[error("the ClientHello is malformed: {detail}")]
    Malformed { detail: &'static str },
    #[error("the ClientHello has two extensions of type {extension}")]
    DuplicateExtension { extension: u16 },
    #[error("the server-name extension names more than one host")]
    DuplicateServerName,
    #[error("the server name is not a DNS host name")]
    InvalidServerName,
}

/// Why a connection was reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetReason {
    /// No alternative admits the hello; `alternatives` names every rule that was tried.
    Denied {
        hello: ClientHello,
        alternatives: Vec<RuleIdentity>,
    },
    Invalid(TlsError),
}

/// What the shell does after giving bytes to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsDecision {
    /// Not enough bytes yet.
    NeedMore,
    Forward {
        hello: ClientHello,
        allowed_by: RuleIdentity,
        /// Every byte received so far, in order, for the destination.
        bytes: Vec<u8>,
    },
    Reset(ResetReason),
}

/// Reassembles and reads the ClientHello.
#[derive(Debug, Clone)]
pub struct ClientHelloReader {
    limits: Limits,
    /// Every byte received, since it is all forwarded once the hello is admitted.
    received: Vec<u8>,
    /// Where the next record header starts in `received`.
    next_record: usize,
    records: usize,
    /// The handshake bytes of the records read so far.
    handshake: Vec<u8>,
}

/// The reader's answer for the bytes it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloProgress {
    NeedMore,
    Complete(ClientHello),
    Failed(TlsError),
}

impl ClientHelloReader {
    pub fn new(limits: Limits) -> ClientHelloReader {
        ClientHelloReader {
            limits,
            received: Vec::new(),
            next_record: 0,
            records: 0,
            handshake: Vec::new(),
        }
    }

    /// Every byte received so far.
    pub fn received(&self) -> &[u8] {
        &self.received
    }

    pub fn into_received(self) -> Vec<u8> {
        self.received
    }

    /// Takes the next bytes from the client.
    pub fn receive(&mut self, input: &[u8]) -> HelloProgress {
        // Never hold more than the largest acceptable hello in its largest framing before the
        // hello is complete; what follows a complete hello is kept for the destination.
        let room = self.buffer_limit().saturating_sub(self.received.len());
        let (now, later) = input.split_at(input.len().min(room));
        self.received.extend_from_slice(now);
        match self.progress() {
            HelloProgress::NeedMore if !later.is_empty() => HelloProgress::Failed(TlsError::HelloTooLarge {
                limit: self.limits.maximum_hello_bytes,
            }),
            HelloProgress::Complete(hello) => {
                self.received.extend_from_slice(later);
                HelloProgress::Complete(hello)
            }
            progress => progress,
        }
    }

    fn buffer_limit(&self) -> usize {
        4 + self.limits.maximum_hello_bytes + self.limits.maximum_records * RECORD_HEADER_BYTES
    }

    fn progress(&mut self) -> HelloProgress {
        if let Some(failure) = first_bytes_failure(&self.received) {
            return HelloProgress::Failed(failure);
        }
        loop {
            if let Some(result) = self.hello_in_handshake() {
                return result;
            }
            let Some(header) = self
                .received
                .get(self.next_record..self.next_record + RECORD_HEADER_BYTES)
            else {
                return HelloProgress::NeedMore;
            };
            if header[0] != HANDSHAKE_RECORD {
                return HelloProgress::Failed(TlsError::UnexpectedRecord);
            }
            if header[1] != 3 || header[2] > 4 {
                return HelloProgress::Failed(TlsError::RecordVersion {
                    major: header[1],
                    minor: header[2],
                });
            }
            let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if length == 0 || length > MAXIMUM_RECORD_BYTES {
                return HelloProgress::Failed(TlsError::RecordLength);
            }
            if self.records == self.limits.maximum_records {
                return HelloProgress::Failed(TlsError::TooManyRecords {
                    limit: self.limits.maximum_records,
                });
            }
            let start = self.next_record + RECORD_HEADER_BYTES;
            let Some(payload) = self.received.get(start..start + length) else {
                // Refuse a wrong or oversized hello on its header, not after its last byte.
                let partial = &self.received[start.min(self.received.len())..];
                let header: Vec<u8> = self.handshake.iter().chain(partial).take(4).copied().collect();
                return match self.header_failure(&header) {
                    Some(error) => HelloProgress::Failed(error),
                    None => HelloProgress::NeedMore,
                };
            };
            self.handshake.extend_from_slice(payload);
            self.records += 1;
            self.next_record = start + length;
        }
    }

    /// What is wrong with the first handshake bytes (up to 4), if anything.
    fn header_failure(&self, header: &[u8]) -> Option<TlsError> {
        if header.first().is_some_and(|kind| *kind != CLIENT_HELLO) {
            return Some(TlsError::NotClientHello);
        }
        if header.len() == 4 && hello_length(header) > self.limits.maximum_hello_bytes {
            return Some(TlsError::HelloTooLarge {
                limit: self.limits.maximum_hello_bytes,
            });
        }
        None
    }

    /// The hello, once the handshake bytes hold all of it (or show it is not one).
    fn hello_in_handshake(&self) -> Option<HelloProgress> {
        // Checked on as many header bytes as there are, as the partial-record path does, so
        // that how records are split never changes which fault is found first.
        let available = &self.handshake[..self.handshake.len().min(4)];
        if let Some(error) = self.header_failure(available) {
            return Some(HelloProgress::Failed(error));
        }
        let header = self.handshake.get(..4)?;
        let length = hello_length(header);
        let body = self.handshake.get(4..4 + length)?;
        Some(match parse_client_hello(body) {
            Ok(hello) => HelloProgress::Complete(hello),
            Err(error) => HelloProgress::Failed(error),
        })
    }
}

fn hello_length(header: &[u8]) -> usize {
    usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3])
}

/// What the first bytes show before any record is complete: TLS starts with a handshake
/// record; an SSLv2 hello with a two-byte header whose high bit is set and message type 1.
fn first_bytes_failure(received: &[u8]) -> Option<TlsError> {
    let first = *received.first()?;
    if first == HANDSHAKE_RECORD {
        return None;
    }
    if first & 0x80 != 0 && received.get(2) == Some(&CLIENT_HELLO) {
        return Some(TlsError::SslVersion2);
    }
    if first & 0x80 != 0 && received.len() < 3 {
        return None;
    }
    Some(TlsError::NotTls)
}

/// A cursor over the hello's body that fails as `Malformed` when it runs out.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize, detail: &'static str) -> Result<&'a [u8], TlsError> {
        if self.bytes.len() < count {
            return Err(TlsError::Malformed { detail });
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn byte(&mut self, detail: &'static str) -> Result<u8, TlsError> {
        Ok(self.take(1, detail)?[0])
    }

    fn u16(&mut self, detail: &'static str) -> Result<u16, TlsError> {
        let bytes = self.take(2, detail)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// A vector with a one- or two-byte length prefix.
    fn vector8(&mut self, detail: &'static str) -> Result<&'a [u8], TlsError> {
        let length = usize::from(self.byte(detail)?);
        self.take(length, detail)
    }

    fn vector16(&mut self, detail: &'static str) -> Result<&'a [u8], TlsError> {
        let length = usize::from(self.u16(detail)?);
        self.take(length, detail)
    }
}

fn parse_client_hello(body: &[u8]) -> Result<ClientHello, TlsError> {
    let mut cursor = Cursor { bytes: body };
    let version = cursor.u16("no version")?;
    if !(0x0301..=0x0303).contains(&version) {
        return Err(TlsError::Malformed {
            detail: "the legacy version is not TLS 1.0 to 1.2",
        });
    }
    cursor.take(32, "no random")?;
    if cursor.vector8("no session id")?.len() > 32 {
        return Err(TlsError::Malformed {
            detail: "the session id is longer than 32 bytes",
        });
    }
    let cipher_suites = cursor.vector16("no cipher suites")?;
    if cipher_suites.is_empty() || cipher_suites.len() % 2 != 0 {
        return Err(TlsError::Malformed {
            detail: "the cipher suite list is empty or odd",
        });
    }
    if cursor.vector8("no compression methods")?.is_empty() {
        return Err(TlsError::Malformed {
            detail: "the compression method list is empty",
        });
    }
    let mut hello = ClientHello {
        server_name: None,
        encrypted_client_hello: false,
    };
    if cursor.bytes.is_empty() {
        // A hello without extensions (TLS 1.2 and older allow it) names no server.
        return Ok(hello);
    }
    let extensions = cursor.vector16("the extension list is cut short")?;
    if !cursor.bytes.is_empty() {
        return Err(TlsError::Malformed {
            detail: "bytes follow the extension list",
        });
    }
    let mut extensions = Cursor { bytes: extensions };
    let mut seen = Vec::new();
    while !extensions.bytes.is_empty() {
        let extension = extensions.u16("an extension is cut short")?;
        let data = extensions.vector16("an extension is cut short")?;
        if seen.contains(&extension) {
            return Err(TlsError::DuplicateExtension { extension });
        }
        seen.push(extension);
        match extension {
            SERVER_NAME_EXTENSION => hello.server_name = parse_server_name(data)?,
            ENCRYPTED_CLIENT_HELLO_EXTENSION => hello.encrypted_client_hello = true,
            _ => {}
        }
    }
    Ok(hello)
}

/// The host name of a server-name extension (RFC 6066 §3). An empty extension (as a server
/// sends it back) names none.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, TlsError> {
    if data.is_empty() {
        return Ok(None);
    }
    let mut cursor = Cursor { bytes: data };
    let list = cursor.vector16("the server name list is cut short")?;
    if !cursor.bytes.is_empty() || list.is_empty() {
        return Err(TlsError::Malformed {
            detail: "the server name list does not fill its extension",
        });
    }
    let mut list = Cursor { bytes: list };
    let mut host_name = None;
    while !list.bytes.is_empty() {
        let name_type = list.byte("a server name is cut short")?;
        let name = list.vector16("a server name is cut short")?;
        if name_type != HOST_NAME_TYPE {
            continue;
        }
        if host_name.is_some() {
            return Err(TlsError::DuplicateServerName);
        }
        host_name = Some(host_name_text(name)?);
    }
    Ok(host_name)
}

fn host_name_text(name: &[u8]) -> Result<String, TlsError> {
    let valid_label = |label: &[u8]| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .iter()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
    };
    let all_labels_valid = name.split(|byte| *byte == b'.').all(valid_label);
    // An IPv4 address is all digits and dots; an IPv6 one holds `:`, which no label allows.
    let is_address = name.iter().all(|byte| byte.is_ascii_digit() || *byte == b'.');
    if name.is_empty() || name.len() > 253 || !all_labels_valid || is_address {
        return Err(TlsError::InvalidServerName);
    }
    Ok(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// One TLS connection's admission: reads the ClientHello and matches it.
#[derive(Debug, Clone)]
pub struct TlsConnection {
    alternatives: Arc<[TlsAlternative]>,
    reader: Option<ClientHelloReader>,
}

impl TlsConnection {
    pub fn new(alternatives: Arc<[TlsAlternative]>, limits: Limits) -> TlsConnection {
        TlsConnection {
            alternatives,
            reader: Some(ClientHelloReader::new(limits)),
        }
    }

    /// Takes bytes from the client. After a decision other than `NeedMore`, the connection is
    /// the shell's and every later call answers `NeedMore` without reading.
    pub fn receive(&mut self, input: &[u8]) -> TlsDecision {
        let Some(reader) = self.reader.as_mut() else {
            return TlsDecision::NeedMore;
        };
        let hello = match reader.receive(input) {
            HelloProgress::NeedMore => return TlsDecision::NeedMore,
            HelloProgress::Failed(error) => {
                self.reader = None;
                return TlsDecision::Reset(ResetReason::Invalid(error));
            }
            HelloProgress::Complete(hello) => hello,
        };
        let reader = self.reader.take().expect("the reader was just used");
        match match_client_hello(
            &self.alternatives,
            hello.server_name.as_deref(),
            hello.encrypted_client_hello,
        ) {
            Some(alternative) => TlsDecision::Forward {
                hello,
                allowed_by: alternative.rule.clone(),
                bytes: reader.into_received(),
            },
            None => TlsDecision::Reset(ResetReason::Denied {
                hello,
                alternatives: self
                    .alternatives
                    .iter()
                    .map(|alternative| alternative.rule.clone())
                    .collect(),
            }),
        }
    }

    /// Whether a decision was made.
    pub fn is_decided(&self) -> bool {
        self.reader.is_none()
    }
}
