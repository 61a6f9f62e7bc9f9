//! How sessions look to people: the name shown for a session, the session table and the block of
//! fields `show` prints. Shared by `session.rs` and `session_ops.rs`, which both import it (and
//! never each other's functions), so the two command modules form no cycle.

use cairn::Session;

use super::context::{CliResult, Ctx};
use super::output::{meta_text, relative_time, Cell, Colour, Style, Table};

/// The name to show for a session: its name, else its key, else `(unnamed)`.
pub fn display_name(s: &Session) -> String {
    s.name
        .clone()
        .or_else(|| s.key.as_ref().map(|k| format!("key:{k}")))
        .unwrap_or_else(|| "(unnamed)".into())
}

/// A table of sessions for people.
pub fn session_table(items: &[Session]) -> Table {
    let mut t = Table::new(&["ID", "STATUS", "NAME", "TAGS", "CREATED"]);
    for s in items {
        t.row(vec![
            s.id.to_string().into(),
            Cell::painted(s.status.as_str(), Style::status_colour(s.status)),
            display_name(s).into(),
            s.tags.join(",").into(),
            relative_time(s.created_at).into(),
        ]);
    }
    t
}

/// Prints one session: JSON, or a block of fields for people.
pub fn print_session(ctx: &Ctx, s: &Session) -> CliResult {
    ctx.emit(s, |w, style| {
        let dash = || "-".to_string();
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(dash);
        let mut rows: Vec<(&str, String)> = vec![
            ("id", style.paint(Colour::Cyan, &s.id.to_string())),
            ("name", opt(&s.name)),
            ("key", opt(&s.key)),
            (
                "status",
                style.paint(Style::status_colour(s.status), s.status.as_str()),
            ),
            (
                "parent",
                s.parent_id.map(|p| p.to_string()).unwrap_or_else(dash),
            ),
            (
                "tags",
                if s.tags.is_empty() {
                    dash()
                } else {
                    s.tags.join(", ")
                },
            ),
            ("metadata", meta_text(&s.metadata)),
            (
                "created",
                format!(
                    "{} ({})",
                    s.created_at.to_rfc3339(),
                    relative_time(s.created_at)
                ),
            ),
            (
                "updated",
                format!(
                    "{} ({})",
                    s.updated_at.to_rfc3339(),
                    relative_time(s.updated_at)
                ),
            ),
        ];
        if let Some(d) = &s.description {
            rows.insert(2, ("description", d.clone()));
        }
        if let Some(r) = &s.reason {
            rows.push(("reason", r.clone()));
        }
        for (k, v) in rows {
            writeln!(w, "{} {v}", style.paint(Colour::Bold, &format!("{k:<12}")))?;
        }
        Ok(())
    })
}
