//! Reading manifest files: the files below a directory, a file's hash, and
//! its objects, one YAML document at a time, with errors naming file and line.

use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::FileError;

pub(super) fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // editors' swap files, .git, kubectl's hidden dirs
        }
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            collect_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

pub(super) fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

pub(super) fn open(path: &Path) -> Result<BufReader<File>, FileError> {
    File::open(path).map(BufReader::new).map_err(|e| FileError {
        path: path.display().to_string(),
        line: 0,
        message: format!("cannot read: {e}"),
    })
}

/// The hash [`visit_objects`] returns for the same bytes, read in small
/// pieces (a streaming hasher: the pieces' sizes do not matter).
pub(super) fn hash_file(path: &Path) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
    let mut h = DefaultHasher::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(h.finish()),
            Ok(n) => h.write(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Parses one manifest file into its objects (documents; `kind: List` items
/// are flattened). Every object gets a content-derived resourceVersion so the
/// index can tell a changed object from an unchanged one.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<Vec<Value>, FileError> {
    let mut out = Vec::new();
    visit_objects(path, bytes, &mut |obj, _| out.push(obj))?;
    Ok(out)
}

/// Calls `f` with every object of a manifest and the hash of the object's
/// content; returns the hash of the manifest's bytes (as [`hash_file`]).
/// Each object gets a content-derived resourceVersion (unless it has one).
/// Stops at the first error.
///
/// YAML is read one document at a time: a file of thousands of objects
/// never exists in memory as a whole, not even as text (a large transient
/// buffer is what the allocator would keep). Lines starting with `---` or
/// `...` end a document; YAML forbids them inside one.
///
/// Hand-written on purpose: `serde-saphyr` reads a whole text (or a reader)
/// into documents but gives no per-document line offsets for a stream, and
/// this splitter is what kept the interceptor's RSS with a 10,000-route file
/// at ~39 MiB instead of ~200 MiB (BENCHMARKS.md, "Memory"); each document it
/// cuts is parsed by the library (`api::yaml`).
pub(super) fn visit_objects(
    path: &Path,
    mut reader: impl BufRead,
    f: &mut dyn FnMut(Value, u64),
) -> Result<u64, FileError> {
    let error = |line: usize, message: String| FileError {
        path: path.display().to_string(),
        line,
        message,
    };
    let mut emit = |mut obj: Value| {
        let hash = hash_bytes(obj.to_string().as_bytes());
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.entry("resourceVersion")
                .or_insert_with(|| Value::String(format!("f{hash:x}")));
        }
        f(obj, hash);
    };
    let mut hasher = DefaultHasher::new();
    if path.extension().and_then(|e| e.to_str()) == Some("json") {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| error(0, format!("cannot read: {e}")))?;
        hasher.write(&bytes);
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| error(e.line(), e.to_string()))?;
        drop(bytes);
        flatten(v, 1, path, &mut emit)?;
        return Ok(hasher.finish());
    }
    let mut line = Vec::new();
    let mut doc = Vec::new();
    // 1-based line number of `doc`'s first line, lines read, documents seen.
    let (mut doc_line, mut lines, mut docs) = (1, 0, 0);
    let mut has_content = false;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| error(lines + 1, format!("cannot read: {e}")))?;
        hasher.write(&line);
        let marker = is_document_marker(&line);
        // `---` starts the next document, unless nothing but comments and
        // directives came before it.
        if n == 0 || (marker && line.starts_with(b"---") && has_content) {
            parse_documents(path, &doc, doc_line, &mut docs, &mut emit)?;
            doc.clear();
            has_content = false;
            doc_line = lines + 1;
        }
        if n == 0 {
            return Ok(hasher.finish());
        }
        lines += 1;
        doc.extend_from_slice(&line);
        has_content |= marker || is_content(&line);
        if marker && line.starts_with(b"...") {
            parse_documents(path, &doc, doc_line, &mut docs, &mut emit)?;
            doc.clear();
            has_content = false;
            doc_line = lines + 1;
        }
    }
}

/// `---` or `...` at the start of a line, alone or followed by a space.
fn is_document_marker(line: &[u8]) -> bool {
    (line.starts_with(b"---") || line.starts_with(b"..."))
        && matches!(line.get(3), None | Some(b' ' | b'\t' | b'\r' | b'\n'))
}

/// Not blank, a comment or a directive.
fn is_content(line: &[u8]) -> bool {
    match line.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'#') => false,
        Some(_) => line[0] != b'%',
    }
}

/// Parses the YAML text of (normally) one document that starts on line
/// `first_line` of the file.
fn parse_documents(
    path: &Path,
    text: &[u8],
    first_line: usize,
    docs: &mut usize,
    emit: &mut dyn FnMut(Value),
) -> Result<(), FileError> {
    let error = |line: usize, message: String| FileError {
        path: path.display().to_string(),
        line,
        message,
    };
    let text = std::str::from_utf8(text).map_err(|e| {
        error(
            first_line - 1 + line_of_offset(text, e.valid_up_to()),
            "not UTF-8".to_string(),
        )
    })?;
    let values = api::yaml::documents(text)
        .map_err(|e| error(e.line.map_or(0, |l| first_line - 1 + l), e.message))?;
    for v in values {
        *docs += 1;
        flatten(v, *docs, path, emit)?;
    }
    Ok(())
}

fn flatten(
    v: Value,
    doc_no: usize,
    path: &Path,
    emit: &mut dyn FnMut(Value),
) -> Result<(), FileError> {
    let error = |message: String| FileError {
        path: path.display().to_string(),
        line: 0,
        message,
    };
    let Value::Object(mut map) = v else {
        return Err(error(format!("document {doc_no} is not an object")));
    };
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k.ends_with("List") && map.contains_key("items") => {
            if let Some(Value::Array(items)) = map.remove("items") {
                for item in items {
                    flatten(item, doc_no, path, emit)?;
                }
            }
            Ok(())
        }
        Some(_) => {
            emit(Value::Object(map));
            Ok(())
        }
        None => Err(error(format!("document {doc_no} has no kind"))),
    }
}

fn line_of_offset(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole stream parsed at once by the YAML library: what the
    /// per-document reader must reproduce.
    fn whole(text: &str) -> Vec<Value> {
        api::yaml::documents(text).unwrap()
    }

    fn without_rv(mut objects: Vec<Value>) -> Vec<Value> {
        for o in &mut objects {
            o["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
        }
        objects
    }

    #[test]
    fn documents_read_one_at_a_time_equal_the_whole_stream() {
        let text = "# leading comment\n%YAML 1.2\n---\nkind: A\nmetadata: {name: a}\n\
                    text: |\n  --- not a marker (indented)\n---\n# between\n\n\
                    kind: B\nmetadata: {name: b}\n...\n---\n--- {kind: C, metadata: {name: c}}\n\
                    ---\r\nkind: D\r\nmetadata: {name: d}\r\nx: ---not-a-marker\r\n---\n";
        let got = parse_file(Path::new("t.yaml"), text.as_bytes()).unwrap();
        assert_eq!(without_rv(got), whole(text));
    }

    #[test]
    fn the_streamed_hash_equals_the_file_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        let text =
            "---\nkind: A\nmetadata: {name: a}\n---\nkind: B\nmetadata: {name: b}\n".repeat(2000);
        std::fs::write(&path, &text).unwrap();
        let streamed = visit_objects(&path, text.as_bytes(), &mut |_, _| {}).unwrap();
        assert_eq!(streamed, hash_file(&path).unwrap());
    }

    #[test]
    fn an_error_in_a_later_document_names_its_line_in_the_file() {
        let text = "kind: A\nmetadata: {name: a}\n---\nkind: B\nmetadata:\n  name: b\n   bad: [\n";
        let err = parse_file(Path::new("t.yaml"), text.as_bytes()).unwrap_err();
        assert!(err.line >= 6, "{err}");
        let err =
            parse_file(Path::new("t.yaml"), b"kind: A\n---\nkind: B\n---\n- 1\n").unwrap_err();
        assert!(err.message.contains("document 3"), "{err}");
    }
}
