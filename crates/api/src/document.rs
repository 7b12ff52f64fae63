//! Reading YAML/JSON text into plain values while remembering where every value came from.
//!
//! Documents are parsed with `saphyr` (YAML 1.2, a superset of JSON) into marked nodes, then
//! converted to `serde_json::Value` together with an index from field path to line and column.
//! Typed deserialization and validation both report a field path; the index turns it into a
//! position, so every error names file, line, column and field.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
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
    check_block_nesting(text)?;
    let nodes = MarkedYaml::load_from_str(text).map_err(|error| {
        let marker = error.marker();
        SyntaxError {
            position: Position {
                line: marker.line(),
                column: marker.col() + 1,
            },
            message: error.info().to_string(),
        }
    })?;
    let mut documents = Vec::new();
    for node in &nodes {
        let mut positions = HashMap::new();
        let value = convert(node, String::new(), &mut positions)?;
        if value.is_null() {
            continue;
        }
        documents.push(Document {
            value,
            start: position_from(node),
            positions,
        });
    }
    Ok(documents)
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
        let bytes = line.as_bytes();
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
