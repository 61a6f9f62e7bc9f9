//! `cairn artifact read`: one part of an artifact (a byte range, a line range, head, tail, a
//! grep with context, a JSON path, or the preview), verified, with what was left out.
//!
//! Without `--json` the part is printed for people and for pipes: bytes as they are, lines one
//! per line, grep lines as `NUMBER:text` (matches) and `NUMBER-text` (context) with `--` between
//! groups, a JSON value pretty-printed. What was cut short, and how to ask for the rest, goes to
//! stderr as one note. With `--json` the whole result object is printed (the library's
//! `PartResult`, the same shape as the server's and the MCP tool's).

use std::io::{self, Write};

use clap::{ArgGroup, Args};

use cairn::{Artifact, Part, PartContent, PartLimits, PartResult, Preview};

use super::args;
use super::context::{note, CliResult, Ctx, Failure};
use super::remote::{Params, Remote};

/// `artifact read`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("part").args(
    ["bytes", "head", "tail", "grep", "json_path", "json_lines", "preview"]
)))]
pub struct ReadArgs {
    /// The artifact id.
    pub id: String,
    /// Bytes A..B (from A up to, not including, B; 0-based), A..=B (B included) or A.. (to the
    /// end, up to --max-bytes).
    #[arg(long, value_name = "A..B")]
    pub bytes: Option<String>,
    /// Lines A..B (1-based, B excluded), A..=B (B included) or A.. (to the end, up to
    /// --max-bytes). With --json-lines: the lines to take values from.
    #[arg(long, value_name = "A..B",
          conflicts_with_all = ["bytes", "head", "tail", "grep", "json_path", "preview"])]
    pub lines: Option<String>,
    /// The first N lines [the default part: --head 20].
    #[arg(long, value_name = "N")]
    pub head: Option<u64>,
    /// The last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Lines matching this regular expression (Rust regex syntax).
    #[arg(long, value_name = "RE")]
    pub grep: Option<String>,
    /// With --grep: N lines of context before and after each match.
    #[arg(short = 'C', long, value_name = "N", requires = "grep")]
    pub context: Option<u32>,
    /// With --grep: stop after N matches (default 100).
    #[arg(long, value_name = "N", requires = "grep")]
    pub max_matches: Option<u32>,
    /// With --grep: match case-insensitively.
    #[arg(short = 'i', long, requires = "grep")]
    pub ignore_case: bool,
    /// With --grep: start searching at line N (continue from a previous result's next_line).
    #[arg(long, value_name = "N", requires = "grep")]
    pub start_line: Option<u64>,
    /// The value at a JSON pointer (`/a/0/b`) or path (`a[0].b`, `$.a`) of a JSON document.
    #[arg(long, value_name = "PATH")]
    pub json_path: Option<String>,
    /// The value at PATH of each line of a JSON-lines artifact (lines from --lines, default all
    /// up to --max-bytes). PATH may be empty for the whole record.
    #[arg(long, value_name = "PATH", allow_hyphen_values = true)]
    pub json_lines: Option<String>,
    /// The stored preview: sizes, line count, detected type, head and tail, JSON keys.
    #[arg(long)]
    pub preview: bool,
    /// Most bytes of returned text (default 64 KiB, at most 16 MiB).
    #[arg(long, value_name = "N")]
    pub max_bytes: Option<u64>,
    /// Most bytes of one returned line (default 4 KiB); longer lines are cut.
    #[arg(long, value_name = "N")]
    pub max_line_bytes: Option<usize>,
}

/// Lines shown when no part is given.
const DEFAULT_HEAD: u64 = 20;

/// A parsed `A..B` / `A..=B` / `A..`: the start and, if bounded, the count.
fn range(flag: &str, s: &str, first: u64) -> CliResult<(u64, Option<u64>)> {
    let bad = |why: &str| {
        Failure::invalid(
            flag,
            format!("{s:?}: {why}; write A..B (B excluded), A..=B (B included) or A.."),
        )
    };
    let (a, rest) = s.split_once("..").ok_or_else(|| bad("no `..`"))?;
    let num = |t: &str| -> CliResult<u64> {
        t.trim()
            .parse::<u64>()
            .map_err(|_| bad(&format!("{t:?} is not a whole number")))
    };
    let start = num(a)?;
    if start < first {
        return Err(bad(&format!("the first is {first}")));
    }
    if rest.is_empty() {
        return Ok((start, None));
    }
    let (end, inclusive) = match rest.strip_prefix('=') {
        Some(e) => (num(e)?, true),
        None => (num(rest)?, false),
    };
    let end = if inclusive {
        end.saturating_add(1)
    } else {
        end
    };
    if end < start {
        return Err(bad("the end is before the start"));
    }
    Ok((start, Some(end - start)))
}

impl ReadArgs {
    /// The part asked for (`None`: the preview).
    fn part(&self) -> CliResult<Option<Part>> {
        if self.preview {
            return Ok(None);
        }
        if let Some(b) = &self.bytes {
            let (offset, len) = range("--bytes", b, 0)?;
            return Ok(Some(Part::Bytes {
                offset,
                len: len.unwrap_or(u64::MAX),
            }));
        }
        if let Some(path) = &self.json_lines {
            let (start, count) = match &self.lines {
                Some(l) => range("--lines", l, 1)?,
                None => (1, None),
            };
            return Ok(Some(Part::JsonLines {
                path: path.clone(),
                start,
                count: count.unwrap_or(u64::MAX),
            }));
        }
        if let Some(l) = &self.lines {
            let (start, count) = range("--lines", l, 1)?;
            return Ok(Some(Part::Lines {
                start,
                count: count.unwrap_or(u64::MAX),
            }));
        }
        if let Some(n) = self.tail {
            return Ok(Some(Part::Tail { lines: n }));
        }
        if let Some(pattern) = &self.grep {
            return Ok(Some(Part::Grep {
                pattern: pattern.clone(),
                context: self.context.unwrap_or(0),
                max_matches: self.max_matches.unwrap_or(cairn::DEFAULT_MATCHES),
                ignore_case: self.ignore_case,
                start_line: self.start_line.unwrap_or(1),
            }));
        }
        if let Some(path) = &self.json_path {
            return Ok(Some(Part::Json { path: path.clone() }));
        }
        Ok(Some(Part::Head {
            lines: self.head.unwrap_or(DEFAULT_HEAD),
        }))
    }

    fn limits(&self) -> PartLimits {
        let d = PartLimits::default();
        PartLimits {
            max_bytes: self.max_bytes.unwrap_or(d.max_bytes),
            max_line_bytes: self.max_line_bytes.unwrap_or(d.max_line_bytes),
        }
    }
}

/// Runs `artifact read`.
pub fn read(ctx: &Ctx, a: ReadArgs) -> CliResult {
    let id = args::artifact_id(&a.id)?;
    let part = a.part()?;
    let src = match ctx.remote() {
        Some(r) => Source::Remote(r),
        None => Source::Local(ctx.existing_store()?),
    };
    let art: Artifact = match src {
        Source::Remote(r) => r.get(&format!("/v1/artifacts/{id}"), &Params::new())?,
        Source::Local(s) => s.admin().artifact(id)?,
    };
    let Some(part) = part else {
        let p: Preview = match src {
            Source::Remote(r) => r.get(&format!("/v1/artifacts/{id}/preview"), &Params::new())?,
            Source::Local(s) => s.preview(art.session_id, art.id)?,
        };
        return ctx.emit(&p, |w, _| {
            writeln!(
                w,
                "{}: {} bytes ({} stored), {} lines, {}",
                art.name, p.size, p.stored_size, p.lines, p.mime_type
            )?;
            if let Some(keys) = &p.json_keys {
                let more = if p.json_keys_truncated { ", ..." } else { "" };
                writeln!(w, "keys: {}{more}", keys.join(", "))?;
            }
            if let Some(h) = &p.head {
                writeln!(w, "--- head")?;
                write_block(w, h)?;
            }
            if let Some(t) = &p.tail {
                writeln!(w, "--- tail")?;
                write_block(w, t)?;
            }
            Ok(())
        });
    };
    let r: PartResult = match src {
        Source::Remote(r) => r.get(
            &format!("/v1/artifacts/{id}/read"),
            &part_params(&part, &a.limits()),
        )?,
        Source::Local(s) => s.read_part_with(art.session_id, art.id, &part, &a.limits())?,
    };
    if !ctx.json {
        if let PartContent::Json { found: false, .. } = &r.content {
            return Err(Failure {
                code: "not_found".into(),
                message: format!(
                    "the JSON path {:?} is not in {}",
                    a.json_path.unwrap_or_default(),
                    art.name
                ),
                exit: 3,
            });
        }
    }
    let raw = match &r.content {
        PartContent::Bytes { data, .. } if !ctx.json => Some(data.bytes()?),
        _ => None,
    };
    ctx.emit(&r, |w, _| match &raw {
        Some(b) => w.write_all(b),
        None => human(w, &r),
    })?;
    if !ctx.json {
        if let Some(n) = more_note(&r, &part) {
            note(&n);
        }
    }
    Ok(())
}

/// Where the part is read: the local store, or the server of `--server`.
#[derive(Clone, Copy)]
enum Source<'a> {
    Local(&'a cairn::Store),
    Remote(&'a Remote),
}

/// The query of `GET /v1/artifacts/{id}/read` for `part` (the server's parameter names).
fn part_params(part: &Part, limits: &PartLimits) -> Params {
    let q = Params::new()
        .add("max_bytes", limits.max_bytes)
        .add("max_line_bytes", limits.max_line_bytes);
    match part {
        Part::Bytes { offset, len } => q.add("part", "bytes").add("offset", offset).add("len", len),
        Part::Lines { start, count } => q
            .add("part", "lines")
            .add("start", start)
            .add("count", count),
        Part::Head { lines } => q.add("part", "head").add("lines", lines),
        Part::Tail { lines } => q.add("part", "tail").add("lines", lines),
        Part::Grep {
            pattern,
            context,
            max_matches,
            ignore_case,
            start_line,
        } => q
            .add("part", "grep")
            .add("pattern", pattern)
            .add("context", context)
            .add("max_matches", max_matches)
            .flag("ignore_case", *ignore_case)
            .add("start_line", start_line),
        Part::Json { path } => q.add("part", "json").add("path", path),
        Part::JsonLines { path, start, count } => q
            .add("part", "json_lines")
            .add("path", path)
            .add("start", start)
            .add("count", count),
    }
}

fn write_block(w: &mut dyn Write, s: &str) -> io::Result<()> {
    w.write_all(s.as_bytes())?;
    if !s.ends_with('\n') {
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// The part for people and pipes.
fn human(w: &mut dyn Write, r: &PartResult) -> io::Result<()> {
    match &r.content {
        PartContent::Bytes { data, .. } => {
            w.write_all(data.data.as_bytes())?;
        }
        PartContent::Lines { lines } => {
            for l in lines {
                writeln!(w, "{}", l.text)?;
            }
        }
        PartContent::Grep { lines, .. } => {
            let mut last = None;
            for g in lines {
                let n = g.line.number;
                if last.is_some_and(|p: u64| n > p + 1) {
                    writeln!(w, "--")?;
                }
                let sep = if g.matched { ':' } else { '-' };
                writeln!(w, "{n}{sep}{}", g.line.text)?;
                last = Some(n);
            }
        }
        PartContent::Json { value, .. } => {
            if let Some(v) = value {
                let s = serde_json::to_string_pretty(v).map_err(io::Error::other)?;
                writeln!(w, "{s}")?;
            }
        }
        PartContent::JsonLines { items } => {
            for it in items {
                match (&it.value, &it.error) {
                    (Some(v), _) => {
                        let s = serde_json::to_string(v).map_err(io::Error::other)?;
                        writeln!(w, "{}:{s}", it.line)?;
                    }
                    (None, Some(e)) => writeln!(w, "{}!{e}", it.line)?,
                    (None, None) => writeln!(w, "{}!", it.line)?,
                }
            }
        }
    }
    Ok(())
}

/// One line for stderr saying what was left out and how to continue, if anything was.
fn more_note(r: &PartResult, part: &Part) -> Option<String> {
    let size = r.size;
    let lines = r.total_lines;
    let cut = if r.truncated {
        "cut short by a limit; "
    } else {
        ""
    };
    if let PartContent::Json {
        value: None,
        found: true,
        value_bytes,
    } = &r.content
    {
        return Some(format!(
            "the value is {value_bytes} bytes, over --max-bytes; raise --max-bytes or read a \
             narrower path"
        ));
    }
    if let Some(o) = r.next_offset {
        return Some(format!(
            "{cut}{} more bytes of {size}: continue with --bytes {o}..",
            size - o
        ));
    }
    let n = r.next_line?;
    let how = match part {
        Part::Grep { .. } => format!("continue with --start-line {n}"),
        Part::JsonLines { .. } => format!("continue with --lines {n}.."),
        _ => format!("continue with --lines {n}.."),
    };
    Some(format!("{cut}lines from {n} of {lines} not shown: {how}"))
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn ranges_parse_and_refuse_clearly() {
        assert_eq!(range("--bytes", "0..10", 0).unwrap(), (0, Some(10)));
        assert_eq!(range("--bytes", "5..=5", 0).unwrap(), (5, Some(1)));
        assert_eq!(range("--lines", "3..", 1).unwrap(), (3, None));
        assert_eq!(range("--lines", "3..3", 1).unwrap(), (3, Some(0)));
        for bad in ["10", "a..b", "5..2", "-1..3", "1..=x"] {
            let e = range("--bytes", bad, 0).unwrap_err();
            assert!(e.message.contains("A..B"), "{bad}: {}", e.message);
        }
        let e = range("--lines", "0..4", 1).unwrap_err();
        assert!(e.message.contains("the first is 1"), "{}", e.message);
    }
}
