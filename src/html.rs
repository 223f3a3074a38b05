//! HTML text escaping for the two self-contained pages the supervisor
//! serves (the node's status page in `health`, the fleet page in
//! `catalog::fleet`). Knows nothing of the pipeline; imports nothing of
//! this crate.

/// Escapes text for an HTML element body or a quoted attribute value:
/// `&`, `<`, `>`, `"` and `'` become character references, nothing else
/// changes. Text from agents, peers and fleet nodes goes through it.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_quotes_are_inert_and_other_text_is_kept() {
        assert_eq!(
            escape(r#"<img src=x onerror="a('b')"> & ü"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt; &amp; ü"
        );
        assert_eq!(escape(""), "");
    }
}
