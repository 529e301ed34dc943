//! Herald's template language: literal text with `{{ variable }}` placeholders, compiled once
//! per campaign into literal/variable segments so rendering is a single pass of appends.
//!
//! Variables are identifiers (`[A-Za-z_][A-Za-z0-9_.-]*`); anything else between `{{` and `}}`,
//! or an unclosed `{{`, is a syntax error reported at create time with its byte offset.
//! Sources are at most [`MAX_SOURCE_BYTES`]; rendering stops as soon as the output passes the
//! caller's bound (a template repeating a variable 200,000 times must not build a gigabyte
//! string), and values can be HTML-escaped (an email's HTML part).
//! It is not: a general template engine (no loops or filters).

use std::fmt;

/// The largest template source (each field of a template) Herald compiles.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed '{{{{' at byte {0}")]
    Unclosed(usize),
    #[error("invalid variable name {name:?} at byte {at}")]
    InvalidName { name: String, at: usize },
    #[error("{0} bytes is over the {MAX_SOURCE_BYTES}-byte limit of a template")]
    TooLarge(usize),
}

/// How variable values are written into the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As they are (SMS text, email text, WhatsApp parameters).
    None,
    /// `& < > " '` escaped (an email's HTML part: recipient attributes are untrusted).
    Html,
}

/// Why rendering stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// A variable the recipient does not have.
    Missing(MissingVariable),
    /// The output passed the caller's bound.
    TooLarge,
}

impl From<MissingVariable> for RenderError {
    fn from(m: MissingVariable) -> Self {
        RenderError::Missing(m)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Variable(String),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// A variable the recipient does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVariable(pub String);

impl fmt::Display for MissingVariable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "missing variable {:?}", self.0)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Template {
    pub fn compile(source: &str) -> Result<Self, TemplateError> {
        if source.len() > MAX_SOURCE_BYTES {
            return Err(TemplateError::TooLarge(source.len()));
        }
        let mut segments = Vec::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                segments.push(Segment::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed(offset + open))?;
            let name = after[..close].trim();
            if !valid_name(name) {
                return Err(TemplateError::InvalidName { name: name.to_string(), at: offset + open });
            }
            segments.push(Segment::Variable(name.to_string()));
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_string()));
        }
        Ok(Self { segments })
    }

    /// Variables the template uses, in order of appearance.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Variable(v) => Some(v.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Renders with `lookup` resolving variables, unescaped and unbounded (tests, previews of
    /// short templates); the pipeline uses [`Template::render_bounded`].
    pub fn render<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> Result<String, RenderError> {
        self.render_bounded(lookup, Escape::None, usize::MAX)
    }

    /// Renders at most `max_bytes` of output (stopping at the first segment that passes it),
    /// escaping variable values as `escape` says.
    pub fn render_bounded<'a>(
        &self,
        lookup: impl Fn(&str) -> Option<&'a str>,
        escape: Escape,
        max_bytes: usize,
    ) -> Result<String, RenderError> {
        let mut out = String::with_capacity(64);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Variable(name) => {
                    let value = lookup(name).ok_or_else(|| MissingVariable(name.clone()))?;
                    match escape {
                        Escape::None => out.push_str(value),
                        Escape::Html => escape_html(value, &mut out),
                    }
                }
            }
            if out.len() > max_bytes {
                return Err(RenderError::TooLarge);
            }
        }
        Ok(out)
    }
}

/// Appends `value` with `& < > " '` escaped (also used by the console's server-rendered pages).
pub fn escape_html(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn renders_variables_and_literals() {
        let t = Template::compile("Hi {{ name }}, order {{order_id}} ships {{ day }}.").unwrap();
        assert_eq!(t.variables().collect::<Vec<_>>(), vec!["name", "order_id", "day"]);
        let out = t.render(vars(&[("name", "Alex"), ("order_id", "A1"), ("day", "today")])).unwrap();
        assert_eq!(out, "Hi Alex, order A1 ships today.");
        assert_eq!(Template::compile("no vars").unwrap().render(vars(&[])).unwrap(), "no vars");
        assert_eq!(Template::compile("").unwrap().render(vars(&[])).unwrap(), "");
    }

    #[test]
    fn missing_variable_is_reported_by_name() {
        let t = Template::compile("Hi {{ name }}").unwrap();
        assert_eq!(t.render(vars(&[])), Err(RenderError::Missing(MissingVariable("name".into()))));
    }

    #[test]
    fn bounded_rendering_stops_early_and_escapes_html() {
        let source = "{{ v }}".repeat(9_000);
        let t = Template::compile(&source).unwrap();
        let big = "x".repeat(5_000);
        // 9,000 × 5 KB would be 45 MB; the render stops right past the bound.
        assert_eq!(t.render_bounded(vars(&[("v", &big)]), Escape::None, 1 << 20), Err(RenderError::TooLarge));
        let html = Template::compile("<p>Hi {{ name }}</p>").unwrap();
        let out = html.render_bounded(vars(&[("name", "<script>\"&'")]), Escape::Html, 1 << 20).unwrap();
        assert_eq!(out, "<p>Hi &lt;script&gt;&quot;&amp;&#39;</p>");
        assert_eq!(
            Template::compile(&"x".repeat(MAX_SOURCE_BYTES + 1)),
            Err(TemplateError::TooLarge(MAX_SOURCE_BYTES + 1))
        );
    }

    #[test]
    fn syntax_errors_are_rejected_with_position() {
        assert_eq!(Template::compile("Hi {{ name"), Err(TemplateError::Unclosed(3)));
        assert!(matches!(Template::compile("a {{ }}"), Err(TemplateError::InvalidName { at: 2, .. })));
        assert!(matches!(Template::compile("{{ 1abc }}"), Err(TemplateError::InvalidName { .. })));
        assert!(matches!(Template::compile("{{ a b }}"), Err(TemplateError::InvalidName { .. })));
    }
}
