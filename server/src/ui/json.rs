//! JSON shown as a foldable tree: every object and array is a `<details>` element, so it folds
//! with the keyboard and without JavaScript. Rendering stops after [`MAX_NODES`] values.

use maud::{html, Markup};
use serde_json::Value;

/// Most values rendered in one tree; the rest is summarised.
pub const MAX_NODES: usize = 20_000;
/// Levels open by default.
const OPEN_LEVELS: usize = 2;

/// A JSON value as a foldable tree, `depth` levels deep already.
pub fn tree(v: &Value, depth: usize) -> Markup {
    let mut budget = MAX_NODES;
    html! { div.json { (node(v, depth, &mut budget)) } }
}

fn scalar(v: &Value) -> Markup {
    match v {
        Value::String(s) => html! { span.j-str { "\"" (s) "\"" } },
        Value::Number(n) => html! { span.j-num { (n.to_string()) } },
        Value::Bool(b) => html! { span.j-bool { (b) } },
        Value::Null => html! { span.j-null { "null" } },
        _ => html! {},
    }
}

fn node(v: &Value, depth: usize, budget: &mut usize) -> Markup {
    if *budget == 0 {
        return html! { span.muted { "… (not shown: the tree is cut at " (MAX_NODES) " values)" } };
    }
    *budget -= 1;
    match v {
        Value::Object(m) => {
            if m.is_empty() {
                return html! { span.j-punct { "{}" } };
            }
            html! {
                details.j open[depth < OPEN_LEVELS] {
                    summary { span.j-punct { "{" } span.muted { " " (m.len()) " keys " } span.j-punct { "}" } }
                    ul {
                        @for (k, x) in m {
                            li { span.j-key { "\"" (k) "\"" } ": " (node(x, depth + 1, budget)) }
                        }
                    }
                }
            }
        }
        Value::Array(a) => {
            if a.is_empty() {
                return html! { span.j-punct { "[]" } };
            }
            html! {
                details.j open[depth < OPEN_LEVELS] {
                    summary { span.j-punct { "[" } span.muted { " " (a.len()) " items " } span.j-punct { "]" } }
                    ol start="0" {
                        @for x in a { li { (node(x, depth + 1, budget)) } }
                    }
                }
            }
        }
        other => scalar(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_fold_and_escape() {
        let v = serde_json::json!({"a": [1, "<b>x</b>", null, true], "deep": {"d": {"e": {}}}});
        let h = tree(&v, 0).into_string();
        assert!(h.contains("&lt;b&gt;x&lt;/b&gt;"), "{h}");
        assert!(!h.contains("<b>x"));
        assert!(h.contains("4 items"));
        // The first two levels are open, deeper ones folded.
        assert!(h.contains("<details class=\"j\" open>"));
        assert!(h.contains("<details class=\"j\">"));
    }

    #[test]
    fn huge_values_are_cut() {
        let v = Value::Array((0..MAX_NODES + 10).map(|i| Value::from(i as u64)).collect());
        let h = tree(&v, 0).into_string();
        assert!(h.contains("the tree is cut"));
    }
}
