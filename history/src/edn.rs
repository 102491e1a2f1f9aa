//! A small EDN reader and writer, enough for Jepsen, Knossos and Elle files:
//! maps, vectors, lists, sets, keywords, symbols, strings, numbers, `;`
//! comments, `#_` discards and tagged literals (records such as
//! `#jepsen.history.Op{...}` read as their map).

use crate::text::Text;
use thiserror::Error;

use crate::value::Value;

#[derive(Debug, Error, PartialEq)]
#[error("line {line}: {problem}")]
pub struct EdnError {
    pub line: u32,
    pub problem: String,
}

/// A cursor over EDN text that yields one form at a time, so a file holding a
/// long sequence of maps is never held as one tree.
pub struct EdnCursor<'a> {
    text: &'a [u8],
    pos: usize,
    line: u32,
    /// Forms open around the one being read.
    depth: u32,
}

/// How deeply forms may nest: far more than any history needs, and far
/// less than would overflow the stack reading (or dropping) them.
pub const MAX_DEPTH: u32 = 512;

impl<'a> EdnCursor<'a> {
    pub fn new(text: &'a str) -> Self {
        EdnCursor {
            text: text.as_bytes(),
            pos: 0,
            line: 1,
            depth: 0,
        }
    }

    pub fn line(&self) -> u32 {
        self.line
    }

    fn err<T>(&self, problem: impl Into<String>) -> Result<T, EdnError> {
        Err(EdnError {
            line: self.line,
            problem: problem.into(),
        })
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    /// Skip whitespace, commas and comments; returns the next byte if any.
    pub fn skip_ws(&mut self) -> Option<u8> {
        while let Some(c) = self.peek() {
            match c {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b' ' | b'\t' | b'\r' | b',' => self.pos += 1,
                b';' => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => return Some(c),
            }
        }
        None
    }

    /// If the next form opens a vector or list, step inside it and return the
    /// closing delimiter to look for; otherwise leave the cursor where it is.
    pub fn enter_collection(&mut self) -> Option<u8> {
        match self.skip_ws()? {
            b'[' => {
                self.pos += 1;
                Some(b']')
            }
            b'(' => {
                self.pos += 1;
                Some(b')')
            }
            _ => None,
        }
    }

    /// True (and consumed) when the next non-blank byte is `close`.
    pub fn at_close(&mut self, close: u8) -> bool {
        if self.skip_ws() == Some(close) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Read the next form; `None` at the end of the input.
    pub fn next_form(&mut self) -> Result<Option<Value>, EdnError> {
        loop {
            let Some(c) = self.skip_ws() else {
                return Ok(None);
            };
            if c == b'#' && self.text.get(self.pos + 1) == Some(&b'_') {
                self.pos += 2;
                self.read_form()?;
                continue;
            }
            return self.read_form().map(Some);
        }
    }

    fn read_form(&mut self) -> Result<Value, EdnError> {
        if self.depth >= MAX_DEPTH {
            return self.err(format!("forms nested more than {MAX_DEPTH} deep"));
        }
        self.depth += 1;
        let form = self.read_form_here();
        self.depth -= 1;
        form
    }

    fn read_form_here(&mut self) -> Result<Value, EdnError> {
        let Some(c) = self.skip_ws() else {
            return self.err("unexpected end of input");
        };
        match c {
            b'[' | b'(' => {
                self.pos += 1;
                let close = if c == b'[' { b']' } else { b')' };
                Ok(Value::list(self.read_seq(close)?))
            }
            b'{' => {
                self.pos += 1;
                self.read_map()
            }
            b'"' => {
                self.pos += 1;
                self.read_string()
            }
            b'#' => {
                self.pos += 1;
                match self.peek() {
                    Some(b'{') => {
                        self.pos += 1;
                        Ok(Value::set(self.read_seq(b'}')?))
                    }
                    Some(b'_') => {
                        self.pos += 1;
                        self.read_form()?;
                        self.read_form()
                    }
                    Some(_) => {
                        // A tagged literal: `#inst "..."`, `#uuid "..."`, a record.
                        // The tag carries no meaning for a history, so read the form it tags.
                        let tag = self.read_token();
                        if tag.is_empty() {
                            return self.err("a '#' that starts no tag, set or discard");
                        }
                        self.read_form()
                    }
                    None => self.err("unexpected end of input after '#'"),
                }
            }
            b':' => {
                self.pos += 1;
                let tok = self.read_token();
                if tok.is_empty() {
                    return self.err("an empty keyword");
                }
                Ok(Value::Keyword(Text::from(tok)))
            }
            b'\\' => {
                self.pos += 1;
                let tok = self.read_token();
                let ch = match tok {
                    "newline" => "\n",
                    "space" => " ",
                    "tab" => "\t",
                    "return" => "\r",
                    t if t.chars().count() == 1 => t,
                    "" => {
                        // `\(` and other punctuation characters: one whole character.
                        let Some(&lead) = self.text.get(self.pos) else {
                            return self.err("a character literal without its character");
                        };
                        // The text is UTF-8: the lead byte gives the length.
                        let len = match lead {
                            0..=0x7f => 1,
                            0xc0..=0xdf => 2,
                            0xe0..=0xef => 3,
                            _ => 4,
                        };
                        let s = self.pos;
                        self.pos = (s + len).min(self.text.len());
                        std::str::from_utf8(&self.text[s..self.pos]).unwrap_or("?")
                    }
                    t => return self.err(format!("unknown character literal \\{t}")),
                };
                Ok(Value::Str(Text::from(ch)))
            }
            b')' | b']' | b'}' => self.err(format!("unexpected '{}'", c as char)),
            _ => {
                let tok = self.read_token();
                if tok.is_empty() {
                    return self.err(format!("unexpected character '{}'", c as char));
                }
                self.atom(tok)
            }
        }
    }

    fn read_seq(&mut self, close: u8) -> Result<Vec<Value>, EdnError> {
        let start_line = self.line;
        let mut items = Vec::new();
        loop {
            match self.skip_ws() {
                None => {
                    return Err(EdnError {
                        line: start_line,
                        problem: format!("'{}' opened here is never closed", opener(close)),
                    })
                }
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                Some(b'#') if self.text.get(self.pos + 1) == Some(&b'_') => {
                    self.pos += 2;
                    self.read_form()?;
                }
                Some(_) => items.push(self.read_form()?),
            }
        }
    }

    fn read_map(&mut self) -> Result<Value, EdnError> {
        let start_line = self.line;
        let items = self.read_seq(b'}')?;
        if items.len() % 2 != 0 {
            return Err(EdnError {
                line: start_line,
                problem: "a map with an odd number of forms".into(),
            });
        }
        let mut entries = thin_vec::ThinVec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }

    fn read_string(&mut self) -> Result<Value, EdnError> {
        let start_line = self.line;
        let mut out = String::new();
        let mut run_start = self.pos;
        loop {
            let Some(c) = self.peek() else {
                return Err(EdnError {
                    line: start_line,
                    problem: "a string that is never closed".into(),
                });
            };
            match c {
                b'"' => {
                    out.push_str(self.slice(run_start, self.pos));
                    self.pos += 1;
                    return Ok(Value::Str(Text::from(out)));
                }
                b'\\' => {
                    out.push_str(self.slice(run_start, self.pos));
                    self.pos += 1;
                    let esc = self.peek();
                    self.pos += 1;
                    match esc {
                        Some(b'n') => out.push('\n'),
                        Some(b't') => out.push('\t'),
                        Some(b'r') => out.push('\r'),
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'u') => {
                            let hex = self.text.get(self.pos..self.pos + 4).unwrap_or_default();
                            let code = std::str::from_utf8(hex)
                                .ok()
                                .and_then(|h| u32::from_str_radix(h, 16).ok());
                            match code.and_then(char::from_u32) {
                                Some(ch) => out.push(ch),
                                None => return self.err("a bad \\u escape in a string"),
                            }
                            self.pos += 4;
                        }
                        _ => return self.err("an unknown escape in a string"),
                    }
                    run_start = self.pos;
                }
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                _ => self.pos += 1,
            }
        }
    }

    fn slice(&self, a: usize, b: usize) -> &'a str {
        // Input came from a &str and we only split at ASCII bytes.
        std::str::from_utf8(&self.text[a..b]).unwrap_or("")
    }

    fn read_token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace()
                || matches!(
                    c,
                    b',' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'"' | b';'
                )
            {
                break;
            }
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    fn atom(&self, tok: &str) -> Result<Value, EdnError> {
        match tok {
            "nil" => return Ok(Value::Nil),
            "true" => return Ok(Value::Bool(true)),
            "false" => return Ok(Value::Bool(false)),
            _ => {}
        }
        let first = tok.as_bytes()[0];
        let numeric = first.is_ascii_digit()
            || ((first == b'-' || first == b'+')
                && tok.len() > 1
                && tok.as_bytes()[1].is_ascii_digit());
        if !numeric {
            // A symbol; histories use them rarely and only as names.
            return Ok(Value::Str(Text::from(tok)));
        }
        let body = tok.strip_suffix('N').unwrap_or(tok);
        if let Ok(i) = body.parse::<i64>() {
            return Ok(Value::Int(i));
        }
        let body = tok.strip_suffix('M').unwrap_or(tok);
        if let Ok(f) = body.parse::<f64>() {
            return Ok(Value::Float(f));
        }
        if let Some((n, d)) = tok.split_once('/') {
            if let (Ok(n), Ok(d)) = (n.parse::<f64>(), d.parse::<f64>()) {
                return Ok(Value::Float(n / d));
            }
        }
        self.err(format!("a malformed number '{tok}'"))
    }
}

fn opener(close: u8) -> char {
    match close {
        b']' => '[',
        b')' => '(',
        _ => '{',
    }
}

/// Parse exactly one EDN value.
pub fn parse_value(text: &str) -> Result<Value, EdnError> {
    let mut cur = EdnCursor::new(text);
    let Some(v) = cur.next_form()? else {
        return cur.err("no value");
    };
    if cur.skip_ws().is_some() {
        return cur.err("more than one value");
    }
    Ok(v)
}

fn is_keyword_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'_' | b'.' | b'/' | b'?' | b'!' | b'*' | b'+' | b'<' | b'>' | b'='
                )
        })
}

/// Write a value as EDN.
pub fn write_value(out: &mut String, v: &Value) {
    use std::fmt::Write;
    match v {
        Value::Nil => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => {
            if f.is_finite() && f.fract() == 0.0 {
                let _ = write!(out, "{f:.1}");
            } else {
                let _ = write!(out, "{f}");
            }
        }
        Value::Keyword(k) if is_keyword_safe(k) => {
            out.push(':');
            out.push_str(k);
        }
        Value::Str(s) | Value::Keyword(s) => write_string(out, s),
        Value::List(items) => {
            out.push('[');
            write_items(out, items);
            out.push(']');
        }
        Value::Set(items) => {
            out.push_str("#{");
            write_items(out, items);
            out.push('}');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, k);
                out.push(' ');
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

fn write_items(out: &mut String, items: &[Value]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_value(out, item);
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_forms() {
        let v = parse_value(
            r#"{:type :ok, :value [[:append 1 2] [:r 1 [1 2]]] :s #{3 1} :m "a}b" ; c
            :n -4 :f 1.5 :big 12N}"#,
        )
        .unwrap();
        assert_eq!(
            v.map_get(&Value::Keyword("type".into())),
            Some(&Value::Keyword("ok".into()))
        );
        assert_eq!(
            v.map_get(&"s".into()),
            Some(&Value::set(vec![1.into(), 3.into()]))
        );
        assert_eq!(v.map_get(&"m".into()), Some(&"a}b".into()));
        assert_eq!(v.map_get(&"n".into()), Some(&Value::Int(-4)));
        assert_eq!(v.map_get(&"big".into()), Some(&Value::Int(12)));
        assert_eq!(v.map_get(&"f".into()), Some(&Value::Float(1.5)));
    }

    #[test]
    fn records_and_discards() {
        let v = parse_value("#jepsen.history.Op{:index 3 #_ :skipped :f :read}").unwrap();
        assert_eq!(v.map_get(&"index".into()), Some(&Value::Int(3)));
        assert_eq!(v.map_get(&"f".into()), Some(&"read".into()));
    }

    #[test]
    fn a_backslash_at_the_end_is_an_error_not_a_crash() {
        // Found by the history_edn fuzz target.
        assert!(parse_value("\\").is_err());
        assert!(parse_value("{n\"n\"1\n[\\").is_err());
        assert_eq!(parse_value("\\(").unwrap(), Value::Str(Text::from("(")));
        assert_eq!(parse_value("\\é").unwrap(), Value::Str(Text::from("é")));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_value("[1 2\n 3").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.problem.contains("never closed"), "{}", e.problem);
        let e = parse_value("{:a\n\n 1 :b}").unwrap_err();
        assert!(e.problem.contains("odd"), "{}", e.problem);
    }

    #[test]
    fn writes_back() {
        let text = r#"[:append 1 "x \"y\""] #{1 2} {:a nil}"#;
        let mut cur = EdnCursor::new(text);
        let mut out = Vec::new();
        while let Some(v) = cur.next_form().unwrap() {
            out.push(v.to_edn());
        }
        assert_eq!(out.join(" "), text);
    }
}
