//! Herald's template language: literal text with `{{ variable }}` placeholders, compiled once
//! per campaign into literal/variable segments so rendering is a single pass of appends.
//!
//! Variables are identifiers (`[A-Za-z_][A-Za-z0-9_.-]*`); anything else between `{{` and `}}`,
//! or an unclosed `{{`, is a syntax error reported at create time with its byte offset.
//! It is not: a general template engine (no loops, filters or escaping).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed '{{{{' at byte {0}")]
    Unclosed(usize),
    #[error("invalid variable name {name:?} at byte {at}")]
    InvalidName { name: String, at: usize },
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

    /// Renders with `lookup` resolving variables.
    pub fn render<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> Result<String, MissingVariable> {
        let mut out = String::with_capacity(64);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Variable(name) => out.push_str(lookup(name).ok_or_else(|| MissingVariable(name.clone()))?),
            }
        }
        Ok(out)
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
        assert_eq!(t.render(vars(&[])), Err(MissingVariable("name".into())));
    }

    #[test]
    fn syntax_errors_are_rejected_with_position() {
        assert_eq!(Template::compile("Hi {{ name"), Err(TemplateError::Unclosed(3)));
        assert!(matches!(Template::compile("a {{ }}"), Err(TemplateError::InvalidName { at: 2, .. })));
        assert!(matches!(Template::compile("{{ 1abc }}"), Err(TemplateError::InvalidName { .. })));
        assert!(matches!(Template::compile("{{ a b }}"), Err(TemplateError::InvalidName { .. })));
    }
}
