//! Output for people: aligned tables, human sizes, relative times, colour only on a terminal.

use std::io::{self, Write};

use chrono::{DateTime, Utc};

/// ANSI colours, enabled only when stdout is a terminal (and `NO_COLOR` is unset).
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
    fn code(self) -> &'static str {
        match self {
            Colour::Bold => "1",
            Colour::Dim => "2",
            Colour::Green => "32",
            Colour::Red => "31",
            Colour::Yellow => "33",
            Colour::Cyan => "36",
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
            format!("\x1b[{}m{text}\x1b[0m", c.code())
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

/// One table cell: text and an optional colour (widths are computed on the text alone).
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

/// A table with a header row; columns are padded to their widest cell.
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
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.text.chars().count());
            }
        }
        let line = |w: &mut dyn Write, cells: Vec<(String, Option<Colour>)>| -> io::Result<()> {
            let mut out = String::new();
            let last = cells.len().saturating_sub(1);
            for (i, (text, colour)) in cells.into_iter().enumerate() {
                let pad = width[i].saturating_sub(text.chars().count());
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

/// `text` cut to at most `max` characters, with `...` when cut.
pub fn ellipsize(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max.saturating_sub(3)).collect();
    s.push_str("...");
    s
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
}
