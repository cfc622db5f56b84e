//! Label and field selectors, as accepted in `labelSelector` / `fieldSelector`.

use std::collections::BTreeMap;

/// A selector that could not be parsed; the message names the bad term.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelRequirement::Eq(k, v) => labels.get(k) == Some(v),
            LabelRequirement::NotEq(k, v) => labels.get(k) != Some(v),
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelRequirement::NotIn(k, vs) => !labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed label selector: all requirements must hold (comma = AND).
///
/// ```
/// use std::collections::BTreeMap;
/// let s = listwatch::LabelSelector::parse("app in (a,b),!canary,tier!=db").unwrap();
/// let labels = BTreeMap::from([("app".to_string(), "a".to_string())]);
/// assert!(s.matches(&labels));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<LabelRequirement>,
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_set(term: &str, rest: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("unable to parse requirement: {term}")))?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() || !values.iter().all(|v| valid_value(v)) {
        return Err(SelectorError(format!(
            "unable to parse requirement: {term}: bad value set"
        )));
    }
    Ok(values)
}

impl LabelSelector {
    /// Parses `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`,
    /// joined by commas. An empty string selects everything.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { reqs });
        }
        for term in split_top_level(s) {
            let t = term.trim();
            if let Some(k) = t.strip_prefix('!') {
                let k = k.trim();
                if !valid_key(k) {
                    return Err(SelectorError(format!("invalid label key in {t:?}")));
                }
                reqs.push(LabelRequirement::NotExists(k.to_string()));
                continue;
            }
            let key_end = t
                .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '('))
                .unwrap_or(t.len());
            let key = &t[..key_end];
            if !valid_key(key) {
                return Err(SelectorError(format!("invalid label key in {t:?}")));
            }
            let rest = t[key_end..].trim_start();
            let value = |v: &str| -> Result<String, SelectorError> {
                let v = v.trim();
                if valid_value(v) {
                    Ok(v.to_string())
                } else {
                    Err(SelectorError(format!("invalid label value in {t:?}")))
                }
            };
            let req = if rest.is_empty() {
                LabelRequirement::Exists(key.to_string())
            } else if let Some(v) = rest.strip_prefix("!=") {
                LabelRequirement::NotEq(key.to_string(), value(v)?)
            } else if let Some(v) = rest.strip_prefix("==") {
                LabelRequirement::Eq(key.to_string(), value(v)?)
            } else if let Some(v) = rest.strip_prefix('=') {
                LabelRequirement::Eq(key.to_string(), value(v)?)
            } else if let Some(r) = rest.strip_prefix("notin") {
                LabelRequirement::NotIn(key.to_string(), parse_set(t, r)?)
            } else if let Some(r) = rest.strip_prefix("in") {
                LabelRequirement::In(key.to_string(), parse_set(t, r)?)
            } else {
                return Err(SelectorError(format!("unable to parse requirement: {t:?}")));
            };
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }

    /// True when there are no requirements.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

/// A parsed field selector over `metadata.name` and `metadata.namespace`
/// (`=`, `==`, `!=`; comma = AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<(Field, bool, String)>,
}

impl FieldSelector {
    /// Parses a field selector; other fields are rejected like the API server does.
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { reqs });
        }
        for term in s.split(',') {
            let t = term.trim();
            let (field, equal, value) = if let Some((f, v)) = t.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = t.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = t.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError(format!("invalid field selector: {t:?}")));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => {
                    return Err(SelectorError(format!("field label not supported: {other}")));
                }
            };
            reqs.push((field, equal, value.trim().to_string()));
        }
        Ok(FieldSelector { reqs })
    }

    /// True when there are no requirements.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object with this namespace and name matches.
    pub fn matches(&self, namespace: &str, name: &str) -> bool {
        self.reqs.iter().all(|(f, equal, v)| {
            let actual = match f {
                Field::Name => name,
                Field::Namespace => namespace,
            };
            (actual == v) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let table: &[(&str, bool)] = &[
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app = web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web,db)", true),
            ("app in (db)", false),
            ("app notin (db, x)", true),
            ("app notin (web)", false),
            ("missing notin (web)", true),
            ("missing in (web)", false),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("app in (web,db),tier", true),
            ("example.com/x!=y", true),
        ];
        for (sel, want) in table {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), *want, "{sel}");
        }
        for bad in ["app in web", "a=b=c", "=x", "app in ()", "app >"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let table: &[(&str, bool)] = &[
            ("", true),
            ("metadata.name=a", true),
            ("metadata.name==a", true),
            ("metadata.name!=a", false),
            ("metadata.namespace=ns", true),
            ("metadata.namespace=ns,metadata.name=b", false),
            ("metadata.namespace!=other", true),
        ];
        for (sel, want) in table {
            let s = FieldSelector::parse(sel).unwrap();
            assert_eq!(s.matches("ns", "a"), *want, "{sel}");
        }
        assert!(FieldSelector::parse("spec.x=1").is_err());
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
