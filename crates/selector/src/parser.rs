//! Recursive-descent parser, following the grammar of Calico's
//! `libcalico-go/lib/selector/parser/parser.go`:
//!
//! ```text
//! selector  := <empty> | or EOF
//! or        := and ("||" and)*
//! and       := unary ("&&" unary)*
//! unary     := "!"* operation
//! operation := has(label) | all() | global() | "(" or ")"
//!            | label ("==" | "!=" | contains | starts with | ends with) string
//!            | label ("in" | "not in") "{" [string ("," string)* [","]] "}"
//! ```
//!
//! The tree is normalised while it is built: nested `&&`/`||` chains are
//! flattened, redundant parentheses vanish and double negations cancel.

use std::collections::BTreeSet;

use crate::ParseError;
use crate::ast::{Expression, conjoin, disjoin, negate};
use crate::lexer::{LexError, Lexer, Tok, Token};

/// Deepest accepted nesting of parentheses. Calico has no limit, but a
/// bound keeps every recursive walk of the tree far from the stack limit.
pub(crate) const MAX_NESTING: usize = 256;

const EXPECTED_OPERATION: &str = "expected a label name, `has(`, `all()`, `global()`, `!` or `(`";

pub(crate) fn parse(input: &str) -> Result<Expression, ParseError> {
    parse_bytes(input).map_err(|e| ParseError {
        position: input[..e.byte_pos].chars().count(),
        message: e.message,
    })
}

fn parse_bytes(input: &str) -> Result<Expression, LexError> {
    let mut lexer = Lexer::new(input);
    let current = lexer.next_token()?;
    let mut parser = Parser {
        lexer,
        current,
        depth: 0,
    };
    if parser.current.tok == Tok::Eof {
        // Calico's parseRoot: an empty (or blank) selector means all().
        return Ok(Expression::All);
    }
    let expr = parser.parse_or()?;
    if parser.current.tok != Tok::Eof {
        return Err(parser.error("expected `&&`, `||` or end of selector"));
    }
    Ok(expr)
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    current: Token<'a>,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn advance(&mut self) -> Result<(), LexError> {
        self.current = self.lexer.next_token()?;
        Ok(())
    }

    /// An error at the current token.
    fn error(&self, message: impl Into<String>) -> LexError {
        LexError {
            byte_pos: self.current.start,
            message: message.into(),
        }
    }

    fn parse_or(&mut self) -> Result<Expression, LexError> {
        let first = self.parse_and()?;
        if self.current.tok != Tok::Or {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.current.tok == Tok::Or {
            self.advance()?;
            operands.push(self.parse_and()?);
        }
        Ok(disjoin(operands))
    }

    fn parse_and(&mut self) -> Result<Expression, LexError> {
        let first = self.parse_unary()?;
        if self.current.tok != Tok::And {
            return Ok(first);
        }
        let mut operands = vec![first];
        while self.current.tok == Tok::And {
            self.advance()?;
            operands.push(self.parse_unary()?);
        }
        Ok(conjoin(operands))
    }

    fn parse_unary(&mut self) -> Result<Expression, LexError> {
        let mut negated = false;
        while self.current.tok == Tok::Not {
            negated = !negated;
            self.advance()?;
        }
        let expr = self.parse_operation()?;
        Ok(if negated { negate(expr) } else { expr })
    }

    fn parse_operation(&mut self) -> Result<Expression, LexError> {
        let expr = match self.current.tok {
            Tok::Has(key) => Expression::Has(key.to_owned()),
            Tok::All => Expression::All,
            Tok::Global => Expression::Global,
            Tok::Label(key) => {
                self.advance()?;
                return self.parse_comparison(key);
            }
            Tok::LParen => {
                if self.depth >= MAX_NESTING {
                    return Err(self.error(format!("parentheses are nested more than {MAX_NESTING} deep")));
                }
                self.depth += 1;
                self.advance()?;
                let inner = self.parse_or()?;
                if self.current.tok != Tok::RParen {
                    return Err(self.error("expected `&&`, `||` or `)`"));
                }
                self.depth -= 1;
                inner
            }
            _ => return Err(self.error(EXPECTED_OPERATION)),
        };
        self.advance()?;
        Ok(expr)
    }

    /// Parses what follows a label name: an operator and its operand.
    fn parse_comparison(&mut self, key: &str) -> Result<Expression, LexError> {
        type Build = fn(String, String) -> Expression;
        let (op, build): (&str, Build) = match self.current.tok {
            Tok::Eq => ("==", Expression::Equal),
            Tok::Ne => ("!=", Expression::NotEqual),
            Tok::Contains => ("contains", Expression::Contains),
            Tok::StartsWith => ("starts with", Expression::StartsWith),
            Tok::EndsWith => ("ends with", Expression::EndsWith),
            Tok::In | Tok::NotIn => {
                let negated = self.current.tok == Tok::NotIn;
                self.advance()?;
                let values = self.parse_set(if negated { "not in" } else { "in" })?;
                let key = key.to_owned();
                return Ok(if negated {
                    Expression::NotIn(key, values)
                } else {
                    Expression::In(key, values)
                });
            }
            _ => {
                return Err(self.error(format!(
                    "expected an operator after label `{key}`: `==`, `!=`, `in`, `not in`, \
                     `contains`, `starts with` or `ends with`"
                )));
            }
        };
        self.advance()?;
        let Tok::Str(value) = self.current.tok else {
            return Err(self.error(format!("expected a quoted string after `{op}`")));
        };
        self.advance()?;
        Ok(build(key.to_owned(), value.to_owned()))
    }

    /// Parses `{ "a", "b", }` (a trailing comma is allowed, as in Calico).
    fn parse_set(&mut self, op: &str) -> Result<BTreeSet<String>, LexError> {
        if self.current.tok != Tok::LBrace {
            return Err(self.error(format!("expected `{{` after `{op}`")));
        }
        self.advance()?;
        let mut values = BTreeSet::new();
        loop {
            match self.current.tok {
                Tok::RBrace => break,
                Tok::Str(value) => {
                    values.insert(value.to_owned());
                    self.advance()?;
                    match self.current.tok {
                        Tok::Comma => self.advance()?,
                        Tok::RBrace => break,
                        _ => return Err(self.error("expected `,` or `}`")),
                    }
                }
                _ => return Err(self.error("expected a quoted string or `}`")),
            }
        }
        self.advance()?;
        Ok(values)
    }
}
