//! The fuzz input as a byte stream and the reads it arrives in, shared by the proxy's targets:
//! the first byte says how many of the next bytes are read lengths (cycled), the rest is the
//! stream.

pub fn pieces(data: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let Some((&count, rest)) = data.split_first() else {
        return (data, vec![]);
    };
    let count = usize::from(count % 8).min(rest.len());
    let (lengths, stream) = rest.split_at(count);
    let mut pieces = Vec::new();
    let mut remaining = stream;
    let mut turn = 0;
    while !remaining.is_empty() {
        let length = if lengths.is_empty() {
            remaining.len()
        } else {
            usize::from(lengths[turn % lengths.len()]) + 1
        };
        let (piece, rest) = remaining.split_at(length.min(remaining.len()));
        pieces.push(piece);
        remaining = rest;
        turn += 1;
    }
    (stream, pieces)
}
