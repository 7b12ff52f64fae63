//! Reading YAML/JSON text into plain values while remembering where every value came from.
//!
//! Documents are parsed with `saphyr` (YAML 1.2, a superset of JSON) into marked nodes, then
//! converted to `serde_json::Value` together with an index from field path to line and column.
//! Typed deserialization and validation both report a field path; the index turns it into a
//! position, so every error names file, line, column and field.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData, YamlLoader};
use saphyr_parser::{BufferedInput, Event, Parser, Span, SpannedEventReceiver};
use serde_json::{Map, Number, Value};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One YAML/JSON document: its value and where each field path starts in the file.
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    /// Position of the document's first node.
    pub start: Position,
    positions: HashMap<String, Position>,
}

impl Document {
    /// The position of a field path like `spec.egress[0].destination.nets[1]`; falls back to
    /// the nearest enclosing field that is known, then to the document start.
    pub fn position_of(&self, path: &str) -> Position {
        let mut candidate = path;
        loop {
            if let Some(position) = self.positions.get(candidate) {
                return *position;
            }
            match candidate.rfind(['.', '[']) {
                Some(cut) => candidate = &candidate[..cut],
                None => return self.start,
            }
        }
    }

    /// A sub-document rooted at `prefix` (used for the items of a `kind: List`).
    pub fn sub_document(&self, prefix: &str, value: Value) -> Document {
        let positions = self
            .positions
            .iter()
            .filter_map(|(path, position)| {
                if path == prefix {
                    return Some((String::new(), *position));
                }
                let field = path.strip_prefix(prefix)?.strip_prefix('.')?;
                Some((field.to_string(), *position))
            })
            .collect();
        Document {
            value,
            start: self.position_of(prefix),
            positions,
        }
    }
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub position: Position,
    pub message: String,
}

/// Parses every document of a YAML or JSON text. Empty documents (e.g. a trailing `---`) are
/// skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut documents = Vec::new();
    for_each_document(text, |document| documents.push(document))?;
    Ok(documents)
}

/// Hands each document of a text to `each`, in order, holding one document's tree at a time
/// (a 50 MB manifest of small documents needs memory for one of them, not for all). The text is
/// checked completely first: on a syntax error anywhere, `each` is never called and the error
/// is the one [`parse_documents`] reports. Empty documents are skipped.
pub fn for_each_document(text: &str, mut each: impl FnMut(Document)) -> Result<(), SyntaxError> {
    check_block_nesting(text)?;
    let whole_text = || Ok(text.to_string());
    // Two passes over the events: the first only checks, so no document is handed on from a
    // text that turns out to be broken further down.
    read_documents(text.chars(), whole_text, |_| {}).map_err(into_syntax_error)?;
    read_documents(text.chars(), whole_text, &mut each).map_err(into_syntax_error)
}

/// Why a file's documents could not be read.
#[derive(Debug)]
pub enum FileError {
    /// Opening or reading failed, or the file is not UTF-8.
    Read(std::io::Error),
    Syntax(SyntaxError),
}

/// [`for_each_document`] for a file, read from disk on each pass instead of held as one string,
/// so loading needs memory for the resources, not for the file too. The same errors, in the
/// same order: the file is read as UTF-8 first, then nesting, then syntax.
pub fn for_each_document_in_file(path: &Path, mut each: impl FnMut(Document)) -> Result<(), FileError> {
    let open = || File::open(path).map(BufReader::new).map_err(FileError::Read);
    let mut reader = open()?;
    let mut line = Vec::new();
    let mut nesting = Ok(());
    for index in 0.. {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(FileError::Read)? == 0 {
            break;
        }
        if std::str::from_utf8(&line).is_err() {
            // As `read_to_string` says it.
            return Err(FileError::Read(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )));
        }
        if nesting.is_ok() {
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            nesting = check_line_nesting(index, text.strip_suffix(b"\r").unwrap_or(text));
        }
    }
    nesting.map_err(FileError::Syntax)?;
    let whole_text = || std::fs::read_to_string(path).map_err(FileError::Read);
    read_documents(FileChars::new(open()?), whole_text, |_| {})?;
    read_documents(FileChars::new(open()?), whole_text, &mut each)
}

fn into_syntax_error(error: FileError) -> SyntaxError {
    match error {
        FileError::Syntax(error) => error,
        // Only a file is read; a string cannot fail to be.
        FileError::Read(error) => SyntaxError {
            position: Position { line: 1, column: 1 },
            message: error.to_string(),
        },
    }
}

/// The characters of a UTF-8 file, a line at a time; a read error ends them and is kept.
struct FileChars {
    reader: BufReader<File>,
    line: String,
    position: usize,
    error: Option<std::io::Error>,
}

impl FileChars {
    fn new(reader: BufReader<File>) -> FileChars {
        FileChars {
            reader,
            line: String::new(),
            position: 0,
            error: None,
        }
    }
}

impl Iterator for FileChars {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        if self.position >= self.line.len() {
            self.line.clear();
            self.position = 0;
            match self.reader.read_line(&mut self.line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) => {
                    self.error = Some(error);
                    return None;
                }
            }
        }
        let next = self.line[self.position..].chars().next()?;
        self.position += next.len_utf8();
        Some(next)
    }
}

/// A source of characters whose read errors are reported after parsing.
trait Characters: Iterator<Item = char> {
    fn failure(&mut self) -> Option<std::io::Error>;
}

impl Characters for std::str::Chars<'_> {
    fn failure(&mut self) -> Option<std::io::Error> {
        None
    }
}

impl Characters for FileChars {
    fn failure(&mut self) -> Option<std::io::Error> {
        self.error.take()
    }
}

/// Reads the documents one at a time through saphyr's loader, converting each as it ends.
/// `whole_text` gives the text for the rare error only saphyr's whole-text loader can word.
fn read_documents<C: Characters>(
    characters: C,
    whole_text: impl Fn() -> Result<String, FileError>,
    each: impl FnMut(Document),
) -> Result<(), FileError> {
    let mut receiver = OneDocumentAtATime {
        loader: YamlLoader::default(),
        each,
        error: None,
        loader_failed: false,
    };
    let failure = Failure(std::rc::Rc::new(std::cell::RefCell::new(None)));
    let mut parser = Parser::new(BufferedInput::new(Reporting {
        characters,
        failure: failure.clone(),
    }));
    let parsed = parser.load(&mut receiver, true);
    if let Some(error) = failure.0.borrow_mut().take() {
        return Err(FileError::Read(error));
    }
    parsed.map_err(|error| FileError::Syntax(syntax_error(&error)))?;
    if receiver.loader_failed {
        // The loader keeps its error (a duplicated key, too many aliases) to itself; loading
        // the whole text the usual way reports it, with its message and position.
        let text = whole_text()?;
        return Err(FileError::Syntax(match MarkedYaml::load_from_str(&text) {
            Err(error) => syntax_error(&error),
            Ok(_) => SyntaxError {
                position: Position { line: 1, column: 1 },
                message: "the YAML loader failed without saying why".to_string(),
            },
        }));
    }
    receiver
        .error
        .map_or(Ok(()), |error| Err(FileError::Syntax(error)))
}

/// Passes characters on and, when they end, keeps their read error where the caller sees it.
#[derive(Clone)]
struct Failure(std::rc::Rc<std::cell::RefCell<Option<std::io::Error>>>);

struct Reporting<C> {
    characters: C,
    failure: Failure,
}

impl<C: Characters> Iterator for Reporting<C> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let next = self.characters.next();
        if next.is_none()
            && let Some(error) = self.characters.failure()
        {
            *self.failure.0.borrow_mut() = Some(error);
        }
        next
    }
}

fn syntax_error(error: &saphyr::ScanError) -> SyntaxError {
    let marker = error.marker();
    SyntaxError {
        position: Position {
            line: marker.line(),
            column: marker.col() + 1,
        },
        message: error.info().to_string(),
    }
}

/// Feeds parser events to saphyr's loader and takes each document out as soon as it ends.
struct OneDocumentAtATime<'input, Each> {
    loader: YamlLoader<'input, MarkedYaml<'input>>,
    each: Each,
    error: Option<SyntaxError>,
    /// The loader refused an event; it ignores the rest, so nothing more is read.
    loader_failed: bool,
}

impl<'input, Each: FnMut(Document)> SpannedEventReceiver<'input> for OneDocumentAtATime<'input, Each> {
    fn on_event(&mut self, event: Event<'input>, span: Span) {
        // After a conversion error the loader still reads on: an error of its own further
        // down is reported first, as when the whole text is loaded before converting.
        if self.loader_failed {
            return;
        }
        let ends_document = matches!(event, Event::DocumentEnd);
        self.loader.on_event(event, span);
        if !ends_document {
            return;
        }
        // A fresh loader per document: anchors do not cross documents in YAML anyway.
        let Some(node) = std::mem::take(&mut self.loader).into_documents().pop() else {
            self.loader_failed = true;
            return;
        };
        if self.error.is_some() {
            return;
        }
        let mut positions = HashMap::new();
        match convert(&node, String::new(), &mut positions) {
            Ok(value) if value.is_null() => {}
            Ok(value) => (self.each)(Document {
                value,
                start: position_from(&node),
                positions,
            }),
            Err(error) => self.error = Some(error),
        }
    }
}

/// How far a line may reach in indentation and leading `- `, `? `, `: ` indicators. Real
/// manifests stay far below; saphyr builds its tree recursively, so an input nested thousands
/// of levels deep would overflow the stack instead of being reported.
pub const MAX_BLOCK_NESTING: usize = 256;

/// Rejects block nesting deeper than [`MAX_BLOCK_NESTING`] before saphyr sees it. Each block
/// level needs more indentation or another indicator at the start of a line, so their sum
/// bounds the depth; flow nesting saphyr itself limits to 255 levels.
fn check_block_nesting(text: &str) -> Result<(), SyntaxError> {
    for (index, line) in text.lines().enumerate() {
        check_line_nesting(index, line.as_bytes())?;
    }
    Ok(())
}

/// The nesting check of one line (`index` counts from 0).
fn check_line_nesting(index: usize, bytes: &[u8]) -> Result<(), SyntaxError> {
    let mut column = 0;
    let mut levels = 0;
    while levels <= MAX_BLOCK_NESTING {
        while column < bytes.len() && matches!(bytes[column], b' ' | b'\t') {
            column += 1;
            levels += 1;
        }
        let rest = &bytes[column..];
        let separated = |length: usize| rest.len() == length || matches!(rest[length], b' ' | b'\t');
        if rest.starts_with(b"---") && separated(3) {
            column += 3;
        } else if matches!(rest.first(), Some(b'-' | b'?' | b':')) && separated(1) {
            column += 1;
            levels += 1;
        } else if matches!(rest.first(), Some(b'!' | b'&')) {
            // A tag or anchor before a nested collection: skip the property.
            while column < bytes.len() && !matches!(bytes[column], b' ' | b'\t') {
                column += 1;
            }
        } else {
            break;
        }
        if column >= bytes.len() {
            break;
        }
    }
    if levels > MAX_BLOCK_NESTING {
        return Err(SyntaxError {
            position: Position {
                line: index + 1,
                column: column + 1,
            },
            message: format!(
                "nesting too deep: at most {MAX_BLOCK_NESTING} columns of indentation and `- `, `? `, `: ` indicators on a line"
            ),
        });
    }
    Ok(())
}

fn position_from(node: &MarkedYaml<'_>) -> Position {
    Position {
        line: node.span.start.line(),
        column: node.span.start.col() + 1,
    }
}

fn convert(
    node: &MarkedYaml<'_>,
    path: String,
    positions: &mut HashMap<String, Position>,
) -> Result<Value, SyntaxError> {
    positions.insert(path.clone(), position_from(node));
    Ok(match &node.data {
        YamlData::Value(scalar) => scalar_to_value(scalar),
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => {
            let mut values = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                values.push(convert(item, format!("{path}[{index}]"), positions)?);
            }
            Value::Array(values)
        }
        YamlData::Mapping(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key_text = match &key.data {
                    YamlData::Value(Scalar::String(text)) => text.to_string(),
                    YamlData::Value(other) => scalar_to_value(other).to_string(),
                    _ => {
                        return Err(SyntaxError {
                            position: position_from(key),
                            message: "mapping keys must be plain strings".to_string(),
                        });
                    }
                };
                let child = if path.is_empty() {
                    key_text.clone()
                } else {
                    format!("{path}.{key_text}")
                };
                // Unknown-field errors point at the key, so remember where it is.
                positions.insert(format!("{child}#key"), position_from(key));
                let converted = convert(value, child, positions)?;
                map.insert(key_text, converted);
            }
            Value::Object(map)
        }
        YamlData::Tagged(_, inner) => {
            let value = convert(inner, path.clone(), positions)?;
            // saphyr gives a tagged scalar an empty span (line 0); the tag's span is right.
            if inner.span.start.line() == 0 {
                positions.insert(path, position_from(node));
            }
            value
        }
        YamlData::Alias(_) | YamlData::BadValue => {
            return Err(SyntaxError {
                position: position_from(node),
                message: "YAML aliases and invalid nodes are not supported".to_string(),
            });
        }
    })
}

fn scalar_to_value(scalar: &Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(value) => Value::Bool(*value),
        Scalar::Integer(value) => Value::Number((*value).into()),
        Scalar::FloatingPoint(value) => Number::from_f64(value.into_inner())
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string())),
        Scalar::String(text) => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_field_paths_across_documents() {
        let text = "a: 1\n---\nkind: X\nspec:\n  nets:\n    - 10.0.0.0/8\n    - bad\n";
        let documents = parse_documents(text).unwrap();
        assert_eq!(documents.len(), 2);
        let second = &documents[1];
        assert_eq!(
            second.position_of("spec.nets[1]"),
            Position { line: 7, column: 7 }
        );
        assert_eq!(
            second.position_of("spec.nets[1].deeper"),
            Position { line: 7, column: 7 }
        );
        assert_eq!(
            second.position_of("spec.nets#key"),
            Position { line: 5, column: 3 }
        );
    }

    #[test]
    fn json_is_read_too() {
        let documents =
            parse_documents("{\"kind\": \"Namespace\",\n \"metadata\": {\"name\": \"x\"}}").unwrap();
        assert_eq!(documents[0].value["metadata"]["name"], "x");
        assert_eq!(documents[0].position_of("metadata.name").line, 2);
    }

    #[test]
    fn tagged_values_keep_the_tag_position() {
        let documents = parse_documents("metadata:\n  !name web\nspec: !x [1]\n").unwrap();
        assert_eq!(
            documents[0].position_of("metadata"),
            Position { line: 2, column: 3 }
        );
        assert_eq!(documents[0].position_of("spec"), Position { line: 3, column: 7 });
    }

    #[test]
    fn a_syntax_error_further_down_hands_on_no_document() {
        let mut handed = 0;
        let error = for_each_document("a: 1\n---\nb: 2\n---\nc: [1, 2\n", |_| handed += 1).unwrap_err();
        assert_eq!(handed, 0);
        assert_eq!(error.position.line, 6, "{error:?}");
    }

    #[test]
    fn a_duplicated_key_is_worded_as_saphyr_words_it() {
        let text = "a: 1\n---\nmetadata: {name: a}\nmetadata: {name: b}\n";
        let mut handed = 0;
        let error = for_each_document(text, |_| handed += 1).unwrap_err();
        let expected = syntax_error(&MarkedYaml::load_from_str(text).unwrap_err());
        assert_eq!(error, expected);
        assert_eq!(error.position, Position { line: 4, column: 1 });
        assert_eq!(handed, 0);
    }

    #[test]
    fn the_loaders_error_comes_before_a_conversion_error_in_an_earlier_document() {
        // The sequence as a key in the first document is refused when converted; the
        // duplicated key in the second is the loader's, reported first as when the whole text
        // was loaded before converting.
        let first = "[1]: x\n";
        let error = parse_documents(first).unwrap_err();
        assert!(error.message.contains("plain strings"), "{error:?}");
        let error = parse_documents(&format!("{first}---\nc: 1\nc: 2\n")).unwrap_err();
        assert!(error.message.contains("duplicated key"), "{error:?}");
    }

    fn temporary_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let directory = std::env::temp_dir().join(format!("sluice-document-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_file_reads_as_its_text_does() {
        let text = "# first\r\nkind: X\r\nspec:\r\n  nets:\r\n    - 10.0.0.0/8\r\n    - é\r\n---\n---\nmetadata:\n  !name web\nlist: [1, {a: b}]\n";
        let path = temporary_file("same.yaml", text.as_bytes());
        let from_text = parse_documents(text).unwrap();
        let mut from_file = Vec::new();
        for_each_document_in_file(&path, |document| from_file.push(document)).unwrap();
        assert_eq!(from_text.len(), 2);
        assert_eq!(from_file.len(), from_text.len());
        for (file, text) in from_file.iter().zip(&from_text) {
            assert_eq!(file.value, text.value);
            assert_eq!(file.start, text.start);
            assert_eq!(file.positions, text.positions);
        }
    }

    #[test]
    fn a_file_fails_as_its_text_does() {
        let broken = "a: 1\n---\nb: [1,\n";
        let path = temporary_file("broken.yaml", broken.as_bytes());
        let mut handed = 0;
        match for_each_document_in_file(&path, |_| handed += 1) {
            Err(FileError::Syntax(error)) => assert_eq!(error, parse_documents(broken).unwrap_err()),
            other => panic!("{other:?}"),
        }
        assert_eq!(handed, 0);
        let deep = format!("a: 1\n{}- x\n", " ".repeat(MAX_BLOCK_NESTING + 1));
        let path = temporary_file("deep.yaml", deep.as_bytes());
        match for_each_document_in_file(&path, |_| {}) {
            Err(FileError::Syntax(error)) => assert_eq!(error, parse_documents(&deep).unwrap_err()),
            other => panic!("{other:?}"),
        }
        // Not UTF-8: reported before the nesting error, as reading the text came first.
        let latin1 = [deep.as_bytes(), b"c: caf\xe9\n"].concat();
        let path = temporary_file("latin1.yaml", &latin1);
        match for_each_document_in_file(&path, |_| {}) {
            Err(FileError::Read(error)) => {
                assert_eq!(error.to_string(), "stream did not contain valid UTF-8")
            }
            other => panic!("{other:?}"),
        }
        let missing = path.with_file_name("missing.yaml");
        assert!(matches!(
            for_each_document_in_file(&missing, |_| {}),
            Err(FileError::Read(_))
        ));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let error = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(error.position.line >= 1, "{error:?}");
    }
}

/// Writes a value as a YAML document (the form `sluice get -o yaml` prints). Strings that would
/// read back as another type are quoted by the emitter.
pub fn to_yaml(value: &Value) -> String {
    let yaml = value_to_yaml(value);
    let mut text = String::new();
    let mut emitter = saphyr::YamlEmitter::new(&mut text);
    emitter.multiline(true);
    emitter.dump(&yaml).expect("writing YAML to a string cannot fail");
    text.push('\n');
    text
}

fn value_to_yaml(value: &Value) -> saphyr::Yaml<'static> {
    use std::borrow::Cow;
    match value {
        Value::Null => saphyr::Yaml::Value(Scalar::Null),
        Value::Bool(value) => saphyr::Yaml::Value(Scalar::Boolean(*value)),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => saphyr::Yaml::Value(Scalar::Integer(integer)),
            None => saphyr::Yaml::Value(Scalar::FloatingPoint(number.as_f64().unwrap_or(f64::NAN).into())),
        },
        Value::String(text) => saphyr::Yaml::Value(Scalar::String(Cow::Owned(text.clone()))),
        Value::Array(items) => saphyr::Yaml::Sequence(items.iter().map(value_to_yaml).collect()),
        Value::Object(map) => {
            let mut mapping = saphyr::Mapping::new();
            for (key, value) in map {
                mapping.insert(
                    saphyr::Yaml::Value(Scalar::String(Cow::Owned(key.clone()))),
                    value_to_yaml(value),
                );
            }
            saphyr::Yaml::Mapping(mapping)
        }
    }
}

#[cfg(test)]
mod yaml_output_tests {
    use super::*;

    #[test]
    fn yaml_output_reads_back_as_the_same_value() {
        let value = serde_json::json!({
            "apiVersion": "v1",
            "metadata": {"name": "x", "labels": {"port": "80", "enabled": "true", "empty": ""}},
            "spec": {"ports": [80, "http"], "order": 10.5, "list": [], "map": {}, "selector": "app == 'web'"}
        });
        let text = to_yaml(&value);
        let documents = parse_documents(&text).unwrap();
        assert_eq!(documents[0].value, value, "{text}");
    }
}
