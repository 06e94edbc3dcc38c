//! Condition operators of AWS policies (IAM's "Condition operators" reference): String*, Arn*,
//! Bool, Null, Numeric*, Date*, their `IfExists` forms, and the `ForAnyValue:` / `ForAllValues:`
//! set qualifiers.

use std::collections::BTreeMap;

use serde_json::Value;

/// The request context: condition key (lower case) → its values (several for a multivalued key
/// such as `kms:EncryptionContextKeys`).
pub type Context = BTreeMap<String, Vec<String>>;

/// Whether every operator of a `Condition` block matches `ctx` (operators AND, keys AND, values
/// of one key OR). An unknown operator never matches. With `variables` (policy version
/// 2012-10-17), `${key}` in the policy's values is replaced by the request's value of `key`.
#[must_use]
pub fn matches(condition: &Value, ctx: &Context, variables: bool) -> bool {
    let Some(ops) = condition.as_object() else {
        return false;
    };
    ops.iter().all(|(op, keys)| {
        keys.as_object().is_some_and(|keys| {
            keys.iter().all(|(key, wanted)| {
                let key = if key.bytes().any(|b| b.is_ascii_uppercase()) {
                    std::borrow::Cow::Owned(key.to_ascii_lowercase())
                } else {
                    std::borrow::Cow::Borrowed(key.as_str())
                };
                one(op, &key, wanted, ctx, variables)
            })
        })
    })
}

/// One character of a pattern: a literal, or a wildcard the policy wrote. A value put in by a
/// policy variable is all literals, so a `*` in (say) an encryption context value never
/// widens a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    /// This character.
    Lit(char),
    /// `*`: any run of characters.
    Any,
    /// `?`: any one character.
    One,
}

/// A pattern as written (no variables).
#[must_use]
pub fn tokens(pattern: &str) -> Vec<Tok> {
    pattern
        .chars()
        .map(|c| match c {
            '*' => Tok::Any,
            '?' => Tok::One,
            c => Tok::Lit(c),
        })
        .collect()
}

/// A pattern with IAM's policy variables replaced from `ctx`: `${key}` (a single-valued key of
/// the request) or `${key, 'default'}`, and `${*}`, `${?}`, `${$}` for the literal characters.
/// `None` when a variable names a key the request does not have (and gives no default): the
/// pattern then matches nothing.
#[must_use]
pub fn substitute(pattern: &str, ctx: &Context) -> Option<Vec<Tok>> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(start) = rest.find("${") {
        out.extend(tokens(rest.get(..start)?));
        let after = rest.get(start + 2..)?;
        let end = after.find('}')?;
        let inner = after.get(..end)?.trim();
        rest = after.get(end + 1..)?;
        match inner {
            "*" => out.push(Tok::Lit('*')),
            "?" => out.push(Tok::Lit('?')),
            "$" => out.push(Tok::Lit('$')),
            _ => {
                let (key, default) = match inner.split_once(',') {
                    Some((k, d)) => (k.trim(), Some(d.trim().trim_matches('\''))),
                    None => (inner, None),
                };
                let value = match ctx.get(&key.to_ascii_lowercase()).map(Vec::as_slice) {
                    Some([one]) => one.as_str(),
                    Some(_) | None => default?,
                };
                out.extend(value.chars().map(Tok::Lit));
            }
        }
    }
    out.extend(tokens(rest));
    Some(out)
}

/// A pattern's text (its wildcards as `*` and `?`), for the operators that compare exactly.
fn text(toks: &[Tok]) -> String {
    toks.iter()
        .map(|t| match t {
            Tok::Lit(c) => *c,
            Tok::Any => '*',
            Tok::One => '?',
        })
        .collect()
}

/// How a set qualifier applies the operator to a multivalued key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Set {
    /// No qualifier: the key's value (any of them) against the policy's values.
    Single,
    /// `ForAnyValue:`: at least one request value matches.
    Any,
    /// `ForAllValues:`: every request value matches (true when there is none).
    All,
}

fn one(op: &str, key: &str, wanted: &Value, ctx: &Context, variables: bool) -> bool {
    let (set, op) = if let Some(rest) = op.strip_prefix("ForAnyValue:") {
        (Set::Any, rest)
    } else if let Some(rest) = op.strip_prefix("ForAllValues:") {
        (Set::All, rest)
    } else {
        (Set::Single, op)
    };
    let (op, if_exists) = match op.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (op, false),
    };
    let written: Vec<String> = match wanted {
        Value::Array(a) => a.iter().filter_map(scalar).collect(),
        v => scalar(v).into_iter().collect(),
    };
    let wanted: Vec<Vec<Tok>> = written
        .iter()
        .filter_map(|w| {
            if variables {
                substitute(w, ctx)
            } else {
                Some(tokens(w))
            }
        })
        .collect();
    let wanted_text: Vec<String> = wanted.iter().map(|w| text(w)).collect();
    let present = ctx.get(key).filter(|v| !v.is_empty());
    if op == "Null" {
        // "true": the key is absent; "false": it is present.
        return wanted_text.iter().any(|w| match w.as_str() {
            "true" => present.is_none(),
            "false" => present.is_some(),
            _ => false,
        });
    }
    let Some(values) = present else {
        // A missing key: true for IfExists and for ForAllValues (nothing to contradict), and
        // for negated operators (nothing equals); false otherwise.
        return if_exists || set == Set::All || negated(op);
    };
    let test = |v: &str| -> Option<bool> { compare(op, v, &wanted, &wanted_text) };
    match set {
        Set::All => values.iter().all(|v| test(v) == Some(true)),
        Set::Any | Set::Single => {
            if negated(op) && set == Set::Single {
                // A negated operator on a single-valued key: no value may equal.
                values.iter().all(|v| test(v) == Some(true))
            } else {
                values.iter().any(|v| test(v) == Some(true))
            }
        }
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn negated(op: &str) -> bool {
    op.contains("Not")
}

/// Whether request value `v` satisfies operator `op` against the policy's values, as patterns
/// and as text (`None`: the operator is unknown or a value does not parse, which never matches).
fn compare(op: &str, v: &str, patterns: &[Vec<Tok>], wanted: &[String]) -> Option<bool> {
    let any = |f: &dyn Fn(&str) -> Option<bool>| -> Option<bool> {
        let mut out = false;
        for w in wanted {
            out |= f(w)?;
        }
        Some(out)
    };
    Some(match op {
        "StringEquals" => wanted.iter().any(|w| w == v),
        "StringNotEquals" => !wanted.iter().any(|w| w == v),
        "StringEqualsIgnoreCase" => wanted.iter().any(|w| w.eq_ignore_ascii_case(v)),
        "StringNotEqualsIgnoreCase" => !wanted.iter().any(|w| w.eq_ignore_ascii_case(v)),
        "StringLike" | "ArnLike" | "ArnEquals" => patterns.iter().any(|w| glob_tokens(w, v)),
        "StringNotLike" | "ArnNotLike" | "ArnNotEquals" => {
            !patterns.iter().any(|w| glob_tokens(w, v))
        }
        "Bool" => {
            let v = v.eq_ignore_ascii_case("true");
            wanted.iter().any(|w| w.eq_ignore_ascii_case("true") == v)
        }
        "NumericEquals"
        | "NumericNotEquals"
        | "NumericLessThan"
        | "NumericLessThanEquals"
        | "NumericGreaterThan"
        | "NumericGreaterThanEquals" => {
            let x: f64 = v.parse().ok()?;
            let hit = any(&|w| Some(ordering(op, x.partial_cmp(&w.parse::<f64>().ok()?)?)))?;
            if op == "NumericNotEquals" { !hit } else { hit }
        }
        "DateEquals"
        | "DateNotEquals"
        | "DateLessThan"
        | "DateLessThanEquals"
        | "DateGreaterThan"
        | "DateGreaterThanEquals" => {
            let x = date(v)?;
            let hit = any(&|w| Some(ordering(op, x.cmp(&date(w)?))))?;
            if op == "DateNotEquals" { !hit } else { hit }
        }
        _ => return None,
    })
}

/// Whether an ordering satisfies a Numeric*/Date* operator (the `NotEquals` forms ask for
/// `Equal` and are negated by the caller).
fn ordering(op: &str, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match op.trim_start_matches("Numeric").trim_start_matches("Date") {
        "LessThan" => o == Less,
        "LessThanEquals" => o != Greater,
        "GreaterThan" => o == Greater,
        "GreaterThanEquals" => o != Less,
        _ => o == Equal,
    }
}

/// A date as AWS takes it: ISO 8601 (`2026-01-01T00:00:00Z`) or epoch seconds; in milliseconds.
fn date(s: &str) -> Option<i64> {
    if let Ok(secs) = s.parse::<i64>() {
        return secs.checked_mul(1000);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

/// AWS's wildcard match: `*` any run of characters, `?` any one character, case sensitive.
#[must_use]
pub fn glob(pattern: &str, text: &str) -> bool {
    // The common patterns, without building tokens: everything, and no wildcard at all.
    if pattern == "*" {
        return true;
    }
    if !pattern.contains(['*', '?']) {
        return pattern == text;
    }
    glob_tokens(&tokens(pattern), text)
}

/// [`glob`] over a pattern whose wildcards are marked (see [`substitute`]).
#[must_use]
pub fn glob_tokens(p: &[Tok], text: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(Tok::Any) => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(Tok::One) => {
                pi += 1;
                ti += 1;
            }
            Some(Tok::Lit(c)) if t.get(ti) == Some(c) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == Tok::Any))
}
