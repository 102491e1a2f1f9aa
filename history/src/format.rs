//! Reading and writing histories: our JSON Lines, Jepsen's EDN, and the old
//! Jepsen log-line format.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::str::FromStr;

use crate::text::Text;

use crate::edn::EdnCursor;
use crate::op::{Op, OpType, Process};
use crate::value::Value;
use crate::HistoryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Edn,
    JepsenLog,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "jsonl" | "json" => Ok(Format::Jsonl),
            "edn" => Ok(Format::Edn),
            "jepsen-log" | "log" => Ok(Format::JepsenLog),
            other => Err(format!(
                "unknown format '{other}' (expected auto, jsonl, edn or jepsen-log)"
            )),
        }
    }
}

impl Format {
    /// The format an output file's name asks for.
    pub fn from_extension(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
            "edn" => Some(Format::Edn),
            "log" => Some(Format::JepsenLog),
            _ => None,
        }
    }

    /// Guess the format from the first bytes of a file.
    pub fn detect(head: &[u8]) -> Option<Format> {
        let text = String::from_utf8_lossy(head);
        if text.lines().any(|l| l.contains("jepsen.util - ")) {
            return Some(Format::JepsenLog);
        }
        for line in text.lines() {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with(';') {
                continue;
            }
            if t.starts_with("{\"") || t.starts_with("{ \"") {
                return Some(Format::Jsonl);
            }
            if t.starts_with('[') {
                // `[{"` opens a JSON array of ops, `[{:` an EDN vector of them.
                let line_start = line.as_ptr() as usize - text.as_ptr() as usize;
                let after: String = text[line_start..]
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .skip(1)
                    .take(2)
                    .collect();
                if after == "{\"" || after.starts_with(']') {
                    return Some(Format::Jsonl);
                }
            }
            if t.starts_with(['{', '[', '(', '#']) {
                return Some(Format::Edn);
            }
            return None;
        }
        // Nothing but blanks and comments: an empty history in any format.
        text.trim().is_empty().then_some(Format::Jsonl)
    }
}

/// Calls `sink` with each op read from `path` and the line it starts on.
/// JSON Lines and log files are streamed line by line.
pub fn read_ops(
    path: &Path,
    format: Option<Format>,
    sink: impl FnMut(Op, u32) -> Result<(), HistoryError>,
) -> Result<Format, HistoryError> {
    let name = path.display().to_string();
    let io_err = |e: io::Error| HistoryError::new(&name, None, format!("cannot read: {e}"));
    let reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_err)?);
    read_ops_from(&name, reader, format, sink)
}

/// As [`read_ops`], from any reader; `name` names the input in errors.
pub fn read_ops_from(
    name: &str,
    mut reader: impl BufRead,
    format: Option<Format>,
    mut sink: impl FnMut(Op, u32) -> Result<(), HistoryError>,
) -> Result<Format, HistoryError> {
    let name = name.to_string();
    let io_err = |e: io::Error| HistoryError::new(&name, None, format!("cannot read: {e}"));
    // A UTF-8 byte order mark says nothing a history needs.
    if reader
        .fill_buf()
        .map_err(io_err)?
        .starts_with(b"\xEF\xBB\xBF")
    {
        reader.consume(3);
    }
    let format = match format {
        Some(f) => f,
        None => {
            let head = reader.fill_buf().map_err(io_err)?;
            Format::detect(&head[..head.len().min(64 * 1024)]).ok_or_else(|| {
                HistoryError::new(&name, None, "cannot tell the format (not JSON Lines, EDN or Jepsen log lines); pass --format")
            })?
        }
    };
    match format {
        Format::Jsonl if starts_array(&mut reader).map_err(io_err)? => {
            let text = read_text(&name, reader)?;
            read_json_array(&name, &text, &mut sink)?;
        }
        Format::Jsonl => read_jsonl(&name, reader, &mut sink)?,
        Format::JepsenLog => read_log(&name, reader, &mut sink)?,
        Format::Edn => {
            let text = read_text(&name, reader)?;
            read_edn(&name, &text, &mut sink)?;
        }
    }
    Ok(format)
}

fn read_jsonl(
    name: &str,
    mut reader: impl Read,
    sink: &mut impl FnMut(Op, u32) -> Result<(), HistoryError>,
) -> Result<(), HistoryError> {
    // Read in chunks of whole lines and parse each chunk on all cores; memory
    // stays bounded by the chunk size however long the file is.
    const CHUNK: usize = 4 << 20;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK * 2);
    let mut first_line = 1u32;
    let mut eof = false;
    // How much to have read before cutting at the last newline; grows while
    // one line is longer than that.
    let mut want = CHUNK;
    while !eof || !buf.is_empty() {
        while !eof && buf.len() < want {
            let old = buf.len();
            buf.resize(old + CHUNK, 0);
            let n = reader.read(&mut buf[old..]).map_err(|e| {
                HistoryError::new(name, Some(first_line), format!("cannot read: {e}"))
            })?;
            buf.truncate(old + n);
            eof = n == 0;
        }
        let cut = if eof {
            buf.len()
        } else {
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if buf.len() >= MAX_LINE => {
                    return Err(HistoryError::new(
                        name,
                        Some(first_line),
                        format!("a line longer than {} MiB", MAX_LINE >> 20),
                    ))
                }
                None => {
                    want = buf.len() + CHUNK;
                    continue;
                }
            }
        };
        want = CHUNK;
        let lines: Vec<&[u8]> = buf[..cut].split(|&b| b == b'\n').collect();
        let lines = if lines.last().is_some_and(|l| l.is_empty()) {
            &lines[..lines.len() - 1]
        } else {
            &lines[..]
        };
        let per = lines.len().div_ceil(threads).max(1);
        let parsed: Vec<Vec<Result<Option<Op>, String>>> = std::thread::scope(|s| {
            let handles: Vec<_> = lines
                .chunks(per)
                .map(|part| {
                    s.spawn(move || part.iter().map(|l| parse_json_line(l)).collect::<Vec<_>>())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| vec![Err("the parser panicked".into())])
                })
                .collect()
        });
        for (i, result) in parsed.into_iter().flatten().enumerate() {
            let line_no = first_line + i as u32;
            match result {
                Ok(Some(op)) => sink(op, line_no)?,
                Ok(None) => {}
                Err(problem) => return Err(HistoryError::new(name, Some(line_no), problem)),
            }
        }
        first_line += lines.len() as u32;
        buf.drain(..cut);
    }
    Ok(())
}

/// The longest line a JSON Lines history may hold.
const MAX_LINE: usize = 256 << 20;

/// The most a history read whole (EDN, one JSON array) may hold; beyond
/// it (or from an endless source such as /dev/zero) reading stops with an
/// error instead of taking the machine's memory. JSON Lines has no limit.
const MAX_WHOLE_TEXT: u64 = 2 << 30;

/// The whole text; invalid UTF-8 is an error naming its line.
fn read_text(name: &str, reader: impl Read) -> Result<String, HistoryError> {
    read_text_up_to(name, reader, MAX_WHOLE_TEXT)
}

fn read_text_up_to(name: &str, reader: impl Read, limit: u64) -> Result<String, HistoryError> {
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| HistoryError::new(name, None, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(HistoryError::new(
            name,
            None,
            format!(
                "longer than {} MiB, the most an EDN or JSON-array history may hold (JSON Lines, read line by line, has no such limit)",
                limit >> 20
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let bad = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..bad].iter().filter(|&&b| b == b'\n').count() as u32;
        HistoryError::new(name, Some(line), "invalid UTF-8")
    })
}

/// Whether the text opens with `[`: one JSON array of ops, not JSON Lines.
fn starts_array(reader: &mut impl BufRead) -> io::Result<bool> {
    let head = reader.fill_buf()?;
    Ok(head
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'['))
}

/// A file holding one JSON array of op objects (as elle-cli writes them).
fn read_json_array(
    name: &str,
    text: &str,
    sink: &mut impl FnMut(Op, u32) -> Result<(), HistoryError>,
) -> Result<(), HistoryError> {
    let line_at = |pos: usize| {
        1 + text.as_bytes()[..pos]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u32
    };
    let skip_ws = |mut pos: usize| {
        while text
            .as_bytes()
            .get(pos)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            pos += 1;
        }
        pos
    };
    // Count lines incrementally: `line_at` from the start each time would be quadratic.
    let (mut line, mut counted) = (1u32, 0usize);
    let mut pos = skip_ws(text.find('[').map_or(text.len(), |i| i + 1));
    let mut first = true;
    loop {
        match text.as_bytes().get(pos) {
            None => {
                return Err(HistoryError::new(
                    name,
                    Some(line_at(pos)),
                    "the array of ops is never closed",
                ))
            }
            Some(b']') => break,
            Some(b',') if !first => pos = skip_ws(pos + 1),
            Some(_) if first => {}
            Some(_) => {
                return Err(HistoryError::new(
                    name,
                    Some(line_at(pos)),
                    "expected , or ] between ops",
                ))
            }
        }
        first = false;
        line += text.as_bytes()[counted..pos]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u32;
        counted = pos;
        let mut ops = serde_json::Deserializer::from_str(&text[pos..]).into_iter::<Op>();
        let op = match ops.next() {
            Some(Ok(op)) => op,
            Some(Err(e)) => {
                return Err(HistoryError::new(
                    name,
                    Some(line + e.line() as u32 - 1),
                    format!("not a valid op: {e}"),
                ))
            }
            None => {
                return Err(HistoryError::new(
                    name,
                    Some(line),
                    "the array of ops is never closed",
                ))
            }
        };
        pos = skip_ws(pos + ops.byte_offset());
        sink(op, line)?;
    }
    if skip_ws(pos + 1) < text.len() {
        return Err(HistoryError::new(
            name,
            Some(line_at(pos)),
            "unexpected text after the array of ops",
        ));
    }
    Ok(())
}

fn parse_json_line(line: &[u8]) -> Result<Option<Op>, String> {
    let t = line.trim_ascii();
    if t.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(t)
        .map(Some)
        .map_err(|e| format!("not a valid op: {e}"))
}

/// `INFO  jepsen.util - 3<TAB>:invoke<TAB>:cas<TAB>[1 2]`; other log lines are skipped.
fn read_log(
    name: &str,
    mut reader: impl BufRead,
    sink: &mut impl FnMut(Op, u32) -> Result<(), HistoryError>,
) -> Result<(), HistoryError> {
    const MARK: &str = "jepsen.util - ";
    let mut line = String::new();
    let mut line_no = 0u32;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| HistoryError::new(name, Some(line_no + 1), format!("cannot read: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let Some(at) = line.find(MARK) else { continue };
        let bad = |problem: String| HistoryError::new(name, Some(line_no), problem);
        let rest = line[at + MARK.len()..].trim();
        let (process, rest) =
            split_field(rest).ok_or_else(|| bad("an op line with no process".into()))?;
        let (kind, rest) =
            split_field(rest).ok_or_else(|| bad("an op line with no type".into()))?;
        let (f, rest) =
            split_field(rest).ok_or_else(|| bad("an op line with no function".into()))?;
        let value_text = rest.trim();
        let kind = OpType::parse(kind.trim_start_matches(':')).ok_or_else(|| {
            bad(format!(
                "unknown op type '{kind}' (expected :invoke, :ok, :fail or :info)"
            ))
        })?;
        let value = if value_text.is_empty() {
            Value::Nil
        } else {
            Value::from_edn(value_text)
                .map_err(|e| bad(format!("bad value '{value_text}': {}", e.problem)))?
        };
        let mut op = Op::new(
            Process::from_name(process.trim_start_matches(':')),
            kind,
            f.trim_start_matches(':'),
            value,
        );
        // Old Jepsen wrote the error keyword as a failed or crashed op's value.
        if kind != OpType::Invoke && kind != OpType::Ok {
            if let Value::Keyword(k) = &op.value {
                op.error = Some(Value::Keyword(k.clone()));
            }
        }
        sink(op, line_no)?;
    }
}

/// The first whitespace-separated field of `s` and what follows it.
fn split_field(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

fn read_edn(
    name: &str,
    text: &str,
    sink: &mut impl FnMut(Op, u32) -> Result<(), HistoryError>,
) -> Result<(), HistoryError> {
    let mut cur = EdnCursor::new(text);
    let edn_err = |e: crate::edn::EdnError| HistoryError::new(name, Some(e.line), e.problem);
    // A file is either one vector (or list) of op maps or a sequence of op maps.
    let close = cur.enter_collection();
    loop {
        if let Some(close) = close {
            if cur.at_close(close) {
                break;
            }
        }
        cur.skip_ws();
        let line = cur.line();
        let Some(form) = cur.next_form().map_err(edn_err)? else {
            if close.is_some() {
                return Err(HistoryError::new(
                    name,
                    Some(line),
                    "the vector of ops is never closed",
                ));
            }
            break;
        };
        sink(
            op_from_edn(form).map_err(|p| HistoryError::new(name, Some(line), p))?,
            line,
        )?;
    }
    if cur.skip_ws().is_some() {
        let line = cur.line();
        return Err(HistoryError::new(
            name,
            Some(line),
            "unexpected text after the vector of ops",
        ));
    }
    Ok(())
}

/// Turn an EDN map such as `{:process 0 :type :ok :f :read :value 3}` into an op.
pub fn op_from_edn(form: Value) -> Result<Op, String> {
    let Value::Map(entries) = form else {
        return Err(format!("expected an op map, found {}", short(&form)));
    };
    let mut op = Op::new(
        Process::unspecified(),
        OpType::Invoke,
        crate::op::DEFAULT_F,
        Value::Nil,
    );
    let mut has_type = false;
    for (k, v) in entries {
        let Some(key) = k.as_str() else { continue };
        match key {
            "process" => {
                op.process = match &v {
                    Value::Int(n) if *n >= 0 => Process::Client(*n as u64),
                    Value::Str(s) | Value::Keyword(s) => Process::from_name(s),
                    other => return Err(format!("bad :process {}", short(other))),
                };
            }
            "type" => {
                let t = v.as_str().unwrap_or_default();
                op.kind = OpType::parse(t).ok_or_else(|| {
                    format!(
                        "bad :type {} (expected :invoke, :ok, :fail or :info)",
                        short(&v)
                    )
                })?;
                has_type = true;
            }
            "f" => {
                op.f = match &v {
                    Value::Str(s) | Value::Keyword(s) => s.clone(),
                    Value::Nil => Text::new(crate::op::DEFAULT_F),
                    other => Text::new(&other.to_edn()),
                };
            }
            "value" => op.value = v,
            "index" => {
                op.index = v
                    .as_int()
                    .and_then(|i| u64::try_from(i).ok())
                    .ok_or("bad :index")?
            }
            "time" => op.time = Some(v.as_int().ok_or("bad :time")?),
            "key" => op.key = Some(v),
            "error" => op.error = Some(v),
            "node" => op.node = v.as_str().map(Text::new),
            _ => {}
        }
    }
    if !has_type {
        return Err("an op without :type".into());
    }
    Ok(op)
}

fn short(v: &Value) -> String {
    let mut s = v.to_edn();
    if s.len() > 60 {
        let mut cut = 57;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Writes ops in one of the formats, one at a time.
pub struct OpWriter<W: Write> {
    out: W,
    format: Format,
    buf: String,
}

impl<W: Write> OpWriter<W> {
    pub fn new(out: W, format: Format) -> Self {
        OpWriter {
            out,
            format,
            buf: String::new(),
        }
    }

    pub fn write(&mut self, op: &Op) -> io::Result<()> {
        match self.format {
            Format::Jsonl => {
                serde_json::to_writer(&mut self.out, op)?;
                self.out.write_all(b"\n")
            }
            Format::Edn => {
                self.buf.clear();
                write_edn_op(&mut self.buf, op);
                self.buf.push('\n');
                self.out.write_all(self.buf.as_bytes())
            }
            Format::JepsenLog => {
                self.buf.clear();
                self.buf.push_str("INFO  jepsen.util - ");
                self.buf.push_str(&op.process.to_string());
                self.buf.push_str("\t:");
                self.buf.push_str(op.kind.as_str());
                self.buf.push_str("\t:");
                self.buf.push_str(&op.f);
                self.buf.push('\t');
                match (&op.error, op.kind) {
                    (Some(e), OpType::Fail | OpType::Info) if op.value.is_nil() => {
                        crate::edn::write_value(&mut self.buf, e)
                    }
                    _ => crate::edn::write_value(&mut self.buf, &op.value),
                }
                self.buf.push('\n');
                self.out.write_all(self.buf.as_bytes())
            }
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Micro-op functions are written as keywords, as Elle writes them.
fn keywordize_micro_ops(v: &Value) -> Value {
    match v {
        Value::List(mops)
            if mops.iter().all(
                |m| matches!(m, Value::List(x) if matches!(x.first(), Some(Value::Str(_)))),
            ) =>
        {
            Value::List(
                mops.iter()
                    .map(|m| match m {
                        Value::List(x) => {
                            let mut x = x.clone();
                            if let Value::Str(s) = &x[0] {
                                x[0] = Value::Keyword(s.clone());
                            }
                            Value::List(x)
                        }
                        other => other.clone(),
                    })
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

fn write_edn_op(out: &mut String, op: &Op) {
    use std::fmt::Write;
    let _ = write!(out, "{{:index {}", op.index);
    if let Some(t) = op.time {
        let _ = write!(out, ", :time {t}");
    }
    out.push_str(", :type :");
    out.push_str(op.kind.as_str());
    out.push_str(", :process ");
    match &op.process {
        Process::Client(n) => {
            let _ = write!(out, "{n}");
        }
        Process::Nemesis => out.push_str(":nemesis"),
        Process::Named(s) => crate::edn::write_value(out, &Value::Keyword(s.clone())),
    }
    out.push_str(", :f ");
    crate::edn::write_value(out, &Value::Keyword(op.f.clone()));
    if let Some(k) = &op.key {
        out.push_str(", :key ");
        crate::edn::write_value(out, k);
    }
    out.push_str(", :value ");
    crate::edn::write_value(out, &keywordize_micro_ops(&op.value));
    if let Some(e) = &op.error {
        out.push_str(", :error ");
        let e = match e {
            Value::Str(s) => Value::Keyword(s.clone()),
            other => other.clone(),
        };
        crate::edn::write_value(out, &e);
    }
    if let Some(n) = &op.node {
        out.push_str(", :node ");
        crate::edn::write_value(out, &Value::Str(n.clone()));
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(text: &str, format: Option<Format>) -> Result<Vec<Op>, HistoryError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        std::fs::write(&path, text).unwrap();
        let mut ops = Vec::new();
        read_ops(&path, format, |op, _| {
            ops.push(op);
            Ok(())
        })?;
        Ok(ops)
    }

    #[test]
    fn detects_formats() {
        assert_eq!(Format::detect(b"{\"process\":0}"), Some(Format::Jsonl));
        assert_eq!(Format::detect(b"; c\n[{:process 0}]"), Some(Format::Edn));
        assert_eq!(
            Format::detect(b"{:process 0, :type :invoke}"),
            Some(Format::Edn)
        );
        assert_eq!(
            Format::detect(b"INFO  jepsen.util - 0\t:invoke\t:read\tnil"),
            Some(Format::JepsenLog)
        );
        assert_eq!(Format::detect(b"hello"), None);
        assert_eq!(Format::detect(b"\n"), Some(Format::Jsonl));
    }

    #[test]
    fn reads_log_lines() {
        let ops = read_str(
            "INFO  jepsen.core - starting\nINFO  jepsen.util - 3\t:invoke\t:cas\t[1 2]\nINFO  jepsen.util - 3  :info  :cas  :timed-out\n",
            None,
        )
        .unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].value, Value::list(vec![1.into(), 2.into()]));
        assert_eq!(ops[1].kind, OpType::Info);
        assert_eq!(ops[1].error, Some(Value::Keyword("timed-out".into())));
    }

    #[test]
    fn reads_edn_vector_and_sequence() {
        let v = read_str("; c\n[{:process 0 :type :invoke :f :read :value nil}\n {:process 0 :type :ok :f :read :value 1}]", None).unwrap();
        let s = read_str("{:process 0 :type :invoke :f :read :value nil}\n{:process 0 :type :ok :f :read :value 1}", None).unwrap();
        assert_eq!(v, s);
        assert_eq!(v[1].value, Value::Int(1));
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let e = read_str("{\"process\":0,\"type\":\"invoke\",\"f\":\"read\"}\n{\"process\":0,\"type\":\"okk\",\"f\":\"read\"}\n", None).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().contains(":2: not a valid op"), "{e}");
        let e = read_str(
            "[{:process 0 :type :invoke :f :read}\n{:process 0 :type :bogus :f :read}]",
            None,
        )
        .unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.problem.contains(":type"), "{e}");
        let e = read_str("INFO  jepsen.util - 3\t:invoked\t:cas\t[1 2]\n", None).unwrap_err();
        assert!(e.problem.contains("unknown op type"), "{e}");
        let e = read_str("[{:process 0 :type :invoke :f :read}", None).unwrap_err();
        assert!(e.problem.contains("never closed"), "{e}");
        let e = read_str("[{:process 0 :f :read}]", None).unwrap_err();
        assert!(e.problem.contains("without :type"), "{e}");
    }

    #[test]
    fn a_whole_text_history_beyond_the_limit_is_an_error_not_a_memory_hog() {
        let endless = std::io::repeat(0u8);
        let err = read_text_up_to("zero", endless, 4 << 20).unwrap_err();
        assert!(err.to_string().contains("longer than 4 MiB"), "{err}");
        assert_eq!(read_text_up_to("small", &b"[]"[..], 4 << 20).unwrap(), "[]");
    }
}
