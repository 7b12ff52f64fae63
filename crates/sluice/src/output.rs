//! Standard output the way Unix tools treat it: a reader that goes away (`| head`) ends the
//! command quietly with status 141, as a shell reports a writer killed by SIGPIPE; any other
//! write error (a full disk) is reported and fails the command. Never a panic.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

/// The exit status after the reader of standard output went away: 128 + SIGPIPE, what the
/// shell reports for `cat` or `ls` in the same place.
pub const BROKEN_PIPE_STATUS: u8 = 141;

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// Printed as `error: MESSAGE`.
    Message(String),
    /// Standard output could not be written.
    Output(io::Error),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Message(message)
    }
}

impl Failure {
    /// Reports the failure on stderr (nothing for a closed pipe) and gives the exit status.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Failure::Message(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
            Failure::Output(error) => {
                output_error_exit(&error.to_string(), error.kind() == io::ErrorKind::BrokenPipe)
            }
        }
    }
}

fn output_error_exit(reason: &str, broken_pipe: bool) -> ExitCode {
    if broken_pipe {
        return ExitCode::from(BROKEN_PIPE_STATUS);
    }
    eprintln!("error: writing output: {}", without_os_code(reason));
    ExitCode::FAILURE
}

/// "No space left on device (os error 28)" → "No space left on device".
fn without_os_code(reason: &str) -> &str {
    match reason.rfind(" (os error ") {
        Some(index) if reason.ends_with(')') => &reason[..index],
        _ => reason,
    }
}

/// Buffered standard output whose `write!`/`writeln!` return a [`Failure`], so commands
/// use `?` on every line they print.
#[derive(Debug)]
pub struct Output {
    writer: BufWriter<io::Stdout>,
}

impl Output {
    pub fn stdout() -> Self {
        // The unlocked handle: library code run by a command (the lab) may print from threads.
        Output {
            writer: BufWriter::new(io::stdout()),
        }
    }

    /// What `write!` and `writeln!` call.
    pub fn write_fmt(&mut self, arguments: fmt::Arguments<'_>) -> Result<(), Failure> {
        self.writer.write_fmt(arguments).map_err(Failure::Output)
    }

    pub fn flush(&mut self) -> Result<(), Failure> {
        self.writer.flush().map_err(Failure::Output)
    }
}

/// `println!` panics when stdout fails; `apply`, `delete` and the lab print with it from code
/// this module does not own. This hook turns exactly that panic into the same quiet exit or
/// one-line error as [`Failure::Output`]; every other panic goes to the default hook.
pub fn catch_print_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |information| {
        let payload = information.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if let Some(reason) = message.and_then(|message| message.strip_prefix("failed printing to stdout: "))
        {
            let broken_pipe = os_error_kind(reason) == Some(io::ErrorKind::BrokenPipe);
            let code = output_error_exit(reason, broken_pipe);
            // ExitCode has no accessor; the two values it can be here are known.
            std::process::exit(if code == ExitCode::FAILURE {
                1
            } else {
                i32::from(BROKEN_PIPE_STATUS)
            });
        }
        default(information);
    }));
}

/// The kind of the OS error a message such as "Broken pipe (os error 32)" ends with.
fn os_error_kind(reason: &str) -> Option<io::ErrorKind> {
    let code = reason.rsplit_once(" (os error ")?.1.strip_suffix(')')?;
    Some(io::Error::from_raw_os_error(code.parse().ok()?).kind())
}

/// One CSV field: quoted when it holds a comma, quote or line break (RFC 4180).
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// One CSV record of `fields`, without the line break.
pub fn csv_record<S: AsRef<str>>(fields: &[S]) -> String {
    fields
        .iter()
        .map(|field| csv_field(field.as_ref()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Rows as a table: columns padded to their widest cell, three spaces apart, the first row
/// the header.
pub fn write_table(out: &mut Output, rows: &[Vec<String>]) -> Result<(), Failure> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        writeln!(out, "{}", cells.join("   ").trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_code_is_cut_from_the_reason() {
        assert_eq!(
            without_os_code("No space left on device (os error 28)"),
            "No space left on device"
        );
        assert_eq!(without_os_code("something else"), "something else");
        assert_eq!(
            os_error_kind("Broken pipe (os error 32)"),
            Some(io::ErrorKind::BrokenPipe)
        );
        assert_eq!(os_error_kind("Broken pipe"), None);
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(
            csv_record(&["a", "b,c", "say \"hi\""]),
            "a,\"b,c\",\"say \"\"hi\"\"\""
        );
    }
}
