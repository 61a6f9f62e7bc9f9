//! Previews: a short summary of content (sizes, lines, a sniffed MIME type, head and tail of
//! text, top-level JSON keys), computed in the same pass that hashes the content and stored once
//! per content hash, so a transcript can carry the preview and an id instead of the output.

use serde::{Deserialize, Serialize};

/// At most this many bytes of head and of tail.
pub const PREVIEW_TEXT_BYTES: usize = 512;
/// At most this many lines of head and of tail.
pub const PREVIEW_LINES: usize = 8;
/// At most this many top-level JSON keys.
pub const PREVIEW_JSON_KEYS: usize = 32;
/// Keys longer than this are cut (at a character boundary).
const MAX_KEY_BYTES: usize = 128;

/// A summary of one piece of content. See [`crate::Store::preview`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Preview {
    /// Content length in bytes.
    pub size: u64,
    /// Stored length (after compression); filled in when the preview is read from a store.
    #[serde(default)]
    pub stored_size: u64,
    /// Lines: newline characters, plus one if the content does not end with a newline.
    pub lines: u64,
    /// The sniffed type: `application/json`, `application/x-ndjson`, `text/plain`,
    /// a known binary type (`image/png`, `application/gzip`, ...) or `application/octet-stream`.
    pub mime_type: String,
    /// True if the content is UTF-8 without NUL bytes.
    pub text: bool,
    /// The first lines (at most 8 lines and 512 bytes), for text; lossy UTF-8.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub head: Option<String>,
    /// The last lines (at most 8 lines and 512 bytes), for text longer than the head.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tail: Option<String>,
    /// For a JSON object (or JSON lines of objects: the first record), its top-level keys in
    /// document order, at most 32.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub json_keys: Option<Vec<String>>,
    /// True if there were more top-level keys than listed.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub json_keys_truncated: bool,
}

impl Preview {
    /// The preview of `bytes` (one pass).
    pub fn of(bytes: &[u8]) -> Preview {
        let mut b = PreviewBuilder::new();
        b.update(bytes);
        b.finish()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = vec![crate::keys::RECORD_VERSION];
        // A struct of strings and numbers always serializes.
        v.extend(serde_json::to_vec(self).unwrap_or_default());
        v
    }

    pub(crate) fn decode(b: &[u8]) -> crate::Result<Preview> {
        match b.split_first() {
            Some((&crate::keys::RECORD_VERSION, rest)) => {
                serde_json::from_slice(rest).map_err(|e| crate::Error::Corrupt {
                    what: format!("preview record: {e}"),
                })
            }
            _ => Err(crate::Error::Corrupt {
                what: "preview record of an unknown version".into(),
            }),
        }
    }
}

/// Builds a [`Preview`] from content fed in pieces.
pub(crate) struct PreviewBuilder {
    size: u64,
    newlines: u64,
    last: Option<u8>,
    head: Vec<u8>,
    head_done: bool,
    /// The last bytes seen (a window of `PREVIEW_TEXT_BYTES`).
    tail: Vec<u8>,
    utf8: Utf8State,
    nul: bool,
    json: JsonSniff,
}

impl PreviewBuilder {
    pub(crate) fn new() -> Self {
        Self {
            size: 0,
            newlines: 0,
            last: None,
            head: Vec::new(),
            head_done: false,
            tail: Vec::new(),
            utf8: Utf8State::default(),
            nul: false,
            json: JsonSniff::new(),
        }
    }

    pub(crate) fn update(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        self.size += b.len() as u64;
        self.newlines += b.iter().filter(|&&c| c == b'\n').count() as u64;
        self.last = b.last().copied();
        if !self.head_done {
            let room = 4 * PREVIEW_TEXT_BYTES - self.head.len();
            self.head.extend_from_slice(&b[..room.min(b.len())]);
            self.head_done = self.head.len() >= 4 * PREVIEW_TEXT_BYTES;
        }
        let keep = 4 * PREVIEW_TEXT_BYTES;
        if b.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&b[b.len() - keep..]);
        } else {
            self.tail.extend_from_slice(b);
            if self.tail.len() > keep {
                self.tail.drain(..self.tail.len() - keep);
            }
        }
        if !self.nul && b.contains(&0) {
            self.nul = true;
        }
        self.utf8.update(b);
        self.json.update(b);
    }

    pub(crate) fn finish(self) -> Preview {
        let text = self.utf8.valid_at_end() && !self.nul;
        let lines = self.newlines + u64::from(self.size > 0 && self.last != Some(b'\n'));
        let json = self.json.finish();
        let mime_type = match (sniff_binary(&self.head), text, &json) {
            (Some(m), _, _) => m.to_string(),
            (None, true, Some((kind, _, _))) => kind.to_string(),
            (None, true, None) => "text/plain".to_string(),
            (None, false, _) => "application/octet-stream".to_string(),
        };
        let (head, tail) = if text && self.size > 0 {
            let head = first_lines(&self.head);
            let tail = if self.size as usize > head.len() {
                Some(last_lines(&self.tail, self.size as usize - head.len()))
            } else {
                None
            };
            (Some(head), tail)
        } else {
            (None, None)
        };
        let (json_keys, json_keys_truncated) = match json {
            Some((_, Some(keys), more)) if text => (Some(keys), more),
            _ => (None, false),
        };
        Preview {
            size: self.size,
            stored_size: 0,
            lines,
            mime_type,
            text,
            head,
            tail,
            json_keys,
            json_keys_truncated,
        }
    }
}

/// The first lines of `b`, within the preview's bounds, cut at a character boundary.
fn first_lines(b: &[u8]) -> String {
    let mut end = b.len().min(PREVIEW_TEXT_BYTES);
    if let Some(i) = b[..end]
        .iter()
        .enumerate()
        .filter(|(_, &c)| c == b'\n')
        .nth(PREVIEW_LINES - 1)
        .map(|(i, _)| i + 1)
    {
        end = i;
    }
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    s.trim_end_matches('\u{FFFD}').to_string()
}

/// The last lines of `b` (at most `avail` bytes, so the tail does not overlap the head).
fn last_lines(b: &[u8], avail: usize) -> String {
    let mut start = b.len() - b.len().min(PREVIEW_TEXT_BYTES).min(avail);
    let body = b.strip_suffix(b"\n").unwrap_or(b);
    // Start after the newline that begins the last PREVIEW_LINES lines, if inside the window.
    if let Some(i) = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, &c)| c == b'\n')
        .nth(PREVIEW_LINES - 1)
        .map(|(i, _)| i + 1)
    {
        start = start.max(i);
    }
    let s = String::from_utf8_lossy(&b[start..]).into_owned();
    s.trim_start_matches('\u{FFFD}').to_string()
}

/// Well-known binary signatures.
fn sniff_binary(head: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b", "application/gzip"),
        (b"\x28\xb5\x2f\xfd", "application/zstd"),
        (b"BZh", "application/x-bzip2"),
        (b"\xfd7zXZ\x00", "application/x-xz"),
        (b"\x7fELF", "application/x-elf"),
        (b"\x00asm", "application/wasm"),
        (b"SQLite format 3\x00", "application/vnd.sqlite3"),
        (b"OggS", "audio/ogg"),
        (b"ID3", "audio/mpeg"),
        (b"%!PS", "application/postscript"),
    ];
    for (m, t) in MAGIC {
        if head.starts_with(m) {
            return Some(t);
        }
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Some("application/x-tar");
    }
    None
}

/// UTF-8 validity across piece boundaries.
#[derive(Default)]
struct Utf8State {
    invalid: bool,
    /// An incomplete sequence at the end of the last piece.
    carry: Vec<u8>,
}

impl Utf8State {
    fn update(&mut self, mut b: &[u8]) {
        if self.invalid {
            return;
        }
        // Complete a character split across pieces, one byte at a time.
        while !self.carry.is_empty() {
            let Some((&c, rest)) = b.split_first() else {
                return;
            };
            self.carry.push(c);
            b = rest;
            match std::str::from_utf8(&self.carry) {
                Ok(_) => self.carry.clear(),
                Err(e) if e.error_len().is_some() || self.carry.len() >= 4 => {
                    self.invalid = true;
                    return;
                }
                Err(_) => {}
            }
        }
        if let Err(e) = std::str::from_utf8(b) {
            match e.error_len() {
                Some(_) => self.invalid = true,
                None => self.carry = b[e.valid_up_to()..].to_vec(),
            }
        }
    }

    fn valid_at_end(&self) -> bool {
        !self.invalid && self.carry.is_empty()
    }
}

/// A streaming sniff for JSON and JSON lines: tracks nesting and strings, counts top-level values
/// and collects the first top-level object's keys. It does not validate numbers or literals.
struct JsonSniff {
    failed: bool,
    depth: u32,
    in_string: bool,
    escape: bool,
    /// Top-level values completed, and whether every one after the first began on a new line.
    values: u64,
    newline_since_value: bool,
    separated: bool,
    /// Collecting the first object's keys: the key being read, whether a key is expected next.
    first_object: bool,
    expect_key: bool,
    key: Option<Vec<u8>>,
    keys: Vec<String>,
    more_keys: bool,
    /// Which containers are open: true for an object.
    stack: Vec<bool>,
}

impl JsonSniff {
    fn new() -> Self {
        Self {
            failed: false,
            depth: 0,
            in_string: false,
            escape: false,
            values: 0,
            newline_since_value: false,
            separated: true,
            first_object: false,
            expect_key: false,
            key: None,
            keys: Vec::new(),
            more_keys: false,
            stack: Vec::new(),
        }
    }

    fn update(&mut self, b: &[u8]) {
        for &c in b {
            if self.failed {
                return;
            }
            if self.in_string {
                if let Some(k) = self.key.as_mut() {
                    if (self.escape || c != b'"') && k.len() < MAX_KEY_BYTES + 4 {
                        k.push(c);
                    }
                }
                if self.escape {
                    self.escape = false;
                } else if c == b'\\' {
                    self.escape = true;
                } else if c == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match c {
                b' ' | b'\t' | b'\r' => {}
                b'\n' => {
                    if self.depth == 0 {
                        self.newline_since_value = true;
                    }
                }
                b'{' | b'[' => {
                    if self.depth == 0 {
                        if self.values > 0 && !self.newline_since_value {
                            self.separated = false;
                        }
                        self.first_object = self.values == 0 && c == b'{';
                        self.expect_key = self.first_object;
                    } else if self.depth == 1 && self.first_object {
                        self.expect_key = false;
                    }
                    self.depth += 1;
                    self.stack.push(c == b'{');
                    if self.depth > 512 {
                        self.failed = true;
                    }
                }
                b'}' | b']' => {
                    let want_object = c == b'}';
                    if self.stack.pop() != Some(want_object) {
                        self.failed = true;
                        continue;
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.values += 1;
                        self.newline_since_value = false;
                        self.first_object = false;
                    }
                }
                b'"' => {
                    if self.depth == 0 {
                        self.failed = true;
                        continue;
                    }
                    self.in_string = true;
                    if self.depth == 1 && self.first_object && self.expect_key {
                        self.key = Some(Vec::new());
                    }
                }
                b':' => {
                    if let Some(k) = self.key.take() {
                        if self.keys.len() < PREVIEW_JSON_KEYS {
                            let mut s = String::from_utf8_lossy(&k).into_owned();
                            if s.len() > MAX_KEY_BYTES {
                                let mut cut = MAX_KEY_BYTES;
                                while !s.is_char_boundary(cut) {
                                    cut -= 1;
                                }
                                s.truncate(cut);
                            }
                            self.keys.push(s);
                        } else {
                            self.more_keys = true;
                        }
                    }
                    self.expect_key = false;
                }
                b',' => {
                    if self.depth == 0 {
                        self.failed = true;
                    } else if self.depth == 1 && self.first_object {
                        self.expect_key = true;
                    }
                }
                _ => {
                    if self.depth == 0 {
                        // Top-level scalars: not what we call a JSON document here.
                        self.failed = true;
                    }
                }
            }
        }
    }

    /// The MIME type, the first object's keys (if the first value is an object) and whether keys
    /// were left out; `None` if it does not look like JSON.
    fn finish(self) -> Option<(&'static str, Option<Vec<String>>, bool)> {
        if self.failed || self.in_string || self.depth != 0 || self.values == 0 {
            return None;
        }
        let keys = if self.keys.is_empty() && !self.more_keys {
            None
        } else {
            Some(self.keys)
        };
        if self.values == 1 {
            Some(("application/json", keys, self.more_keys))
        } else if self.separated {
            Some(("application/x-ndjson", keys, self.more_keys))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(b: &[u8], n: usize) -> Preview {
        let mut p = PreviewBuilder::new();
        for c in b.chunks(n.max(1)) {
            p.update(c);
        }
        p.finish()
    }

    #[test]
    fn json_object_keys_and_type() {
        let doc = br#"{"name": "x", "nested": {"inner": 1, "k": [1,2]}, "list": [{"a":1}], "esc\"q": "v:,"}"#;
        for n in [1, 3, 7, 1000] {
            let p = pieces(doc, n);
            assert_eq!(p.mime_type, "application/json", "{n}");
            assert_eq!(
                p.json_keys.as_deref(),
                Some(&["name", "nested", "list", "esc\\\"q"].map(String::from)[..]),
                "{n}"
            );
            assert_eq!(p.lines, 1);
            assert!(p.text);
        }
        let arr = pieces(b"[1, 2, {\"a\": 1}]\n", 2);
        assert_eq!(arr.mime_type, "application/json");
        assert_eq!(arr.json_keys, None);
    }

    #[test]
    fn json_lines_text_and_binary() {
        let jl = b"{\"a\":1,\"b\":2}\n{\"c\":3}\n";
        let p = pieces(jl, 5);
        assert_eq!(p.mime_type, "application/x-ndjson");
        assert_eq!(p.json_keys, Some(vec!["a".into(), "b".into()]));
        assert_eq!(p.lines, 2);
        assert_eq!(pieces(b"{\"a\":1}{\"b\":2}", 4).mime_type, "text/plain");
        assert_eq!(pieces(b"{\"a\":1", 4).mime_type, "text/plain");
        assert_eq!(pieces(b"hello\nworld", 4).mime_type, "text/plain");
        assert_eq!(pieces(b"hello\nworld", 4).lines, 2);
        assert_eq!(pieces(b"", 4).lines, 0);
        assert_eq!(pieces(b"", 4).head, None);
        let png = pieces(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 3);
        assert_eq!(png.mime_type, "image/png");
        assert!(!png.text);
        assert_eq!(png.head, None);
        assert_eq!(pieces(b"a\xffb", 1).mime_type, "application/octet-stream");
        assert_eq!(pieces(b"a\0b", 1).mime_type, "application/octet-stream");
    }

    #[test]
    fn utf8_split_across_pieces_is_still_text() {
        let s = "héllo wörld ✓ 𝄞 end\n".repeat(50);
        for n in 1..9 {
            let p = pieces(s.as_bytes(), n);
            assert!(p.text, "{n}");
            assert_eq!(p.lines, 50);
        }
        // A truncated character at the very end is not valid text.
        let mut b = s.as_bytes().to_vec();
        b.extend_from_slice(&"✓".as_bytes()[..2]);
        assert!(!pieces(&b, 3).text);
    }

    #[test]
    fn head_and_tail_are_bounded_lines() {
        let text: String = (1..=1000).map(|i| format!("line {i}\n")).collect();
        let p = pieces(text.as_bytes(), 333);
        let head = p.head.unwrap();
        assert!(
            head.starts_with("line 1\n") && head.ends_with("line 8\n"),
            "{head}"
        );
        let tail = p.tail.unwrap();
        assert!(
            tail.starts_with("line 993\n") && tail.ends_with("line 1000\n"),
            "{tail}"
        );
        assert_eq!(p.lines, 1000);
        // Short content: no tail repeating the head.
        let p = pieces(b"one\ntwo\n", 3);
        assert_eq!(p.head.as_deref(), Some("one\ntwo\n"));
        assert_eq!(p.tail, None);
        // One huge line: both bounded.
        let big = "x".repeat(100_000);
        let p = pieces(big.as_bytes(), 4096);
        assert!(p.head.unwrap().len() <= PREVIEW_TEXT_BYTES);
        assert!(p.tail.unwrap().len() <= PREVIEW_TEXT_BYTES);
        assert_eq!(
            Preview::decode(&Preview::of(b"{}").encode()).unwrap(),
            Preview::of(b"{}")
        );
    }
}
