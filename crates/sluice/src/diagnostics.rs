//! Reading manifests (`-f FILE`, `-f DIRECTORY`, `-f -` for standard input) and printing load
//! errors the way compilers do: the message, the place, the line and a caret.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sluice_api::{Diagnostic, Loader, ResourceSet};

/// How errors name standard input.
pub const STDIN_NAME: &str = "<stdin>";

/// Characters of a source line shown on each side of the error's column: a one-line 4 MB JSON
/// document must not be printed whole.
const SNIPPET_RADIUS: usize = 60;

/// Standard input, read at most once (`-f -`), kept so errors in it can show their line.
static STDIN: OnceLock<String> = OnceLock::new();

fn is_stdin(path: &Path) -> bool {
    path == Path::new("-")
}

fn read_stdin() -> Result<&'static str, String> {
    if let Some(text) = STDIN.get() {
        return Ok(text);
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|error| format!("cannot read standard input (-f -): {error}"))?;
    Ok(STDIN.get_or_init(|| text))
}

/// Gives the loader every path, reading `-` from standard input as kubectl does (a file named
/// `-` is `./-`).
pub fn add_inputs(loader: &mut Loader, paths: &[PathBuf]) -> Result<(), String> {
    if paths.iter().filter(|path| is_stdin(path)).count() > 1 {
        return Err("`-f -` is given more than once; standard input can be read once".to_string());
    }
    for path in paths {
        if is_stdin(path) {
            loader.add_str(STDIN_NAME, read_stdin()?);
        } else {
            loader.add_path(path);
        }
    }
    Ok(())
}

/// Resources from manifests when paths are given, else from the datastore.
pub fn resources_from(
    paths: &[PathBuf],
    datastore: &crate::datastore::DatastoreArguments,
) -> Result<ResourceSet, String> {
    if paths.is_empty() {
        let store = datastore.open()?;
        crate::datastore::read_set(store.as_ref())
    } else {
        load_or_report(paths)
    }
}

/// Loads manifests; on error prints every diagnostic to stderr and fails.
pub fn load_or_report(paths: &[PathBuf]) -> Result<ResourceSet, String> {
    let mut loader = Loader::default();
    add_inputs(&mut loader, paths)?;
    let resources = loader.finish().map_err(|errors| report_errors(&errors))?;
    report_warnings(&resources);
    Ok(resources)
}

/// Prints every diagnostic with its source line; returns the summary line.
pub fn report_errors(errors: &sluice_api::LoadErrors) -> String {
    let mut sources: HashMap<String, Option<String>> = HashMap::new();
    for diagnostic in &errors.0 {
        let source = sources.entry(diagnostic.file.clone()).or_insert_with(|| {
            if diagnostic.file == STDIN_NAME {
                STDIN.get().cloned()
            } else {
                std::fs::read_to_string(&diagnostic.file).ok()
            }
        });
        eprintln!("{}", render(diagnostic, source.as_deref()));
    }
    let count = errors.0.len();
    format!(
        "{count} error{} found; nothing was used",
        if count == 1 { "" } else { "s" }
    )
}

pub fn render(diagnostic: &Diagnostic, source: Option<&str>) -> String {
    let mut text = String::new();
    let field = if diagnostic.field.is_empty() {
        String::new()
    } else {
        format!(" ({})", diagnostic.field)
    };
    text.push_str(&format!(
        "error{field}: {}\n",
        diagnostic.message.replace('\n', "\n  ")
    ));
    text.push_str(&format!(
        "  --> {}:{}:{}",
        diagnostic.file, diagnostic.line, diagnostic.column
    ));
    if let Some(line) = source.and_then(|source| source.lines().nth(diagnostic.line.saturating_sub(1)))
        && diagnostic.line > 0
    {
        let (shown, caret_padding) = snippet(line, diagnostic.column);
        let number = diagnostic.line.to_string();
        let gutter = " ".repeat(number.len());
        text.push_str(&format!(
            "\n{gutter} |\n{number} | {shown}\n{gutter} | {caret_padding}^"
        ));
    }
    text
}

/// Prints what the inputs do that is allowed but worth knowing (kinds and fields Sluice keeps
/// without enforcing), one warning each, to stderr.
pub fn report_warnings(resources: &ResourceSet) {
    for warning in &resources.warnings {
        let field = if warning.field.is_empty() {
            String::new()
        } else {
            format!(" ({})", warning.field)
        };
        eprintln!(
            "warning{field}: {}\n  --> {}:{}:{}",
            warning.message, warning.file, warning.line, warning.column
        );
    }
}

/// The part of `line` around the 1-based character `column`, at most `SNIPPET_RADIUS`
/// characters each side, with `…` where it was cut; and the padding that puts a caret under
/// the column (tabs kept, so the caret lines up in a terminal).
fn snippet(line: &str, column: usize) -> (String, String) {
    let characters: Vec<char> = line.chars().collect();
    let index = column.saturating_sub(1);
    let start = index.saturating_sub(SNIPPET_RADIUS).min(characters.len());
    let end = index
        .saturating_add(SNIPPET_RADIUS + 1)
        .min(characters.len())
        .max(start);
    let mut shown = String::new();
    let mut padding = String::new();
    if start > 0 {
        shown.push('…');
        padding.push(' ');
    }
    shown.extend(&characters[start..end]);
    if end < characters.len() {
        shown.push('…');
    }
    for character in &characters[start..index.min(characters.len()).max(start)] {
        padding.push(if *character == '\t' { '\t' } else { ' ' });
    }
    // A column past the end of the line (an error at the line break) points just after it.
    padding.extend(std::iter::repeat_n(' ', index.saturating_sub(characters.len())));
    (shown, padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_line_is_shown_whole_with_the_caret_under_the_column() {
        assert_eq!(
            snippet("  nets: [x]", 10),
            ("  nets: [x]".to_string(), " ".repeat(9))
        );
    }

    #[test]
    fn a_long_line_is_cut_around_the_column_on_character_boundaries() {
        let line = format!("{}ÉRROR{}", "é".repeat(1000), "ü".repeat(1000));
        let (shown, padding) = snippet(&line, 1001);
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        assert_eq!(shown.chars().count(), 2 * SNIPPET_RADIUS + 1 + 2);
        let caret = padding.chars().count();
        assert_eq!(shown.chars().nth(caret), Some('É'));
    }

    #[test]
    fn a_column_past_the_end_points_after_the_line() {
        let (shown, padding) = snippet("abc", 5);
        assert_eq!(shown, "abc");
        assert_eq!(padding, "    ");
    }
}
