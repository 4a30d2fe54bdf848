//! Parser for the header of an `.npy` array: the preamble (magic, version, header length) and
//! the Python dict literal after it (`{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`).
//!
//! Owns [`parse_header`] and [`Header`]. It is written by hand instead of using npyz's reader
//! so that a corrupt header can only produce an error: lengths are bounds-checked before any
//! allocation, the element count is computed with checked arithmetic and nesting is limited.
//! It assumes nothing about the input bytes.

use std::fmt;

/// Headers longer than this are rejected as corrupt (numpy writes a few hundred bytes).
const MAX_HEADER_LEN: usize = 1 << 20;
/// Deepest nesting of tuples/lists/dicts accepted in a header literal.
const MAX_DEPTH: usize = 32;

/// What the header of an `.npy` array says.
#[derive(Debug)]
pub(crate) struct Header {
    /// The `descr` value: a type string such as `<f4`, or a list for structured dtypes.
    pub descr: Value,
    /// The `fortran_order` flag.
    pub fortran_order: bool,
    /// The `shape`, checked to fit `usize` with an element count that fits `usize`.
    pub shape: Vec<usize>,
    /// Number of elements (product of `shape`).
    pub len: usize,
    /// Offset of the first data byte.
    pub data_offset: usize,
}

/// A Python literal as it appears in a header.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
}

impl fmt::Display for Value {
    /// Renders the value back in Python syntax (for error messages).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, items: &[Value]) -> fmt::Result {
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{v}")?;
            }
            Ok(())
        }
        match self {
            Value::Str(s) => write!(f, "'{s}'"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Value::None => f.write_str("None"),
            Value::Tuple(v) if v.len() == 1 => write!(f, "({},)", v[0]),
            Value::Tuple(v) => {
                f.write_str("(")?;
                seq(f, v)?;
                f.write_str(")")
            }
            Value::List(v) => {
                f.write_str("[")?;
                seq(f, v)?;
                f.write_str("]")
            }
            Value::Dict(kv) => {
                f.write_str("{")?;
                for (i, (k, v)) in kv.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Parses the preamble and header dict at the start of `bytes` (a whole `.npy` array).
/// Errors are lowercase reasons without the file name.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a .npy array (bad magic bytes)".into());
    }
    let (len_bytes, start) = match bytes.get(6) {
        Some(1) => (2, 10),
        Some(2 | 3) => (4, 12),
        Some(v) => return Err(format!("unsupported .npy format version {v}")),
        None => return Err("truncated .npy preamble".into()),
    };
    let raw = bytes.get(8..8 + len_bytes).ok_or("truncated .npy preamble")?;
    let header_len = raw.iter().rev().fold(0usize, |acc, &b| acc << 8 | usize::from(b));
    if header_len > MAX_HEADER_LEN {
        return Err(format!("header length {header_len} is implausibly large"));
    }
    let end = start + header_len;
    let text = bytes.get(start..end).ok_or("truncated .npy header")?;
    // Versions 1 and 2 are latin-1; the dict itself is ASCII, so decoding as UTF-8 (version 3)
    // only rejects garbage.
    let text = std::str::from_utf8(text).map_err(|_| "header is not valid text")?;
    let dict = match Parser::new(text).parse_all()? {
        Value::Dict(kv) => kv,
        other => return Err(format!("header is not a dict: {other}")),
    };
    let field = |key: &str| {
        dict.iter().find(|(k, _)| *k == Value::Str(key.into())).map(|(_, v)| v).ok_or_else(|| format!("header has no '{key}' entry"))
    };
    let fortran_order = match field("fortran_order")? {
        Value::Bool(b) => *b,
        other => return Err(format!("header 'fortran_order' is not a bool: {other}")),
    };
    let shape = match field("shape")? {
        Value::Tuple(dims) | Value::List(dims) => dims
            .iter()
            .map(|d| match d {
                Value::Int(i) => usize::try_from(*i).map_err(|_| format!("invalid dimension {i} in shape")),
                other => Err(format!("invalid dimension {other} in shape")),
            })
            .collect::<Result<Vec<usize>, String>>()?,
        other => return Err(format!("header 'shape' is not a tuple: {other}")),
    };
    let len = crate::tensor::shape_len(&shape).ok_or_else(|| format!("shape {shape:?} is too large"))?;
    Ok(Header { descr: field("descr")?.clone(), fortran_order, shape, len, data_offset: end })
}

/// A recursive-descent parser for the Python literals numpy writes in headers.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, pos: 0, depth: 0 }
    }

    fn parse_all(&mut self) -> Result<Value, String> {
        let v = self.value()?;
        self.skip_ws();
        if self.pos != self.src.len() {
            return Err(self.err("unexpected text after the header dict"));
        }
        Ok(v)
    }

    fn err(&self, what: &str) -> String {
        format!("malformed header: {what} at byte {}", self.pos)
    }

    fn skip_ws(&mut self) {
        let rest = &self.src[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.src[self.pos..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some('{') => self.nested(|p| {
                p.items('}', |p| {
                    let k = p.value()?;
                    if !p.eat(':') {
                        return Err(p.err("expected ':'"));
                    }
                    Ok((k, p.value()?))
                })
                .map(Value::Dict)
            }),
            Some('(') => self.nested(|p| p.tuple()),
            Some('[') => self.nested(|p| p.items(']', Parser::value).map(Value::List)),
            Some(q @ ('\'' | '"')) => self.string(q),
            Some(c) if c == '-' || c == '+' || c.is_ascii_digit() => self.int(),
            Some(c) if c.is_ascii_alphabetic() => {
                let rest = &self.src[self.pos..];
                let word_len = rest.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(rest.len());
                let v = match &rest[..word_len] {
                    "True" => Value::Bool(true),
                    "False" => Value::Bool(false),
                    "None" => Value::None,
                    _ => return Err(self.err("unexpected name")),
                };
                self.pos += word_len;
                Ok(v)
            }
            Some(_) => Err(self.err("unexpected character")),
            None => Err(self.err("unexpected end")),
        }
    }

    /// Runs `f` one nesting level deeper, failing past [`MAX_DEPTH`].
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<T, String> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        self.depth += 1;
        self.pos += 1; // the opening bracket
        let r = f(self);
        self.depth -= 1;
        r
    }

    /// Comma-separated items up to `close` (a trailing comma is allowed).
    fn items<T>(&mut self, close: char, mut item: impl FnMut(&mut Self) -> Result<T, String>) -> Result<Vec<T>, String> {
        let mut out = Vec::new();
        loop {
            if self.eat(close) {
                return Ok(out);
            }
            out.push(item(self)?);
            if !self.eat(',') && self.peek() != Some(close) {
                return Err(self.err(&format!("expected ',' or '{close}'")));
            }
        }
    }

    /// A parenthesised tuple; `(x)` without a comma is just `x`, as in Python.
    fn tuple(&mut self) -> Result<Value, String> {
        if self.eat(')') {
            return Ok(Value::Tuple(vec![]));
        }
        let first = self.value()?;
        if self.eat(')') {
            return Ok(first);
        }
        if !self.eat(',') {
            return Err(self.err("expected ',' or ')'"));
        }
        let mut rest = self.items(')', Parser::value)?;
        rest.insert(0, first);
        Ok(Value::Tuple(rest))
    }

    fn string(&mut self, quote: char) -> Result<Value, String> {
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.src[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, e)) => out.push(e),
                    None => break,
                },
                c if c == quote => {
                    self.pos += i + 1;
                    return Ok(Value::Str(out));
                }
                c => out.push(c),
            }
        }
        Err(self.err("unterminated string"))
    }

    fn int(&mut self) -> Result<Value, String> {
        let rest = &self.src[self.pos..];
        let sign_len = usize::from(rest.starts_with(['-', '+']));
        let digits = rest[sign_len..].find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len() - sign_len);
        let text = &rest[..sign_len + digits];
        let v = text.parse::<i128>().map_err(|_| self.err(&format!("bad integer '{text}'")))?;
        self.pos += text.len();
        // Python 2 long suffix, still accepted by numpy.
        if self.src[self.pos..].starts_with('L') {
            self.pos += 1;
        }
        Ok(Value::Int(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b
    }

    #[test]
    fn parses_numpy_headers() {
        let h = parse_header(&npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }   \n")).unwrap();
        assert_eq!((h.descr, h.fortran_order, h.shape, h.len), (Value::Str("<f4".into()), false, vec![2, 3], 6));
        let h = parse_header(&npy("{\"shape\": (), \"fortran_order\": True, \"descr\": \"|b1\"}")).unwrap();
        assert_eq!((h.shape, h.len, h.fortran_order), (vec![], 1, true));
        let h = parse_header(&npy("{'descr': [('a', '<f4'), ('b', '<i8', (2,))], 'fortran_order': False, 'shape': (5L,)}")).unwrap();
        assert_eq!(h.descr.to_string(), "[('a', '<f4'), ('b', '<i8', (2,))]");
        assert_eq!(h.shape, vec![5]);
    }

    #[test]
    fn rejects_bad_headers() {
        let cases = [
            (b"\x93NUMPZ\x01\x00\x00\x00".to_vec(), "bad magic"),
            (b"\x93NUMPY\x01".to_vec(), "truncated"),
            (b"\x93NUMPY\x07\x00\x00\x00".to_vec(), "version 7"),
            (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}"), "invalid dimension -1"),
            (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296)}"), "too large"),
            (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999999999999999999999,)}"), "bad integer"),
            (npy("{'descr': '<f4', 'shape': (1,)}"), "no 'fortran_order'"),
            (npy("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}"), "not a bool"),
            (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x"), "after the header"),
            (npy("{'descr': '<f4"), "unterminated"),
            (npy(&"[".repeat(100)), "too deep"),
            (npy("[1, 2]"), "not a dict"),
        ];
        for (bytes, want) in cases {
            let err = parse_header(&bytes).unwrap_err();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        let mut truncated = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}");
        truncated.truncate(20);
        assert!(parse_header(&truncated).unwrap_err().contains("truncated"));
    }
}
