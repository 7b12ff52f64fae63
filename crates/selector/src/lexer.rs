//! Tokenizer for the selector language.
//!
//! The token rules follow Calico's `libcalico-go/lib/selector/tokenizer/tokenizer.go`:
//!
//! * whitespace is only ASCII space and tab (a newline is *not* whitespace);
//! * a label name is a run of `[A-Za-z0-9_./-]` of at most [`MAX_LABEL_LEN`] bytes;
//! * string literals are delimited by `"` or `'` and have no escapes;
//! * the word operators (`contains`, `starts with`, `ends with`, `not in`, `in`)
//!   are only recognised directly after a label name, so `in` or `contains`
//!   are ordinary label names anywhere else;
//! * `has(`, `all(` and `global(` are recognised only when written without a
//!   space before the `(`.
//!
//! Unlike Calico, which tokenizes the whole input up front, this lexer is
//! pulled one token at a time by the parser. The token stream is the same
//! (the only context is "was the previous token a label?"), so the set of
//! accepted inputs is the same; only the reported error can differ, and ours
//! is reported at the first failing character.
//!
//! Characters that cannot start a token are returned as [`Tok::Invalid`]
//! instead of an error so the parser can say what it expected there.

/// Longest accepted label name, in bytes (label names are ASCII).
pub(crate) const MAX_LABEL_LEN: usize = 512;

/// Whether `c` may appear in a label name.
pub(crate) fn is_label_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-')
}

/// Whether `key` is a complete, valid label name.
pub(crate) fn is_valid_label(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_LABEL_LEN && key.bytes().all(is_label_byte)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    Label(&'a str),
    Str(&'a str),
    Has(&'a str),
    All,
    Global,
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    And,
    Or,
    Not,
    Eof,
    /// A character that cannot start a token at this point.
    Invalid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub(crate) tok: Tok<'a>,
    /// Byte offset of the token's first character.
    pub(crate) start: usize,
}

/// A lexical error that no parser context can explain better.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LexError {
    pub(crate) byte_pos: usize,
    pub(crate) message: String,
}

#[derive(Debug)]
pub(crate) struct Lexer<'a> {
    input: &'a str,
    pos: usize,
    after_label: bool,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(input: &'a str) -> Self {
        Lexer {
            input,
            pos: 0,
            after_label: false,
        }
    }

    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    fn skip_whitespace(&mut self) {
        let skipped = self
            .rest()
            .bytes()
            .take_while(|&b| b == b' ' || b == b'\t')
            .count();
        self.pos += skipped;
    }

    fn error(&self, byte_pos: usize, message: impl Into<String>) -> LexError {
        LexError {
            byte_pos,
            message: message.into(),
        }
    }

    pub(crate) fn next_token(&mut self) -> Result<Token<'a>, LexError> {
        self.skip_whitespace();
        let start = self.pos;
        let after_label = std::mem::replace(&mut self.after_label, false);
        let tok = self.lex_one(after_label)?;
        if matches!(tok, Tok::Label(_)) {
            self.after_label = true;
        }
        Ok(Token { tok, start })
    }

    fn lex_one(&mut self, after_label: bool) -> Result<Tok<'a>, LexError> {
        let rest = self.rest();
        let Some(&first) = rest.as_bytes().first() else {
            return Ok(Tok::Eof);
        };
        let two = rest.get(..2).unwrap_or("");
        let (tok, len) = match first {
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'{' => (Tok::LBrace, 1),
            b'}' => (Tok::RBrace, 1),
            b',' => (Tok::Comma, 1),
            b'"' | b'\'' => return self.lex_string(first),
            b'=' if two == "==" => (Tok::Eq, 2),
            b'!' if two == "!=" => (Tok::Ne, 2),
            b'!' => (Tok::Not, 1),
            b'&' if two == "&&" => (Tok::And, 2),
            b'|' if two == "||" => (Tok::Or, 2),
            // A lone `=`, `&` or `|`: let the parser say what it wanted.
            b'=' | b'&' | b'|' => return Ok(Tok::Invalid),
            _ if after_label => return Ok(self.lex_operator()),
            _ => return self.lex_word(),
        };
        self.pos += len;
        Ok(tok)
    }

    fn lex_string(&mut self, quote: u8) -> Result<Tok<'a>, LexError> {
        let open = self.pos;
        let body = &self.input[open + 1..];
        match body.bytes().position(|b| b == quote) {
            Some(len) => {
                self.pos = open + 1 + len + 1;
                Ok(Tok::Str(&body[..len]))
            }
            None => Err(self.error(
                open,
                format!("unterminated string: no closing `{}`", quote as char),
            )),
        }
    }

    /// Consumes `word` if the input continues with it, and returns whether it did.
    fn eat(&mut self, word: &str) -> bool {
        if self.rest().starts_with(word) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    /// Whether the remaining input starts at a word boundary (end of input or
    /// a character that cannot continue a label name).
    fn at_word_boundary(&self) -> bool {
        self.rest().bytes().next().is_none_or(|b| !is_label_byte(b))
    }

    /// Tries to consume `words`, allowing any (or no) whitespace between
    /// them, followed by a word boundary. As in Calico, the boundary is only
    /// checked after the last word, so `startswith` and `notin` are accepted
    /// too.
    ///
    /// Calico checks the boundary after also skipping trailing whitespace, so
    /// it rejects `a starts with b` here while we reject it in the parser
    /// (a word operator must be followed by a string or `{`, neither of
    /// which starts with a label character): same language, better message.
    fn eat_words(&mut self, words: &[&str]) -> bool {
        let saved = self.pos;
        for (i, word) in words.iter().enumerate() {
            if i > 0 {
                self.skip_whitespace();
            }
            if !self.eat(word) {
                self.pos = saved;
                return false;
            }
        }
        if self.at_word_boundary() {
            true
        } else {
            self.pos = saved;
            false
        }
    }

    /// After a label, only a word operator may follow (punctuation was
    /// handled by the caller).
    fn lex_operator(&mut self) -> Tok<'a> {
        const OPERATORS: [(&[&str], Tok<'static>); 5] = [
            (&["contains"], Tok::Contains),
            (&["starts", "with"], Tok::StartsWith),
            (&["ends", "with"], Tok::EndsWith),
            (&["not", "in"], Tok::NotIn),
            (&["in"], Tok::In),
        ];
        for (words, tok) in OPERATORS {
            if self.eat_words(words) {
                return tok;
            }
        }
        Tok::Invalid
    }

    /// `has(label)`, `all()`, `global()` or a label name.
    fn lex_word(&mut self) -> Result<Tok<'a>, LexError> {
        if self.eat("has(") {
            self.skip_whitespace();
            let label = self.lex_label_name()?;
            let Some(label) = label else {
                return Err(self.error(self.pos, "expected a label name after `has(`"));
            };
            self.skip_whitespace();
            if !self.eat(")") {
                return Err(self.error(self.pos, "expected `)` to close `has(`"));
            }
            return Ok(Tok::Has(label));
        }
        for (word, tok) in [("all(", Tok::All), ("global(", Tok::Global)] {
            if self.eat(word) {
                self.skip_whitespace();
                if !self.eat(")") {
                    return Err(self.error(self.pos, format!("expected `)` after `{word}`")));
                }
                return Ok(tok);
            }
        }
        Ok(match self.lex_label_name()? {
            Some(label) => Tok::Label(label),
            None => Tok::Invalid,
        })
    }

    /// Consumes a label name; `None` (and nothing consumed) if the next
    /// character cannot start one.
    fn lex_label_name(&mut self) -> Result<Option<&'a str>, LexError> {
        let start = self.pos;
        let len = self.rest().bytes().take_while(|&b| is_label_byte(b)).count();
        if len == 0 {
            return Ok(None);
        }
        if len > MAX_LABEL_LEN {
            return Err(self.error(
                start,
                format!("label name is longer than {MAX_LABEL_LEN} characters"),
            ));
        }
        self.pos += len;
        Ok(Some(&self.input[start..self.pos]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(input: &str) -> Result<Vec<Tok<'_>>, LexError> {
        let mut lexer = Lexer::new(input);
        let mut out = Vec::new();
        loop {
            let token = lexer.next_token()?;
            out.push(token.tok);
            if token.tok == Tok::Eof || token.tok == Tok::Invalid {
                return Ok(out);
            }
        }
    }

    // Cases mirrored from Calico's libcalico-go/lib/selector/tokenizer/tokenizer_test.go.
    #[test]
    fn calico_tokenizer_cases() {
        use Tok::*;
        let cases: &[(&str, &[Tok<'_>])] = &[
            (r#"a=="b""#, &[Label("a"), Eq, Str("b"), Eof]),
            (r#"a!="b""#, &[Label("a"), Ne, Str("b"), Eof]),
            (r#"(a=="b")"#, &[LParen, Label("a"), Eq, Str("b"), RParen, Eof]),
            (
                r#"contains contains 'contains'"#,
                &[Label("contains"), Contains, Str("contains"), Eof],
            ),
            (
                r#"label contains"value""#,
                &[Label("label"), Contains, Str("value"), Eof],
            ),
            (
                r#"label startswith "value""#,
                &[Label("label"), StartsWith, Str("value"), Eof],
            ),
            (
                r#"startswith starts  with "value""#,
                &[Label("startswith"), StartsWith, Str("value"), Eof],
            ),
            (
                r#"endswith ends	with "value""#,
                &[Label("endswith"), EndsWith, Str("value"), Eof],
            ),
            (
                r#"a not in "bar" && !has(foo) || b in c"#,
                &[
                    Label("a"),
                    NotIn,
                    Str("bar"),
                    And,
                    Not,
                    Has("foo"),
                    Or,
                    Label("b"),
                    In,
                    Label("c"),
                    Eof,
                ],
            ),
            (
                r#"a notin"bar"&&!has( foo )||b in"c""#,
                &[
                    Label("a"),
                    NotIn,
                    Str("bar"),
                    And,
                    Not,
                    Has("foo"),
                    Or,
                    Label("b"),
                    In,
                    Str("c"),
                    Eof,
                ],
            ),
            ("has(calico/k8s_NS-.1/role)", &[Has("calico/k8s_NS-.1/role"), Eof]),
            (
                r#"a not in {"a","B"}"#,
                &[Label("a"), NotIn, LBrace, Str("a"), Comma, Str("B"), RBrace, Eof],
            ),
            ("global( )", &[Global, Eof]),
            ("all( )", &[All, Eof]),
            // `has (` is not `has(`: it is the label `has` followed by `(`.
            ("has (a)", &[Label("has"), LParen, Label("a"), RParen, Eof]),
            // Word operators need a word boundary after them.
            ("label inf", &[Label("label"), Invalid]),
            ("label ends withs", &[Label("label"), Invalid]),
            ("label squiggles", &[Label("label"), Invalid]),
            // Newline is not whitespace.
            ("a\n", &[Label("a"), Invalid]),
            ("a = 'b'", &[Label("a"), Invalid]),
        ];
        for (input, expected) in cases {
            assert_eq!(tokens(input).as_deref(), Ok(*expected), "input {input:?}");
        }
    }

    // tokenizer_test.go: 512 characters is fine, 513 is too long.
    #[test]
    fn label_length_limit() {
        let ok = "a".repeat(512);
        assert_eq!(tokens(&ok), Ok(vec![Tok::Label(&ok), Tok::Eof]));
        let too_long = "a".repeat(513);
        assert!(tokens(&too_long).is_err());
        assert!(tokens(&format!("has({too_long})")).is_err());
    }

    #[test]
    fn lexical_errors() {
        for input in [
            r#"label == "value"#,
            "label == 'value",
            "all(",
            "global(",
            "has()",
            "has(foo",
            "has( foo ",
            "all(x)",
        ] {
            assert!(tokens(input).is_err(), "input {input:?}");
        }
    }
}
