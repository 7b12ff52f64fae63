//! The proxy's own answers: short, plain text, naming the rules, closing the connection.

use super::RefusalReason;
use super::head::RequestError;
use crate::matcher::RuleIdentity;

/// Rules named in a denial before the rest are counted (the body stays short).
const NAMED_RULES: usize = 4;
/// Characters of the path quoted in a denial.
const QUOTED_PATH: usize = 200;
/// HTTP/2's error code asking the client to use HTTP/1.1 (RFC 9113 §7).
const HTTP_1_1_REQUIRED: u32 = 0xd;

pub(crate) fn for_refusal(reason: &RefusalReason) -> Vec<u8> {
    match reason {
        RefusalReason::Denied {
            request,
            alternatives,
        } => {
            let body = denial_text(request, alternatives);
            let mut response = http_response(403, "Forbidden", &body);
            // An answer to HEAD has no body (RFC 9110 §9.3.2), only the length it would have.
            if request.method == "HEAD" {
                response.truncate(response.len() - body.len());
            }
            response
        }
        RefusalReason::Invalid(RequestError::Http2PriorKnowledge) => http2_goaway(),
        RefusalReason::Invalid(error) => {
            let status = error.status().unwrap_or(400);
            let body = format!("Refused by Sluice: {error}.\n");
            http_response(status, reason_phrase(status), &body)
        }
    }
}

/// The status and the one-line body of a refusal, for an HTTP/2 answer (`crate::http2`).
pub(crate) fn status_and_body(reason: &RefusalReason) -> (u16, String) {
    match reason {
        RefusalReason::Denied {
            request,
            alternatives,
        } => (403, denial_text(request, alternatives)),
        RefusalReason::Invalid(error) => {
            let status = error.status().unwrap_or(400);
            (status, format!("Refused by Sluice: {error}.\n"))
        }
    }
}

fn denial_text(request: &super::Request, alternatives: &[RuleIdentity]) -> String {
    let mut path: String = request.path.chars().take(QUOTED_PATH).collect();
    if path.len() < request.path.len() {
        path.push_str("...");
    }
    let host = request.host.as_deref().unwrap_or("(no host)");
    format!(
        "Denied by Sluice: {} {path} to {host} is not allowed by {}.\n",
        request.method,
        rules_text(alternatives)
    )
}

fn rules_text(alternatives: &[RuleIdentity]) -> String {
    match alternatives {
        [] => "any rule".to_string(),
        [only] => format!("the HTTP match of {only}"),
        _ => {
            let named: Vec<String> = alternatives
                .iter()
                .take(NAMED_RULES)
                .map(ToString::to_string)
                .collect();
            let mut text = format!("the HTTP matches of {}", named.join(", "));
            if alternatives.len() > NAMED_RULES {
                text.push_str(&format!(" and {} more", alternatives.len() - NAMED_RULES));
            }
            text
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        403 => "Forbidden",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "Bad Request",
    }
}

fn http_response(status: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An empty SETTINGS frame (the server's preface) and a GOAWAY that processed no stream.
fn http2_goaway() -> Vec<u8> {
    let mut frames = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    let debug = b"Sluice's HTTP rules need HTTP/1.1";
    let length = (8 + debug.len()) as u32;
    frames.extend_from_slice(&length.to_be_bytes()[1..]);
    frames.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    frames.extend_from_slice(&0u32.to_be_bytes());
    frames.extend_from_slice(&HTTP_1_1_REQUIRED.to_be_bytes());
    frames.extend_from_slice(debug);
    frames
}
