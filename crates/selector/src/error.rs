//! Error types.

/// Why a selector string failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at character {}", .position + 1)]
pub struct ParseError {
    /// Character (not byte) offset into the input where parsing failed;
    /// equal to the input's length in characters when the input ended early.
    pub position: usize,
    /// What was expected there, e.g.
    /// "expected a label name, `has(`, `all()`, `global()`, `!` or `(`".
    pub message: String,
}

impl ParseError {
    /// Shows `input` (the string that was parsed) with a caret under the
    /// failing character, followed by the message:
    ///
    /// ```text
    /// a === 'b'
    ///     ^ expected a quoted string after `==`
    /// ```
    ///
    /// Control characters other than tab are shown as `�` so the caret
    /// stays aligned.
    pub fn render(&self, input: &str) -> String {
        let mut line = String::with_capacity(input.len());
        let mut caret = String::with_capacity(self.position + 1);
        for (i, c) in input.chars().enumerate() {
            let shown = match c {
                '\t' => '\t',
                c if c.is_control() => '\u{FFFD}',
                c => c,
            };
            line.push(shown);
            if i < self.position {
                caret.push(if c == '\t' { '\t' } else { ' ' });
            }
        }
        let missing = self.position.saturating_sub(caret.chars().count());
        caret.extend(std::iter::repeat_n(' ', missing));
        format!("{line}\n{caret}^ {}", self.message)
    }
}

/// Why a Kubernetes `LabelSelector` cannot be lowered to a selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector: key {key:?}: {message}")]
pub struct LabelSelectorError {
    /// The offending `matchLabels` key or requirement key.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}
