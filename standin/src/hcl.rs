//! A small HCL1 reader for the stand-in: enough of the syntax the real agents
//! read with `hcl.Decode` (attributes, blocks with labels, lists, objects,
//! strings with escapes, heredocs, numbers, bools, `#`, `//` and `/* */`
//! comments) to load the configs the supervisor renders. It produces a JSON
//! value so that JSON and HCL files go through the same checks and merge.
//! It must not try to be a complete HCL implementation.

use serde_json::{Map, Value};

/// A syntax error with the 1-based line and column where it was found.
#[derive(Debug)]
pub struct HclError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl std::fmt::Display for HclError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "At {}:{}: {}", self.line, self.col, self.msg)
    }
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
}

/// Parse an HCL1 document into a JSON object.
pub fn parse(text: &str) -> Result<Value, HclError> {
    let mut p = Parser {
        src: text.as_bytes(),
        pos: 0,
    };
    let obj = p.items(None)?;
    Ok(Value::Object(obj))
}

impl Parser<'_> {
    fn err(&self, msg: impl Into<String>) -> HclError {
        let before = &self.src[..self.pos.min(self.src.len())];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        HclError {
            line,
            col,
            msg: msg.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    /// Skip spaces, newlines, commas between items, and comments.
    fn skip_ws(&mut self, skip_commas: bool) -> Result<(), HclError> {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b',' if skip_commas => self.pos += 1,
                b'#' => self.skip_line(),
                b'/' if self.src.get(self.pos + 1) == Some(&b'/') => self.skip_line(),
                b'/' if self.src.get(self.pos + 1) == Some(&b'*') => {
                    let start = self.pos;
                    self.pos += 2;
                    loop {
                        if self.pos + 1 >= self.src.len() {
                            self.pos = start;
                            return Err(self.err("unterminated comment"));
                        }
                        if self.src[self.pos] == b'*' && self.src[self.pos + 1] == b'/' {
                            self.pos += 2;
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
        Ok(())
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek() {
            self.pos += 1;
            if c == b'\n' {
                break;
            }
        }
    }

    /// Items until `}` (when `close` is set) or end of input.
    fn items(&mut self, close: Option<u8>) -> Result<Map<String, Value>, HclError> {
        let mut out = Map::new();
        loop {
            self.skip_ws(true)?;
            match self.peek() {
                None if close.is_none() => return Ok(out),
                None => return Err(self.err("expected '}' but found end of file")),
                Some(c) if Some(c) == close => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => {}
            }
            let mut keys = vec![self.key()?];
            loop {
                self.skip_inline_ws();
                match self.peek() {
                    Some(b'=') | Some(b':') => {
                        self.pos += 1;
                        self.skip_ws(false)?;
                        let v = self.value()?;
                        insert_path(&mut out, &keys, v);
                        break;
                    }
                    Some(b'{') => {
                        self.pos += 1;
                        let obj = self.items(Some(b'}'))?;
                        insert_path(&mut out, &keys, Value::Object(obj));
                        break;
                    }
                    Some(c) if c == b'"' || is_ident_start(c) => keys.push(self.key()?),
                    _ => return Err(self.err("expected '=' or '{' after key")),
                }
            }
        }
    }

    fn skip_inline_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn key(&mut self) -> Result<String, HclError> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(c) if is_ident_start(c) => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if is_ident(c)) {
                    self.pos += 1;
                }
                Ok(String::from_utf8_lossy(&self.src[start..self.pos]).into_owned())
            }
            _ => Err(self.err("expected a key")),
        }
    }

    fn value(&mut self) -> Result<Value, HclError> {
        match self.peek() {
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b'<') if self.src.get(self.pos + 1) == Some(&b'<') => self.heredoc(),
            Some(b'[') => {
                self.pos += 1;
                let mut list = Vec::new();
                loop {
                    self.skip_ws(false)?;
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Value::Array(list));
                    }
                    list.push(self.value()?);
                    self.skip_ws(false)?;
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {}
                        _ => return Err(self.err("expected ',' or ']' in list")),
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                Ok(Value::Object(self.items(Some(b'}'))?))
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            Some(c) if is_ident_start(c) => {
                let word = self.key()?;
                match word.as_str() {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    _ => Err(self.err(format!("unknown token {word}"))),
                }
            }
            _ => Err(self.err("expected a value")),
        }
    }

    fn number(&mut self) -> Result<Value, HclError> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c == b'-' || c == b'+' || c == b'.' || c == b'e' || c == b'E' || c == b'x' || c.is_ascii_hexdigit())
        {
            self.pos += 1;
        }
        let text = String::from_utf8_lossy(&self.src[start..self.pos]).into_owned();
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(f) = text.parse::<f64>() {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return Ok(Value::Number(n));
            }
        }
        self.pos = start;
        Err(self.err(format!("invalid number {text}")))
    }

    fn string(&mut self) -> Result<String, HclError> {
        let start = self.pos;
        self.pos += 1; // opening quote
        let mut out = Vec::new();
        let mut depth = 0usize; // inside ${ ... } quotes do not end the string
        loop {
            let Some(c) = self.peek() else {
                self.pos = start;
                return Err(self.err("unterminated string"));
            };
            self.pos += 1;
            match c {
                b'"' if depth == 0 => break,
                b'\n' if depth == 0 => {
                    self.pos = start;
                    return Err(self.err("newline in string"));
                }
                b'$' if self.peek() == Some(b'{') => {
                    depth += 1;
                    out.push(c);
                }
                b'}' if depth > 0 => {
                    depth -= 1;
                    out.push(c);
                }
                b'\\' if depth == 0 => {
                    let Some(e) = self.peek() else { continue };
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        other => {
                            out.push(b'\\');
                            out.push(other);
                        }
                    }
                }
                _ => out.push(c),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn heredoc(&mut self) -> Result<Value, HclError> {
        self.pos += 2;
        let indent = if self.peek() == Some(b'-') {
            self.pos += 1;
            true
        } else {
            false
        };
        let start = self.pos;
        while matches!(self.peek(), Some(c) if is_ident(c)) {
            self.pos += 1;
        }
        let marker = String::from_utf8_lossy(&self.src[start..self.pos]).into_owned();
        if marker.is_empty() {
            return Err(self.err("heredoc without marker"));
        }
        self.skip_line();
        let mut lines = Vec::new();
        loop {
            if self.pos >= self.src.len() {
                return Err(self.err(format!("heredoc {marker} not terminated")));
            }
            let ls = self.pos;
            self.skip_line();
            let raw = String::from_utf8_lossy(&self.src[ls..self.pos]).into_owned();
            let line = raw.trim_end_matches(['\n', '\r']);
            if line.trim() == marker {
                break;
            }
            lines.push(if indent {
                line.trim_start().to_string()
            } else {
                line.to_string()
            });
        }
        let mut text = lines.join("\n");
        text.push('\n');
        Ok(Value::String(text))
    }
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.'
}

/// Insert `v` at `keys` (block labels nest); a repeated object key merges,
/// a repeated scalar key is replaced (HCL1 decoding into one struct).
fn insert_path(map: &mut Map<String, Value>, keys: &[String], v: Value) {
    let (first, rest) = keys.split_first().expect("a key path has at least one key");
    if rest.is_empty() {
        match (map.get_mut(first), v) {
            (Some(Value::Object(old)), Value::Object(new)) => {
                for (k, nv) in new {
                    insert_path(old, &[k], nv);
                }
            }
            (_, v) => {
                map.insert(first.clone(), v);
            }
        }
        return;
    }
    let entry = map
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Value::Object(inner) = entry {
        insert_path(inner, rest, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_nomad_style_config() {
        let v = parse(
            r#"
# comment
region = "eu"
datacenter = "ams2" // trailing
/* block
 comment */
server { enabled = true bootstrap_expect = 3 }
client {
  enabled = true
  servers = ["10.0.0.1:4647", "10.0.0.2"]
  meta { rack = "r1" }
}
consul {
  address = "127.0.0.1:8500"
}
ports = { http = 4646, rpc = 4647 }
plugin "raw_exec" { config { enabled = true } }
"#,
        )
        .unwrap();
        assert_eq!(v["region"], json!("eu"));
        assert_eq!(v["server"]["enabled"], json!(true));
        assert_eq!(v["server"]["bootstrap_expect"], json!(3));
        assert_eq!(v["client"]["servers"][1], json!("10.0.0.2"));
        assert_eq!(v["client"]["meta"]["rack"], json!("r1"));
        assert_eq!(v["ports"]["rpc"], json!(4647));
        assert_eq!(v["plugin"]["raw_exec"]["config"]["enabled"], json!(true));
    }

    #[test]
    fn reports_line_of_syntax_error() {
        let e = parse("a = 1\nb = \n}").unwrap_err();
        assert_eq!(e.line, 3);
    }

    #[test]
    fn keeps_interpolation_and_escapes() {
        let v = parse(r#"a = "x${env("Y")}z\n""#).unwrap();
        assert_eq!(v["a"], json!("x${env(\"Y\")}z\n"));
    }

    #[test]
    fn reads_heredoc() {
        let v = parse("a = <<EOF\nline1\nline2\nEOF\nb = 2\n").unwrap();
        assert_eq!(v["a"], json!("line1\nline2\n"));
        assert_eq!(v["b"], json!(2));
    }
}
