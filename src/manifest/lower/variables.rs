//! `${var:NAME}` and `${env:NAME}` in string values, interpolated with the
//! field path named in errors.

use super::*;

/// Replace `${var:NAME}` and `${env:NAME}`; `$${` is a literal `${`.
pub fn interpolate(
    s: &str,
    var: &dyn Fn(&str) -> Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if !s.contains("${") {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
        let expr = &after[..end];
        let value = match expr.split_once(':') {
            Some(("var", name)) => var(name).ok_or_else(|| {
                format!("variable `{name}` is not set\nhint: set it under `variables:` (project or merchant) or with --var {name}=VALUE")
            })?,
            Some(("env", name)) => env(name)
                .ok_or_else(|| format!("environment variable `{name}` is not set"))?,
            _ => {
                return Err(format!(
                    "`${{{expr}}}` is not `${{var:NAME}}` or `${{env:NAME}}`\nhint: write `$${{` for a literal `${{`"
                ));
            }
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One step of the path to a value inside a template (a key or an index).
pub(super) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// The field a path names: `style.name`, `columns[0].title`.
pub(super) fn field_of(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Interpolate every string in a JSON value; errors name the field. The
/// field's name is spelled out only for an error: a template of plain
/// strings costs no allocation here.
pub(super) fn interpolate_value(
    v: &mut Value,
    var: &dyn Fn(&str) -> Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String)>,
) {
    fn walk<'a>(
        v: &'a mut Value,
        path: &mut Vec<Seg<'a>>,
        var: &dyn Fn(&str) -> Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<(String, String)>,
    ) {
        match v {
            Value::String(s) if s.contains("${") => match interpolate(s, var, env) {
                Ok(n) => *s = n,
                Err(e) => errors.push((field_of(path), e)),
            },
            Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    path.push(Seg::Index(i));
                    walk(x, path, var, env, errors);
                    path.pop();
                }
            }
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    path.push(Seg::Key(k));
                    walk(x, path, var, env, errors);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    walk(v, &mut Vec::new(), var, env, errors);
}
