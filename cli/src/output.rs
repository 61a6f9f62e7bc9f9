//! Output for people: aligned tables, human sizes, relative times, colour only on a terminal.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// ANSI colours (rendered by `anstyle`), enabled only when stdout is a terminal (and `NO_COLOR`
/// is unset); the context decides.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    colour: bool,
}

/// A colour for a table cell or a piece of text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    /// Bold.
    Bold,
    /// Dimmed.
    Dim,
    /// Green (success).
    Green,
    /// Red (failure).
    Red,
    /// Yellow (attention).
    Yellow,
    /// Cyan (identifiers).
    Cyan,
}

impl Colour {
    fn style(self) -> anstyle::Style {
        use anstyle::{AnsiColor, Effects};
        let fg = |c: AnsiColor| anstyle::Style::new().fg_color(Some(c.into()));
        match self {
            Colour::Bold => anstyle::Style::new().effects(Effects::BOLD),
            Colour::Dim => anstyle::Style::new().effects(Effects::DIMMED),
            Colour::Green => fg(AnsiColor::Green),
            Colour::Red => fg(AnsiColor::Red),
            Colour::Yellow => fg(AnsiColor::Yellow),
            Colour::Cyan => fg(AnsiColor::Cyan),
        }
    }
}

impl Style {
    /// A style that colours (or not).
    pub fn new(colour: bool) -> Self {
        Self { colour }
    }

    /// `text` in `c` when colouring, else as is.
    pub fn paint(&self, c: Colour, text: &str) -> String {
        if self.colour {
            let st = c.style();
            format!("{}{text}{}", st.render(), st.render_reset())
        } else {
            text.to_string()
        }
    }

    /// The colour that goes with a session status.
    pub fn status_colour(status: cairn::SessionStatus) -> Colour {
        use cairn::SessionStatus as S;
        match status {
            S::Active => Colour::Green,
            S::Suspended => Colour::Yellow,
            S::Completed => Colour::Cyan,
            S::Failed | S::TimedOut | S::Expired => Colour::Red,
            S::Cancelled => Colour::Dim,
            #[allow(unreachable_patterns)]
            _ => Colour::Bold,
        }
    }
}

/// One table cell: text and an optional colour (widths are computed on the text alone, in
/// terminal columns: a CJK character or an emoji takes two).
#[derive(Clone, Debug)]
pub struct Cell {
    text: String,
    colour: Option<Colour>,
}

impl Cell {
    /// A coloured cell.
    pub fn painted(text: impl Into<String>, colour: Colour) -> Self {
        Self {
            text: text.into(),
            colour: Some(colour),
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self { text, colour: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self {
            text: text.to_string(),
            colour: None,
        }
    }
}

/// A table with a header row; columns are padded to their widest cell, measured in terminal
/// columns (`unicode-width`), so names in any script line up.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<Cell>>,
    right: Vec<bool>,
}

impl Table {
    /// A table with these column names. A name starting with `>` is right-aligned (for numbers).
    pub fn new(header: &[&str]) -> Self {
        Self {
            right: header.iter().map(|h| h.starts_with('>')).collect(),
            header: header
                .iter()
                .map(|h| h.trim_start_matches('>').to_string())
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// Writes the table (header in bold when colouring).
    pub fn write(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        let n = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| columns(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(columns(&c.text));
            }
        }
        let line = |w: &mut dyn Write, cells: Vec<(String, Option<Colour>)>| -> io::Result<()> {
            let mut out = String::new();
            let last = cells.len().saturating_sub(1);
            for (i, (text, colour)) in cells.into_iter().enumerate() {
                let pad = width[i].saturating_sub(columns(&text));
                let painted = match colour {
                    Some(c) => style.paint(c, &text),
                    None => text,
                };
                if self.right[i] {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(&painted);
                } else {
                    out.push_str(&painted);
                    if i != last {
                        out.push_str(&" ".repeat(pad));
                    }
                }
                if i != last {
                    out.push_str("  ");
                }
            }
            writeln!(w, "{}", out.trim_end())
        };
        line(
            w,
            self.header
                .iter()
                .map(|h| (h.clone(), Some(Colour::Bold)))
                .collect(),
        )?;
        for r in &self.rows {
            line(
                w,
                (0..n)
                    .map(|i| match r.get(i) {
                        Some(c) => (c.text.clone(), c.colour),
                        None => (String::new(), None),
                    })
                    .collect(),
            )?;
        }
        Ok(())
    }
}

/// `1536` -> `1.5 KiB`; below 1 KiB, plain bytes (`12 B`).
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// How long ago `t` was, for people: `just now`, `42s ago`, `5m ago`, `3h ago`, `2d ago`; older
/// than 30 days, the date. Future times say `in ...`.
pub fn relative_time(t: DateTime<Utc>) -> String {
    relative_to(t, Utc::now())
}

fn relative_to(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (ahead, s) = if secs < 0 {
        (true, -secs)
    } else {
        (false, secs)
    };
    if s < 2 {
        return "just now".into();
    }
    let amount = if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m", s / 60)
    } else if s < 86_400 {
        format!("{}h", s / 3600)
    } else if s < 30 * 86_400 {
        format!("{}d", s / 86_400)
    } else {
        return t.format("%Y-%m-%d").to_string();
    };
    if ahead {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// A ratio for people: `3.42x`.
pub fn ratio(r: f64) -> String {
    format!("{r:.2}x")
}

/// How many terminal columns `text` takes (two for a CJK character or an emoji, none for a
/// combining mark).
pub fn columns(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

/// `text` cut to at most `max` terminal columns, with `...` when cut.
pub fn ellipsize(text: &str, max: usize) -> String {
    if columns(text) <= max {
        return text.to_string();
    }
    let room = max.saturating_sub(3);
    let mut s = String::new();
    let mut used = 0;
    for ch in text.chars() {
        let w = unicode_width::UnicodeWidthChar::width(ch).unwrap_or(0);
        if used + w > room {
            break;
        }
        used += w;
        s.push(ch);
    }
    s.push_str("...");
    s
}

/// Metadata for people: `-` when empty, else compact JSON.
pub fn meta_text(m: &Map<String, Value>) -> String {
    if m.is_empty() {
        "-".into()
    } else {
        Value::Object(m.clone()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(10 << 20), "10.0 MiB");
        assert_eq!(human_size(300 << 30), "300 GiB");
    }

    #[test]
    fn relative_times() {
        let now = Utc::now();
        assert_eq!(relative_to(now, now), "just now");
        assert_eq!(
            relative_to(now - chrono::Duration::seconds(42), now),
            "42s ago"
        );
        assert_eq!(
            relative_to(now - chrono::Duration::minutes(5), now),
            "5m ago"
        );
        assert_eq!(relative_to(now - chrono::Duration::hours(3), now), "3h ago");
        assert_eq!(relative_to(now - chrono::Duration::days(2), now), "2d ago");
        assert_eq!(relative_to(now + chrono::Duration::hours(1), now), "in 1h");
        let old = now - chrono::Duration::days(400);
        assert_eq!(relative_to(old, now), old.format("%Y-%m-%d").to_string());
    }

    #[test]
    fn tables_align_and_skip_colour_off_terminal() {
        let mut t = Table::new(&["NAME", ">SIZE"]);
        t.row(vec!["a".into(), "1 B".into()]);
        t.row(vec![
            Cell::painted("longer", Colour::Red),
            "10.0 KiB".into(),
        ]);
        let mut out = Vec::new();
        t.write(&mut out, &Style::new(false)).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "NAME        SIZE\na            1 B\nlonger  10.0 KiB\n");
        let mut out = Vec::new();
        t.write(&mut out, &Style::new(true)).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("\x1b[31mlonger\x1b[0m"));
    }

    /// The display column where each line's `n`th column starts (after `n` runs of 2+ spaces).
    fn column_starts(table: &str, n: usize) -> Vec<usize> {
        table
            .lines()
            .map(|line| {
                let mut rest = line;
                let mut at = 0;
                for _ in 0..n {
                    let gap = rest.find("  ").unwrap_or_else(|| panic!("{line:?}"));
                    let after = rest[gap..].trim_start_matches(' ');
                    at += columns(&rest[..rest.len() - after.len()]);
                    rest = after;
                }
                at
            })
            .collect()
    }

    /// Regression (issue 10): widths were counted in chars, so CJK and emoji names (two columns
    /// each) pushed the next column out of line.
    #[test]
    fn wide_characters_align_in_tables() {
        let mut t = Table::new(&["NAME", ">SIZE", "KIND"]);
        t.row(vec!["報告書.md".into(), "1 B".into(), "tool_result".into()]);
        t.row(vec![
            "plain.txt".into(),
            "10.0 KiB".into(),
            "agent_output".into(),
        ]);
        t.row(vec![
            "🚀 launch.log".into(),
            "3 B".into(),
            "user_input".into(),
        ]);
        t.row(vec![
            "데이터_분석.csv".into(),
            "12 B".into(),
            "tool_result".into(),
        ]);
        t.row(vec!["café.txt".into(), "7 B".into(), "tool_result".into()]);
        let mut out = Vec::new();
        t.write(&mut out, &Style::new(false)).unwrap();
        let s = String::from_utf8(out).unwrap();
        // Every KIND starts at the same column (so every right-aligned SIZE ends at one too).
        let starts = column_starts(&s, 2);
        assert_eq!(starts.len(), 6, "{s}");
        assert!(starts.windows(2).all(|w| w[0] == w[1]), "{starts:?}\n{s}");
        // The widest name sets the width: 데이터_분석.csv is 15 columns, then two spaces.
        assert_eq!(columns("데이터_분석.csv"), 15);
        assert_eq!(starts[0], 15 + 2 + "10.0 KiB".len() + 2, "{s}");
        // Coloured, the codes add no width.
        let mut out = Vec::new();
        t.write(&mut out, &Style::new(true)).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("\x1b[1mNAME"));
    }

    #[test]
    fn ellipsize_counts_columns() {
        assert_eq!(ellipsize("short", 10), "short");
        assert_eq!(ellipsize("abcdefghijkl", 8), "abcde...");
        // Each of these takes two columns: 8 columns hold two of them and the dots.
        assert_eq!(ellipsize("報告書報告書", 8), "報告...");
        assert!(columns(&ellipsize("🚀🚀🚀🚀🚀🚀", 9)) <= 9);
    }
}
