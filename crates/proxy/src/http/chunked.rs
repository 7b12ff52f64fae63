//! Finding the end of a chunked body (RFC 9112 §7.1) as its bytes pass through, without
//! holding them: chunk-size lines and the trailer section are read byte by byte, chunk data is
//! skipped by count.
//!
//! Strict where parsers are known to disagree (chunk-size smuggling): every line ends in CRLF,
//! chunk data must be followed by CRLF, sizes are hexadecimal digits only (no sign, no `0x`),
//! whitespace after the size only before a `;` extension.

use super::head::RequestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizePart {
    Digits,
    /// Whitespace after the digits: only `;` or CR may follow.
    Whitespace,
    Extension,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size {
        size: u64,
        seen_digit: bool,
        part: SizePart,
    },
    SizeLineFeed {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCarriageReturn,
    DataLineFeed,
    Trailer {
        line_length: usize,
        has_colon: bool,
    },
    TrailerLineFeed {
        line_length: usize,
        has_colon: bool,
    },
}

/// How far the body got with the bytes given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChunkProgress {
    /// All the bytes were body; more is to come.
    Consumed,
    /// The body ended after this many of the bytes; the rest is the next request.
    Finished(usize),
    /// The body is malformed at this byte; the ones before it were body.
    Failed(usize, RequestError),
}

#[derive(Debug, Clone)]
pub(crate) struct ChunkedBody {
    state: State,
    line_length: usize,
    trailer_bytes: usize,
    maximum_line_bytes: usize,
    maximum_trailer_bytes: usize,
}

impl ChunkedBody {
    pub(crate) fn new(maximum_line_bytes: usize, maximum_trailer_bytes: usize) -> ChunkedBody {
        ChunkedBody {
            state: State::Size {
                size: 0,
                seen_digit: false,
                part: SizePart::Digits,
            },
            line_length: 0,
            trailer_bytes: 0,
            maximum_line_bytes,
            maximum_trailer_bytes,
        }
    }

    pub(crate) fn advance(&mut self, input: &[u8]) -> ChunkProgress {
        let mut index = 0;
        while index < input.len() {
            if let State::Data { remaining } = self.state {
                let available = (input.len() - index) as u64;
                let taken = remaining.min(available);
                index += taken as usize;
                self.state = if taken == remaining {
                    State::DataCarriageReturn
                } else {
                    State::Data {
                        remaining: remaining - taken,
                    }
                };
                continue;
            }
            match self.step(input[index]) {
                Ok(true) => return ChunkProgress::Finished(index + 1),
                Ok(false) => index += 1,
                Err(error) => return ChunkProgress::Failed(index, error),
            }
        }
        ChunkProgress::Consumed
    }

    /// One byte outside chunk data; `Ok(true)` when it ended the body.
    fn step(&mut self, byte: u8) -> Result<bool, RequestError> {
        match self.state {
            State::Size {
                size,
                seen_digit,
                part,
            } => {
                self.line_length += 1;
                if self.line_length > self.maximum_line_bytes {
                    return Err(RequestError::ChunkLineTooLong {
                        limit: self.maximum_line_bytes,
                    });
                }
                let hex = match byte {
                    b'0'..=b'9' => Some(byte - b'0'),
                    b'a'..=b'f' => Some(byte - b'a' + 10),
                    b'A'..=b'F' => Some(byte - b'A' + 10),
                    _ => None,
                };
                self.state = match (part, hex, byte) {
                    (SizePart::Digits, Some(digit), _) => {
                        if size > u64::MAX >> 4 {
                            return Err(RequestError::ChunkSizeOverflow);
                        }
                        State::Size {
                            size: size << 4 | u64::from(digit),
                            seen_digit: true,
                            part,
                        }
                    }
                    (_, _, _) if !seen_digit => return Err(RequestError::InvalidChunkSize),
                    (SizePart::Digits | SizePart::Whitespace, _, b' ' | b'\t') => State::Size {
                        size,
                        seen_digit,
                        part: SizePart::Whitespace,
                    },
                    (SizePart::Digits | SizePart::Whitespace, _, b';') => State::Size {
                        size,
                        seen_digit,
                        part: SizePart::Extension,
                    },
                    (_, _, b'\r') => State::SizeLineFeed { size },
                    (SizePart::Extension, _, b'\t' | b' '..=b'~') => State::Size {
                        size,
                        seen_digit,
                        part,
                    },
                    _ => return Err(RequestError::InvalidChunkSize),
                };
            }
            State::SizeLineFeed { size } => {
                if byte != b'\n' {
                    return Err(RequestError::InvalidChunkSize);
                }
                self.line_length = 0;
                self.state = if size == 0 {
                    State::Trailer {
                        line_length: 0,
                        has_colon: false,
                    }
                } else {
                    State::Data { remaining: size }
                };
            }
            State::Data { .. } => unreachable!("chunk data is skipped by count in advance"),
            State::DataCarriageReturn => {
                if byte != b'\r' {
                    return Err(RequestError::MissingChunkDataEnd);
                }
                self.state = State::DataLineFeed;
            }
            State::DataLineFeed => {
                if byte != b'\n' {
                    return Err(RequestError::MissingChunkDataEnd);
                }
                self.state = State::Size {
                    size: 0,
                    seen_digit: false,
                    part: SizePart::Digits,
                };
            }
            State::Trailer {
                line_length,
                has_colon,
            } => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > self.maximum_trailer_bytes {
                    return Err(RequestError::TrailerTooLarge {
                        limit: self.maximum_trailer_bytes,
                    });
                }
                self.state = match byte {
                    b'\r' => State::TrailerLineFeed {
                        line_length,
                        has_colon,
                    },
                    // A line starting with whitespace is an obsolete fold; bare LF and other
                    // controls are not field content.
                    b' ' | b'\t' if line_length == 0 => return Err(RequestError::InvalidTrailer),
                    b'\t' | b' '..=b'~' | 0x80..=0xff => State::Trailer {
                        line_length: line_length + 1,
                        has_colon: has_colon || byte == b':',
                    },
                    _ => return Err(RequestError::InvalidTrailer),
                };
            }
            State::TrailerLineFeed {
                line_length,
                has_colon,
            } => {
                if byte != b'\n' {
                    return Err(RequestError::InvalidTrailer);
                }
                if line_length == 0 {
                    return Ok(true);
                }
                if !has_colon {
                    return Err(RequestError::InvalidTrailer);
                }
                self.state = State::Trailer {
                    line_length: 0,
                    has_colon: false,
                };
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The progress, with the position of a failure left out.
    fn run(body: &[u8]) -> ChunkProgress {
        match ChunkedBody::new(64, 64).advance(body) {
            ChunkProgress::Failed(_, error) => ChunkProgress::Failed(0, error),
            progress => progress,
        }
    }

    #[test]
    fn ends_of_chunked_bodies() {
        let cases: &[(&[u8], ChunkProgress)] = &[
            (b"0\r\n\r\n", ChunkProgress::Finished(5)),
            (b"0\r\n\r\nGET", ChunkProgress::Finished(5)),
            (b"5\r\nhello\r\n0\r\n\r\n", ChunkProgress::Finished(15)),
            (b"A\r\n0123456789\r\n0\r\n\r\n", ChunkProgress::Finished(20)),
            (b"5;name=value\r\nhello\r\n0\r\n\r\n", ChunkProgress::Finished(26)),
            (b"5 ;x\r\nhello\r\n0\r\n\r\n", ChunkProgress::Finished(18)),
            (b"0\r\nChecksum: x\r\n\r\n", ChunkProgress::Finished(18)),
            (b"5\r\nhel", ChunkProgress::Consumed),
            (b"5\r\nhello\r\n0\r\nX: y\r\n", ChunkProgress::Consumed),
            (b"\r\n", ChunkProgress::Failed(0, RequestError::InvalidChunkSize)),
            (b"x\r\n", ChunkProgress::Failed(0, RequestError::InvalidChunkSize)),
            (
                b"0x5\r\n",
                ChunkProgress::Failed(0, RequestError::InvalidChunkSize),
            ),
            (
                b"-5\r\n",
                ChunkProgress::Failed(0, RequestError::InvalidChunkSize),
            ),
            (
                b"5 5\r\n",
                ChunkProgress::Failed(0, RequestError::InvalidChunkSize),
            ),
            (b"5\n", ChunkProgress::Failed(0, RequestError::InvalidChunkSize)),
            (b"5\rx", ChunkProgress::Failed(0, RequestError::InvalidChunkSize)),
            (
                b"5\r\nhelloX",
                ChunkProgress::Failed(0, RequestError::MissingChunkDataEnd),
            ),
            (
                b"5\r\nhello\n",
                ChunkProgress::Failed(0, RequestError::MissingChunkDataEnd),
            ),
            (
                b"10000000000000000\r\n",
                ChunkProgress::Failed(0, RequestError::ChunkSizeOverflow),
            ),
            (
                b"0\r\n folded: x\r\n\r\n",
                ChunkProgress::Failed(0, RequestError::InvalidTrailer),
            ),
            (
                b"0\r\nno colon\r\n\r\n",
                ChunkProgress::Failed(0, RequestError::InvalidTrailer),
            ),
            (
                b"0\r\nX: y\n\r\n",
                ChunkProgress::Failed(0, RequestError::InvalidTrailer),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(&run(body), expected, "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_failure_says_where_the_body_went_wrong() {
        assert_eq!(
            ChunkedBody::new(64, 64).advance(b"5\r\nhelloX"),
            ChunkProgress::Failed(8, RequestError::MissingChunkDataEnd)
        );
    }

    #[test]
    fn leading_zeros_do_not_overflow() {
        assert_eq!(
            run(b"00000000000000000000005\r\nhello\r\n0\r\n\r\n"),
            ChunkProgress::Finished(37)
        );
    }

    #[test]
    fn limits() {
        let long_extension = [b"1;".as_slice(), &[b'x'; 70], b"\r\n"].concat();
        assert_eq!(
            run(&long_extension),
            ChunkProgress::Failed(0, RequestError::ChunkLineTooLong { limit: 64 })
        );
        let long_trailer = [b"0\r\nX: ".as_slice(), &[b'y'; 70], b"\r\n\r\n"].concat();
        assert_eq!(
            run(&long_trailer),
            ChunkProgress::Failed(0, RequestError::TrailerTooLarge { limit: 64 })
        );
    }
}
