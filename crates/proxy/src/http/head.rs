//! One request head (request line and header fields) read into the facts a rule matches and the
//! framing of its body.
//!
//! Framing follows RFC 9112 §6 with the request-smuggling defences a proxy in front of unknown
//! servers needs: a request whose body length two parsers could read differently is refused,
//! never guessed at (both `Content-Length` and `Transfer-Encoding`, two `Content-Length`s even
//! when equal, a transfer coding list not ending in exactly one `chunked`).

use thiserror::Error;

use super::path::{PathError, canonical_path};

/// The HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    /// A request stream of an HTTP/2 connection (`crate::http2`).
    Http2,
}

/// Where a request's body ends, so the next request on the connection can be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: the next request starts right after the head.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding, up to the last chunk and its trailer section.
    Chunked,
}

/// What the proxy read from one request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub version: Version,
    pub method: String,
    /// The request-target as received (origin form, absolute form or `*`).
    pub target: String,
    /// The path rules are matched against: the target's path without the query, in canonical
    /// form ([`canonical_path`]); `*` for `OPTIONS *`.
    pub path: String,
    /// The host (from an absolute-form target, else `Host`), lowercased, without port.
    /// `None` only for HTTP/1.0 requests without `Host`.
    pub host: Option<String>,
    pub body: BodyFraming,
    /// `Expect: 100-continue`: the client waits for an interim response before sending the
    /// body. Nothing changes for the proxy: an allowed head is forwarded and the server's
    /// `100 Continue` comes back through the shell; a denied one is answered at once.
    pub expects_continue: bool,
}

/// Why a request is refused before any rule is looked at, or why a connection is closed in
/// the middle of a body.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    #[error("the request head is longer than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("the request has more than {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("the request head is malformed: {detail}")]
    Malformed { detail: String },
    #[error(
        "the connection starts with the HTTP/2 preface (prior knowledge); the proxy matches HTTP/1.1 only"
    )]
    Http2PriorKnowledge,
    #[error("the method {method} is not supported through the proxy")]
    MethodNotSupported { method: String },
    #[error("the request asks for a protocol upgrade, after which the proxy could not see requests")]
    UpgradeNotSupported,
    #[error("the request target is not supported: {detail}")]
    InvalidTarget { detail: &'static str },
    #[error("the request path is refused: {0}")]
    Path(#[from] PathError),
    #[error("the HTTP/1.1 request has no Host header")]
    MissingHost,
    #[error("the request has more than one Host header")]
    MultipleHosts,
    #[error("the request's host is not a host name or address with an optional port")]
    InvalidHost,
    #[error("the absolute-form target names another host than the Host header")]
    HostMismatch,
    #[error("the request has both Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    #[error("the request has more than one Content-Length")]
    MultipleContentLengths,
    #[error("the request's Content-Length is not a decimal number of bytes")]
    InvalidContentLength,
    #[error("the request's Transfer-Encoding does not end in exactly one `chunked`")]
    TransferEncodingNotChunked,
    #[error("an HTTP/1.0 request has Transfer-Encoding")]
    TransferEncodingInHttp10,
    #[error("a chunk-size line is longer than {limit} bytes")]
    ChunkLineTooLong { limit: usize },
    #[error("a chunk-size line is malformed")]
    InvalidChunkSize,
    #[error("a chunk size does not fit in 64 bits")]
    ChunkSizeOverflow,
    #[error("chunk data is not followed by CRLF")]
    MissingChunkDataEnd,
    #[error("the chunked body's trailer section is longer than {limit} bytes")]
    TrailerTooLarge { limit: usize },
    #[error("the chunked body's trailer section is malformed")]
    InvalidTrailer,
}

impl RequestError {
    /// The status the client is answered with; `None` for errors inside a body, where the head
    /// was already forwarded and the only safe answer is closing the connection.
    pub fn status(&self) -> Option<u16> {
        match self {
            RequestError::HeadTooLarge { .. } | RequestError::TooManyHeaders { .. } => Some(431),
            RequestError::Http2PriorKnowledge => None,
            RequestError::MethodNotSupported { .. } | RequestError::UpgradeNotSupported => Some(501),
            RequestError::ChunkLineTooLong { .. }
            | RequestError::InvalidChunkSize
            | RequestError::ChunkSizeOverflow
            | RequestError::MissingChunkDataEnd
            | RequestError::TrailerTooLarge { .. }
            | RequestError::InvalidTrailer => None,
            _ => Some(400),
        }
    }
}

/// The result of reading a buffer that holds a complete head (up to its empty line).
pub(crate) enum HeadParse {
    /// Not a head yet (only empty lines before the request line).
    Partial,
    Complete {
        length: usize,
        request: Request,
    },
    Failed(RequestError),
}

pub(crate) fn parse_head(buffer: &[u8], maximum_headers: usize) -> HeadParse {
    let mut headers = vec![httparse::EMPTY_HEADER; maximum_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    let length = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return HeadParse::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return HeadParse::Failed(RequestError::TooManyHeaders {
                limit: maximum_headers,
            });
        }
        Err(error) => {
            return HeadParse::Failed(RequestError::Malformed {
                detail: error.to_string(),
            });
        }
    };
    // httparse accepts a bare LF as a line end (RFC 9112 §2.2 allows it); a server that does
    // not would read the fields differently, so the proxy refuses what it cannot be sure of.
    let head = &buffer[..length];
    let bare_line_feed = head
        .iter()
        .enumerate()
        .any(|(index, byte)| *byte == b'\n' && (index == 0 || head[index - 1] != b'\r'));
    if bare_line_feed {
        return HeadParse::Failed(RequestError::Malformed {
            detail: "a line ends in LF without CR".to_string(),
        });
    }
    match read_request(&parsed) {
        Ok(request) => HeadParse::Complete { length, request },
        Err(error) => HeadParse::Failed(error),
    }
}

fn read_request(parsed: &httparse::Request<'_, '_>) -> Result<Request, RequestError> {
    let malformed = |detail: &str| RequestError::Malformed {
        detail: detail.to_string(),
    };
    let method = parsed.method.ok_or_else(|| malformed("no method"))?;
    let target = parsed.path.ok_or_else(|| malformed("no request target"))?;
    let version = match parsed.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(malformed("unknown HTTP version")),
    };
    // httparse lets bytes above 0x7F through in the target; nothing a rule names has them.
    if !target.is_ascii() {
        return Err(RequestError::InvalidTarget {
            detail: "the target holds bytes that are not ASCII",
        });
    }
    if method == "CONNECT" {
        return Err(RequestError::MethodNotSupported {
            method: method.to_string(),
        });
    }

    let mut host_headers = Vec::new();
    let mut content_lengths = Vec::new();
    let mut transfer_encodings = Vec::new();
    let mut expects_continue = false;
    for header in parsed.headers.iter() {
        let value = trim(header.value);
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            host_headers.push(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            content_lengths.push(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encodings.push(value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            // A server that ignores the upgrade would read what follows as requests the proxy
            // has stopped checking (h2c smuggling), so no upgrade is let through.
            return Err(RequestError::UpgradeNotSupported);
        } else if name.eq_ignore_ascii_case("expect") && value.eq_ignore_ascii_case(b"100-continue") {
            expects_continue = true;
        }
    }

    let body = framing(version, &content_lengths, &transfer_encodings)?;
    let header_host = match host_headers.as_slice() {
        [] => None,
        [value] => Some(normalise_host(value)?),
        _ => return Err(RequestError::MultipleHosts),
    };
    let (path, host) = read_target(method, target, header_host)?;
    if version == Version::Http11 && host.is_none() {
        return Err(RequestError::MissingHost);
    }
    Ok(Request {
        version,
        method: method.to_string(),
        target: target.to_string(),
        path,
        host,
        body,
        expects_continue,
    })
}

/// The path and host of a request-target, given the Host header's host (`Some("")` for an
/// empty Host header).
pub(crate) fn read_target(
    method: &str,
    target: &str,
    header_host: Option<String>,
) -> Result<(String, Option<String>), RequestError> {
    if target.contains('#') {
        return Err(RequestError::InvalidTarget {
            detail: "the target holds a fragment (`#`)",
        });
    }
    if target == "*" {
        if method != "OPTIONS" {
            return Err(RequestError::InvalidTarget {
                detail: "`*` is a target for OPTIONS only",
            });
        }
        return Ok(("*".to_string(), non_empty(header_host)));
    }
    if target.starts_with('/') {
        let path = target.split('?').next().unwrap_or(target);
        return Ok((canonical_path(path)?, non_empty(header_host)));
    }
    // Absolute form: the target's authority is the host (RFC 9112 §3.2.2). Servers that read
    // Host instead exist, so the two must agree.
    let scheme_length = "http://".len();
    if target.len() < scheme_length || !target[..scheme_length].eq_ignore_ascii_case("http://") {
        return Err(RequestError::InvalidTarget {
            detail: "only origin-form (`/path`) and `http://` absolute-form targets are read",
        });
    }
    let rest = &target[scheme_length..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.contains('@') {
        return Err(RequestError::InvalidTarget {
            detail: "the target's authority holds user information",
        });
    }
    let target_host = normalise_host(authority.as_bytes())?;
    if target_host.is_empty() {
        return Err(RequestError::InvalidHost);
    }
    if header_host.as_ref().is_some_and(|host| *host != target_host) {
        return Err(RequestError::HostMismatch);
    }
    let after_authority = &rest[authority_end..];
    let path = after_authority.split('?').next().unwrap_or("");
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        canonical_path(path)?
    };
    Ok((path, Some(target_host)))
}

fn non_empty(host: Option<String>) -> Option<String> {
    host.filter(|host| !host.is_empty())
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|byte| !matches!(byte, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|byte| !matches!(byte, b' ' | b'\t'))
        .map_or(start, |last| last + 1);
    &value[start..end]
}

/// A Host value (or an authority) lowercased and without its port; empty stays empty.
pub(crate) fn normalise_host(value: &[u8]) -> Result<String, RequestError> {
    let text = std::str::from_utf8(value).map_err(|_| RequestError::InvalidHost)?;
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let close = bracketed.find(']').ok_or(RequestError::InvalidHost)?;
        let address = &bracketed[..close];
        if address.is_empty()
            || !address
                .bytes()
                .all(|byte| byte.is_ascii_hexdigit() || byte == b':' || byte == b'.')
        {
            return Err(RequestError::InvalidHost);
        }
        (&text[..close + 2], &bracketed[close + 1..])
    } else {
        match text.find(':') {
            Some(colon) => (&text[..colon], &text[colon..]),
            None => (text, ""),
        }
    };
    if !port.is_empty() {
        let digits = port.strip_prefix(':').ok_or(RequestError::InvalidHost)?;
        if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(RequestError::InvalidHost);
        }
        if host.is_empty() {
            return Err(RequestError::InvalidHost);
        }
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_'))
    {
        return Err(RequestError::InvalidHost);
    }
    Ok(host.to_ascii_lowercase())
}

fn framing(
    version: Version,
    content_lengths: &[&[u8]],
    transfer_encodings: &[&[u8]],
) -> Result<BodyFraming, RequestError> {
    if !transfer_encodings.is_empty() {
        if !content_lengths.is_empty() {
            return Err(RequestError::ContentLengthWithTransferEncoding);
        }
        if version == Version::Http10 {
            return Err(RequestError::TransferEncodingInHttp10);
        }
        let mut codings = Vec::new();
        for value in transfer_encodings {
            for coding in value.split(|byte| *byte == b',') {
                let coding = trim(coding);
                // Parameters (`;q=`) and empty list elements are refused with the rest: only
                // plain codings are read the same way everywhere.
                if coding.is_empty()
                    || !coding
                        .iter()
                        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
                {
                    return Err(RequestError::TransferEncodingNotChunked);
                }
                codings.push(coding);
            }
        }
        let chunked_count = codings
            .iter()
            .filter(|coding| coding.eq_ignore_ascii_case(b"chunked"))
            .count();
        let last_is_chunked = codings
            .last()
            .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"));
        if chunked_count != 1 || !last_is_chunked {
            return Err(RequestError::TransferEncodingNotChunked);
        }
        return Ok(BodyFraming::Chunked);
    }
    match content_lengths {
        [] => Ok(BodyFraming::Empty),
        [value] => {
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(RequestError::InvalidContentLength);
            }
            let length = std::str::from_utf8(value)
                .ok()
                .and_then(|digits| digits.parse::<u64>().ok())
                .ok_or(RequestError::InvalidContentLength)?;
            Ok(if length == 0 {
                BodyFraming::Empty
            } else {
                BodyFraming::Length(length)
            })
        }
        _ => Err(RequestError::MultipleContentLengths),
    }
}
