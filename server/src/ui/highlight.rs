//! A small syntax highlighter, run on the server so that it works without JavaScript: it marks
//! comments, strings, numbers and keywords of common languages, and the lines of a diff, one
//! line at a time (a line range of a large file is highlighted without the rest). It never
//! produces markup from the text itself: every piece is escaped by the template.

use maud::{html, Markup};

/// A language the highlighter knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Not highlighted.
    Plain,
    /// Unified diffs and patches: whole lines marked.
    Diff,
    /// Rust.
    Rust,
    /// Python.
    Python,
    /// JavaScript and TypeScript.
    Js,
    /// Shell scripts.
    Shell,
    /// C, C++, Go, Java and the like.
    CLike,
    /// JSON (strings, numbers, literals).
    Json,
    /// TOML, YAML, INI.
    Config,
}

impl Lang {
    /// The language for a file name and MIME type, `Plain` when not known.
    pub fn detect(name: &str, mime: Option<&str>) -> Lang {
        let ext = name
            .rsplit('/')
            .next()
            .and_then(|f| f.rsplit_once('.'))
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "diff" | "patch" => Lang::Diff,
            "rs" => Lang::Rust,
            "py" | "pyi" => Lang::Python,
            "js" | "mjs" | "cjs" | "ts" | "tsx" | "jsx" => Lang::Js,
            "sh" | "bash" | "zsh" => Lang::Shell,
            "c" | "h" | "cc" | "cpp" | "hpp" | "go" | "java" | "kt" | "cs" | "swift" => Lang::CLike,
            "json" | "jsonl" | "ndjson" => Lang::Json,
            "toml" | "yaml" | "yml" | "ini" | "cfg" => Lang::Config,
            _ => match mime.unwrap_or("") {
                "text/x-diff" | "text/x-patch" => Lang::Diff,
                "text/x-python" => Lang::Python,
                "text/x-rust" => Lang::Rust,
                "application/javascript" | "text/javascript" => Lang::Js,
                "application/json" | "application/x-ndjson" => Lang::Json,
                "text/x-shellscript" => Lang::Shell,
                _ => Lang::Plain,
            },
        }
    }

    fn keywords(self) -> &'static [&'static str] {
        match self {
            Lang::Rust => &[
                "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else",
                "enum", "extern", "false", "fn", "for", "if", "impl", "in", "let", "loop", "match",
                "mod", "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct",
                "super", "trait", "true", "type", "unsafe", "use", "where", "while",
            ],
            Lang::Python => &[
                "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class",
                "continue", "def", "del", "elif", "else", "except", "finally", "for", "from",
                "global", "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass",
                "raise", "return", "self", "try", "while", "with", "yield",
            ],
            Lang::Js => &[
                "async",
                "await",
                "break",
                "case",
                "catch",
                "class",
                "const",
                "continue",
                "default",
                "delete",
                "do",
                "else",
                "export",
                "extends",
                "false",
                "finally",
                "for",
                "from",
                "function",
                "if",
                "import",
                "in",
                "instanceof",
                "interface",
                "let",
                "new",
                "null",
                "of",
                "return",
                "switch",
                "this",
                "throw",
                "true",
                "try",
                "type",
                "typeof",
                "undefined",
                "var",
                "void",
                "while",
                "yield",
            ],
            Lang::Shell => &[
                "case", "do", "done", "elif", "else", "esac", "export", "fi", "for", "function",
                "if", "in", "local", "return", "then", "until", "while",
            ],
            Lang::CLike => &[
                "break",
                "case",
                "class",
                "const",
                "continue",
                "default",
                "defer",
                "do",
                "else",
                "enum",
                "extends",
                "false",
                "final",
                "for",
                "func",
                "go",
                "if",
                "import",
                "int",
                "interface",
                "new",
                "nil",
                "null",
                "package",
                "private",
                "protected",
                "public",
                "return",
                "static",
                "struct",
                "switch",
                "this",
                "true",
                "try",
                "catch",
                "type",
                "var",
                "void",
                "while",
            ],
            Lang::Json | Lang::Config => &["true", "false", "null"],
            Lang::Plain | Lang::Diff => &[],
        }
    }

    fn line_comment(self) -> &'static [&'static str] {
        match self {
            Lang::Rust | Lang::Js | Lang::CLike => &["//"],
            Lang::Python | Lang::Shell | Lang::Config => &["#"],
            _ => &[],
        }
    }

    fn block_comments(self) -> bool {
        matches!(self, Lang::Rust | Lang::Js | Lang::CLike)
    }
}

/// One line, highlighted.
pub fn line(lang: Lang, text: &str) -> Markup {
    if lang == Lang::Plain {
        return html! { (text) };
    }
    if lang == Lang::Diff {
        let class = if text.starts_with("+++") || text.starts_with("---") {
            "hl-meta"
        } else if text.starts_with('+') {
            "hl-add"
        } else if text.starts_with('-') {
            "hl-del"
        } else if text.starts_with("@@") {
            "hl-hunk"
        } else if text.starts_with("diff ") || text.starts_with("index ") {
            "hl-meta"
        } else {
            ""
        };
        return html! { span class=(class) { (text) } };
    }
    let pieces = tokens(lang, text);
    html! {
        @for (class, t) in &pieces {
            @if let Some(c) = class { span class=(c) { (t) } } @else { (t) }
        }
    }
}

/// Splits a line into (class, text) pieces; `None` is plain text.
pub fn tokens(lang: Lang, text: &str) -> Vec<(Option<&'static str>, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<(Option<&'static str>, String)> = Vec::new();
    let mut push = |class: Option<&'static str>, s: String| {
        if let (None, Some((None, last))) = (class, out.last_mut()) {
            last.push_str(&s);
        } else {
            out.push((class, s));
        }
    };
    let rest = |i: usize| chars[i..].iter().collect::<String>();
    let starts = |i: usize, p: &str| {
        p.chars()
            .enumerate()
            .all(|(k, pc)| chars.get(i + k) == Some(&pc))
    };
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if lang.line_comment().iter().any(|p| starts(i, p)) {
            push(Some("hl-com"), rest(i));
            break;
        }
        if lang.block_comments() && starts(i, "/*") {
            let mut j = i + 2;
            while j < chars.len() && !starts(j, "*/") {
                j += 1;
            }
            let end = (j + 2).min(chars.len());
            push(Some("hl-com"), chars[i..end].iter().collect());
            i = end;
            continue;
        }
        if c == '"' || c == '\'' || (c == '`' && lang == Lang::Js) {
            // A Rust lifetime or char literal is too close to a quote: only strings close.
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                if chars[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            if lang == Lang::Rust && c == '\'' && j >= chars.len() {
                push(None, c.to_string());
                i += 1;
                continue;
            }
            let end = (j + 1).min(chars.len());
            push(Some("hl-str"), chars[i..end].iter().collect());
            i = end;
            continue;
        }
        if c.is_ascii_digit() && (i == 0 || !is_ident(chars[i - 1])) {
            let mut j = i;
            while j < chars.len() && (is_ident(chars[j]) || chars[j] == '.') {
                j += 1;
            }
            push(Some("hl-num"), chars[i..j].iter().collect());
            i = j;
            continue;
        }
        if is_ident(c) {
            let mut j = i;
            while j < chars.len() && is_ident(chars[j]) {
                j += 1;
            }
            let word: String = chars[i..j].iter().collect();
            if lang.keywords().contains(&word.as_str()) {
                push(Some("hl-kw"), word);
            } else {
                push(None, word);
            }
            i = j;
            continue;
        }
        push(None, c.to_string());
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_come_from_names_and_types() {
        assert_eq!(Lang::detect("src/main.rs", None), Lang::Rust);
        assert_eq!(Lang::detect("patch.diff", None), Lang::Diff);
        assert_eq!(Lang::detect("a/b.PY", None), Lang::Python);
        assert_eq!(Lang::detect("out", Some("application/json")), Lang::Json);
        assert_eq!(Lang::detect("notes.txt", None), Lang::Plain);
        assert_eq!(Lang::detect("v1.2/README", None), Lang::Plain);
    }

    #[test]
    fn python_pieces_are_classified() {
        let t = tokens(Lang::Python, "def f(x): return \"a#b\" + 42  # done");
        assert_eq!(t[0], (Some("hl-kw"), "def".to_string()));
        assert!(
            t.contains(&(Some("hl-str"), "\"a#b\"".to_string())),
            "{t:?}"
        );
        assert!(t.contains(&(Some("hl-num"), "42".to_string())));
        assert_eq!(t.last().unwrap(), &(Some("hl-com"), "# done".to_string()));
        let joined: String = t.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            joined, "def f(x): return \"a#b\" + 42  # done",
            "nothing lost"
        );
    }

    #[test]
    fn rust_lifetimes_and_comments() {
        let t = tokens(Lang::Rust, "fn a<'x>(s: &'x str) /* c */ -> u8 { 1 }");
        let joined: String = t.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(joined, "fn a<'x>(s: &'x str) /* c */ -> u8 { 1 }");
        assert!(
            t.contains(&(Some("hl-com"), "/* c */".to_string())),
            "{t:?}"
        );
    }

    #[test]
    fn markup_in_code_is_escaped_and_diffs_are_marked() {
        let h = line(Lang::Js, "x = '<script>alert(1)</script>'").into_string();
        assert!(h.contains("&lt;script&gt;"), "{h}");
        assert!(!h.contains("<script>"));
        assert!(line(Lang::Diff, "+added").into_string().contains("hl-add"));
        assert!(line(Lang::Diff, "-gone").into_string().contains("hl-del"));
        assert!(line(Lang::Diff, "--- a/x")
            .into_string()
            .contains("hl-meta"));
        assert!(line(Lang::Diff, "@@ -1 +1 @@")
            .into_string()
            .contains("hl-hunk"));
    }
}
