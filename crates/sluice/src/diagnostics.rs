//! Printing load errors the way compilers do: the message, the place, the line and a caret.

use std::collections::HashMap;
use std::path::PathBuf;

use sluice_api::{Diagnostic, ResourceSet};

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
    let resources = sluice_api::load_paths(paths).map_err(|errors| report_errors(&errors))?;
    report_warnings(&resources);
    Ok(resources)
}

/// Prints every diagnostic with its source line; returns the summary line.
pub fn report_errors(errors: &sluice_api::LoadErrors) -> String {
    let mut sources: HashMap<String, Option<String>> = HashMap::new();
    for diagnostic in &errors.0 {
        let source = sources
            .entry(diagnostic.file.clone())
            .or_insert_with(|| std::fs::read_to_string(&diagnostic.file).ok());
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
        let number = diagnostic.line.to_string();
        let gutter = " ".repeat(number.len());
        text.push_str(&format!(
            "\n{gutter} |\n{number} | {line}\n{gutter} | {}^",
            " ".repeat(diagnostic.column.saturating_sub(1))
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
