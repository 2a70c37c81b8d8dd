//! Go templates for `--format` and `-f`, over JSON documents: the subset
//! people type with Docker, evaluated as Go's `text/template` would.
//!
//! Supported: text; `{{.}}`, `{{.A.B}}`, `{{$}}`, `{{$v.A}}`; string,
//! number, `true`/`false`/`nil` literals; pipelines (`{{.A | upper}}`) and
//! parenthesised calls; `{{if}}`/`{{else if}}`/`{{else}}`, `{{range}}` (over
//! lists and maps, maps in key order, with `$v :=` or `$k, $v :=`, and
//! `{{else}}`), `{{with}}`, `{{end}}`; comments `{{/* */}}`; trim markers
//! `{{-` and `-}}`. Functions: Docker's `json`, `join`, `split`, `lower`,
//! `upper`, `title`, `pad`, `truncate`, `println`, and Go's `print`,
//! `printf` (`%s %v %d %q %%`, width and `-`), `index`, `len`, `eq`, `ne`,
//! `lt`, `le`, `gt`, `ge`, `not`, `and`, `or`. Not supported: variable
//! declarations outside `range`, `define`/`template`/`block`, methods.
//!
//! Values print as Go prints them: strings bare, lists as `[a b]`, maps as
//! `map[k:v]`; a missing map key (or JSON null) as `<no value>`. A missing
//! key that looks like a field (capitalised, as every field of Docker's
//! documents is) is an error, as Go's "can't evaluate field".
use std::fmt::Write as _;

use anyhow::{Result, anyhow, bail};
use serde_json::Value;

/// A parsed template.
#[derive(Debug)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Action(Pipeline),
    If { cond: Pipeline, then: Vec<Node>, otherwise: Vec<Node> },
    Range { key: Option<String>, value: Option<String>, over: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
    With { value: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
}

/// Commands joined by `|`: each result is the last argument of the next.
#[derive(Debug, Clone)]
struct Pipeline(Vec<Vec<Term>>);

#[derive(Debug, Clone)]
enum Term {
    /// `.A.B` (empty: `.`).
    Field(Vec<String>),
    /// `$name.A.B` (`$` alone: name empty).
    Var(String, Vec<String>),
    Literal(Value),
    Func(String),
    /// `(PIPELINE)`, then fields of its result: `(index .A 0).B`.
    Sub(Pipeline, Vec<String>),
}

impl Template {
    pub fn parse(source: &str) -> Result<Template> {
        let pieces = split(source).map_err(|e| anyhow!("Template parsing error: template: {e}"))?;
        let mut parser = Parser { pieces, pos: 0 };
        let (nodes, end) = parser.list().map_err(|e| anyhow!("Template parsing error: template: {e}"))?;
        if let Some(end) = end {
            bail!("Template parsing error: template: unexpected {{{{{end}}}}}");
        }
        Ok(Template { nodes })
    }

    /// The template applied to `data`.
    pub fn render(&self, data: &Value) -> Result<String> {
        let mut out = String::new();
        let mut scope = Scope { root: data, vars: Vec::new() };
        exec(&self.nodes, data, &mut scope, &mut out).map_err(|e| anyhow!("template: {e}"))?;
        Ok(out)
    }
}

// ---- splitting into text and actions -------------------------------------

#[derive(Debug)]
enum Piece {
    Text(String),
    Action(String),
}

/// Text and action sources, trim markers applied.
fn split(source: &str) -> std::result::Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = source;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let mut inner = &rest[open + 2..];
        let trim_before = inner.starts_with("- ") || inner.starts_with("-\t") || inner.starts_with("-\n");
        if trim_before {
            text = text.trim_end();
            inner = &inner[1..];
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_string()));
        }
        let close = find_close(inner).ok_or("unclosed action")?;
        let mut action = &inner[..close];
        trim_next = action.ends_with(" -") || action.ends_with("\t-") || action.ends_with("\n-");
        if trim_next {
            action = &action[..action.len() - 1];
        }
        pieces.push(Piece::Action(action.trim().to_string()));
        rest = &inner[close + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        pieces.push(Piece::Text(text.to_string()));
    }
    Ok(pieces)
}

/// Where the action's `}}` is, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

// ---- tokens of an action ---------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    /// Fields right after a `)`.
    Chain(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Str(String),
    Num(Value),
    Pipe,
    Open,
    Close,
    Comma,
    Declare,
}

fn tokens(src: &str) -> std::result::Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    // `.A.B` after a `.` or a variable name.
    let chain = |i: &mut usize| -> std::result::Result<Vec<String>, String> {
        let mut path = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            *i += 1;
            let start = *i;
            while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
                *i += 1;
            }
            if start == *i {
                if path.is_empty() {
                    break;
                }
                return Err("unexpected . in operand".into());
            }
            path.push(chars[start..*i].iter().collect());
        }
        Ok(path)
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2;
            }
            '.' if i > 0 && chars[i - 1] == ')' => out.push(Tok::Chain(chain(&mut i)?)),
            '.' => out.push(Tok::Field(chain(&mut i)?)),
            '$' => {
                i += 1;
                let name = word(&mut i);
                out.push(Tok::Var(name, chain(&mut i)?));
            }
            '"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(&c) = chars.get(i) else { return Err("unterminated quoted string".into()) };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let e = chars.get(i).copied().ok_or("unterminated quoted string")?;
                            i += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                        }
                        c => s.push(c),
                    }
                }
                out.push(Tok::Str(s));
            }
            '`' => {
                let end = chars[i + 1..].iter().position(|&c| c == '`').ok_or("unterminated raw string")?;
                out.push(Tok::Str(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            c if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n: Value = serde_json::from_str(&text).map_err(|_| format!("bad number syntax: {text}"))?;
                out.push(Tok::Num(n));
            }
            c if c.is_alphabetic() || c == '_' => out.push(Tok::Ident(word(&mut i))),
            other => return Err(format!("unexpected {other:?} in command")),
        }
    }
    Ok(out)
}

// ---- parsing ------------------------------------------------------------

struct Parser {
    pieces: Vec<Piece>,
    pos: usize,
}

impl Parser {
    /// Nodes up to an `{{end}}` or `{{else ...}}`, which is returned (its
    /// source after the keyword) and consumed.
    fn list(&mut self) -> std::result::Result<(Vec<Node>, Option<String>), String> {
        let mut nodes = Vec::new();
        while self.pos < self.pieces.len() {
            let piece = &self.pieces[self.pos];
            self.pos += 1;
            let action = match piece {
                Piece::Text(t) => {
                    nodes.push(Node::Text(t.clone()));
                    continue;
                }
                Piece::Action(a) => a.clone(),
            };
            if action.starts_with("/*") {
                if !action.ends_with("*/") {
                    return Err("unclosed comment".into());
                }
                continue;
            }
            let (keyword, rest) = match action.split_once(char::is_whitespace) {
                Some((k, r)) => (k, r.trim()),
                None => (action.as_str(), ""),
            };
            match keyword {
                "end" | "else" => return Ok((nodes, Some(action.clone()))),
                "if" => nodes.push(self.if_node(rest)?),
                "with" => {
                    let value = pipeline_of(rest)?;
                    let (body, otherwise) = self.body_and_else("with")?;
                    nodes.push(Node::With { value, body, otherwise });
                }
                "range" => {
                    let (key, value, over) = range_header(rest)?;
                    let (body, otherwise) = self.body_and_else("range")?;
                    nodes.push(Node::Range { key, value, over, body, otherwise });
                }
                "define" | "template" | "block" => return Err(format!("{{{{{keyword}}}}} is not supported")),
                _ => nodes.push(Node::Action(pipeline_of(&action)?)),
            }
        }
        Ok((nodes, None))
    }

    fn if_node(&mut self, cond_src: &str) -> std::result::Result<Node, String> {
        let cond = pipeline_of(cond_src)?;
        let (then, end) = self.list()?;
        let otherwise = match end.as_deref() {
            Some("end") => Vec::new(),
            Some("else") => self.until_end("if")?,
            Some(e) => match e.strip_prefix("else").map(str::trim) {
                Some(rest) if rest.starts_with("if ") => vec![self.if_node(rest[3..].trim())?],
                _ => return Err(format!("unexpected {{{{{e}}}}} in if")),
            },
            None => return Err("unexpected EOF in if".into()),
        };
        Ok(Node::If { cond, then, otherwise })
    }

    fn body_and_else(&mut self, what: &str) -> std::result::Result<(Vec<Node>, Vec<Node>), String> {
        let (body, end) = self.list()?;
        match end.as_deref() {
            Some("end") => Ok((body, Vec::new())),
            Some("else") => Ok((body, self.until_end(what)?)),
            Some(e) => Err(format!("unexpected {{{{{e}}}}} in {what}")),
            None => Err(format!("unexpected EOF in {what}")),
        }
    }

    fn until_end(&mut self, what: &str) -> std::result::Result<Vec<Node>, String> {
        let (nodes, end) = self.list()?;
        match end.as_deref() {
            Some("end") => Ok(nodes),
            Some(e) => Err(format!("unexpected {{{{{e}}}}} in {what}")),
            None => Err(format!("unexpected EOF in {what}")),
        }
    }
}

/// `$v := PIPELINE`, `$k, $v := PIPELINE` or `PIPELINE`.
type RangeHeader = (Option<String>, Option<String>, Pipeline);

fn range_header(src: &str) -> std::result::Result<RangeHeader, String> {
    let toks = tokens(src)?;
    let declared = toks.iter().position(|t| *t == Tok::Declare);
    let Some(at) = declared else { return Ok((None, None, pipeline(&toks)?)) };
    let vars: Vec<String> = toks[..at]
        .iter()
        .filter(|t| **t != Tok::Comma)
        .map(|t| match t {
            Tok::Var(name, path) if path.is_empty() => Ok(name.clone()),
            _ => Err("range can only declare variables".to_string()),
        })
        .collect::<std::result::Result<_, _>>()?;
    let over = pipeline(&toks[at + 1..])?;
    match vars.as_slice() {
        [v] => Ok((None, Some(v.clone()), over)),
        [k, v] => Ok((Some(k.clone()), Some(v.clone()), over)),
        _ => Err("too many declarations in range".into()),
    }
}

fn pipeline_of(src: &str) -> std::result::Result<Pipeline, String> {
    let toks = tokens(src)?;
    if toks.contains(&Tok::Declare) {
        return Err("variable declarations are supported in range only".into());
    }
    pipeline(&toks)
}

fn pipeline(toks: &[Tok]) -> std::result::Result<Pipeline, String> {
    let mut commands = vec![Vec::new()];
    let mut i = 0;
    while i < toks.len() {
        let term = match &toks[i] {
            Tok::Pipe => {
                if commands.last().is_some_and(Vec::is_empty) {
                    return Err("missing command before |".into());
                }
                commands.push(Vec::new());
                i += 1;
                continue;
            }
            Tok::Open => {
                let mut depth = 0;
                let close = toks[i..]
                    .iter()
                    .position(|t| {
                        match t {
                            Tok::Open => depth += 1,
                            Tok::Close => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .ok_or("unclosed left paren")?;
                let sub = pipeline(&toks[i + 1..i + close])?;
                i += close;
                match toks.get(i + 1) {
                    Some(Tok::Chain(path)) => {
                        i += 1;
                        Term::Sub(sub, path.clone())
                    }
                    _ => Term::Sub(sub, Vec::new()),
                }
            }
            Tok::Chain(_) => return Err("unexpected . after term".into()),
            Tok::Close => return Err("unexpected right paren".into()),
            Tok::Comma | Tok::Declare => return Err("unexpected token in command".into()),
            Tok::Field(p) => Term::Field(p.clone()),
            Tok::Var(n, p) => Term::Var(n.clone(), p.clone()),
            Tok::Str(s) => Term::Literal(Value::String(s.clone())),
            Tok::Num(n) => Term::Literal(n.clone()),
            Tok::Ident(w) => match w.as_str() {
                "true" => Term::Literal(Value::Bool(true)),
                "false" => Term::Literal(Value::Bool(false)),
                "nil" => Term::Literal(Value::Null),
                name if FUNCTIONS.contains(&name) => Term::Func(name.to_string()),
                name => return Err(format!("function {name:?} not defined")),
            },
        };
        commands.last_mut().expect("one command at least").push(term);
        i += 1;
    }
    if commands.iter().any(Vec::is_empty) {
        return Err("missing value for command".into());
    }
    Ok(Pipeline(commands))
}

// ---- execution -----------------------------------------------------------

struct Scope<'a> {
    root: &'a Value,
    vars: Vec<(String, Value)>,
}

fn exec(nodes: &[Node], dot: &Value, scope: &mut Scope, out: &mut String) -> std::result::Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => out.push_str(&display(&eval(p, dot, scope)?)),
            Node::If { cond, then, otherwise } => {
                let branch = if truthy(&eval(cond, dot, scope)?) { then } else { otherwise };
                exec(branch, dot, scope, out)?;
            }
            Node::With { value, body, otherwise } => {
                let v = eval(value, dot, scope)?;
                if truthy(&v) {
                    exec(body, &v, scope, out)?;
                } else {
                    exec(otherwise, dot, scope, out)?;
                }
            }
            Node::Range { key, value, over, body, otherwise } => {
                let items: Vec<(Value, Value)> = match eval(over, dot, scope)? {
                    Value::Array(a) => a.into_iter().enumerate().map(|(i, v)| (Value::from(i), v)).collect(),
                    // serde_json's map keeps keys sorted, as Go ranges over maps.
                    Value::Object(m) => m.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
                    Value::Null => Vec::new(),
                    other => return Err(format!("range can't iterate over {}", display(&other))),
                };
                if items.is_empty() {
                    exec(otherwise, dot, scope, out)?;
                }
                for (k, v) in items {
                    let depth = scope.vars.len();
                    if let Some(name) = key {
                        scope.vars.push((name.clone(), k));
                    }
                    if let Some(name) = value {
                        scope.vars.push((name.clone(), v.clone()));
                    }
                    let result = exec(body, &v, scope, out);
                    scope.vars.truncate(depth);
                    result?;
                }
            }
        }
    }
    Ok(())
}

fn eval(p: &Pipeline, dot: &Value, scope: &Scope) -> std::result::Result<Value, String> {
    let mut piped: Option<Value> = None;
    for command in &p.0 {
        piped = Some(eval_command(command, piped, dot, scope)?);
    }
    Ok(piped.unwrap_or(Value::Null))
}

fn eval_command(
    terms: &[Term],
    piped: Option<Value>,
    dot: &Value,
    scope: &Scope,
) -> std::result::Result<Value, String> {
    if let Term::Func(name) = &terms[0] {
        let mut args = terms[1..].iter().map(|t| operand(t, dot, scope)).collect::<std::result::Result<Vec<_>, _>>()?;
        args.extend(piped);
        return call(name, &args);
    }
    if terms.len() > 1 || piped.is_some() {
        return Err("can't give argument to non-function".into());
    }
    operand(&terms[0], dot, scope)
}

fn operand(t: &Term, dot: &Value, scope: &Scope) -> std::result::Result<Value, String> {
    match t {
        Term::Field(path) => walk(dot, path),
        Term::Var(name, path) => {
            let base = if name.is_empty() {
                scope.root
            } else {
                scope
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v)
                    .ok_or_else(|| format!("undefined variable: ${name}"))?
            };
            walk(base, path)
        }
        Term::Literal(v) => Ok(v.clone()),
        Term::Func(name) => call(name, &[]),
        Term::Sub(p, path) => walk(&eval(p, dot, scope)?, path),
    }
}

fn walk(start: &Value, path: &[String]) -> std::result::Result<Value, String> {
    let mut v = start;
    for (i, key) in path.iter().enumerate() {
        v = match v {
            Value::Object(m) => match m.get(key) {
                Some(next) => next,
                None if looks_like_field(key) && m.keys().any(|k| looks_like_field(k)) => {
                    return Err(format!("can't evaluate field {key} at <.{}>", path[..=i].join(".")));
                }
                None => return Ok(Value::Null),
            },
            Value::Null => return Ok(Value::Null),
            other => return Err(format!("can't evaluate field {key} in {}", kind_of(other))),
        };
    }
    Ok(v.clone())
}

fn looks_like_field(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_uppercase())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

/// Go's truth: false, 0, nil and empty strings, lists and maps are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// A value as Go's `%v` prints it.
pub fn display(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(display_inner).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            format!("map[{}]", m.iter().map(|(k, v)| format!("{k}:{}", display_inner(v))).collect::<Vec<_>>().join(" "))
        }
    }
}

/// Inside a list or map Go prints nil as `<nil>`.
fn display_inner(v: &Value) -> String {
    if v.is_null() { "<nil>".into() } else { display(v) }
}

const FUNCTIONS: &[&str] = &[
    "json", "join", "split", "lower", "upper", "title", "pad", "truncate", "println", "print", "printf", "index",
    "len", "eq", "ne", "lt", "le", "gt", "ge", "not", "and", "or",
];

fn want(name: &str, args: &[Value], n: usize) -> std::result::Result<(), String> {
    if args.len() != n {
        return Err(format!("wrong number of args for {name}: want {n} got {}", args.len()));
    }
    Ok(())
}

fn text(v: &Value) -> String {
    display(v)
}

fn int(name: &str, v: &Value) -> std::result::Result<i64, String> {
    v.as_i64().ok_or_else(|| format!("{name}: expected an integer, got {}", display(v)))
}

fn call(name: &str, args: &[Value]) -> std::result::Result<Value, String> {
    Ok(match name {
        "json" => {
            want(name, args, 1)?;
            Value::String(serde_json::to_string(&args[0]).map_err(|e| e.to_string())?)
        }
        "join" => {
            want(name, args, 2)?;
            let items = match &args[0] {
                Value::Array(a) => a.iter().map(text).collect::<Vec<_>>(),
                Value::Null => Vec::new(),
                other => return Err(format!("join: expected a list, got {}", display(other))),
            };
            Value::String(items.join(&text(&args[1])))
        }
        "split" => {
            want(name, args, 2)?;
            let sep = text(&args[1]);
            let s = text(&args[0]);
            let parts: Vec<Value> = if sep.is_empty() {
                s.chars().map(|c| Value::String(c.to_string())).collect()
            } else {
                s.split(sep.as_str()).map(|p| Value::String(p.to_string())).collect()
            };
            Value::Array(parts)
        }
        "lower" => {
            want(name, args, 1)?;
            Value::String(text(&args[0]).to_lowercase())
        }
        "upper" => {
            want(name, args, 1)?;
            Value::String(text(&args[0]).to_uppercase())
        }
        "title" => {
            want(name, args, 1)?;
            let s = text(&args[0]);
            let mut out = String::new();
            let mut start = true;
            for c in s.chars() {
                if start && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = !c.is_alphanumeric();
            }
            Value::String(out)
        }
        "pad" => {
            want(name, args, 3)?;
            let (before, after) = (int(name, &args[1])?.max(0) as usize, int(name, &args[2])?.max(0) as usize);
            Value::String(format!("{}{}{}", " ".repeat(before), text(&args[0]), " ".repeat(after)))
        }
        "truncate" => {
            want(name, args, 2)?;
            let n = int(name, &args[1])?.max(0) as usize;
            Value::String(text(&args[0]).chars().take(n).collect())
        }
        "println" => Value::String(format!("{}\n", args.iter().map(text).collect::<Vec<_>>().join(" "))),
        "print" => {
            // Go's Sprint: a space between operands when neither is a string.
            let mut out = String::new();
            for (i, a) in args.iter().enumerate() {
                if i > 0 && !a.is_string() && !args[i - 1].is_string() {
                    out.push(' ');
                }
                out.push_str(&text(a));
            }
            Value::String(out)
        }
        "printf" => {
            let Some((format, rest)) = args.split_first() else { return Err("printf: missing format".into()) };
            Value::String(printf(&text(format), rest))
        }
        "index" => {
            let Some((mut v, keys)) = args.split_first().map(|(v, k)| (v.clone(), k)) else {
                return Err("index: missing argument".into());
            };
            for k in keys {
                v = match (&v, k) {
                    (Value::Object(m), Value::String(key)) => m.get(key).cloned().unwrap_or(Value::Null),
                    (Value::Array(a), Value::Number(n)) => {
                        let i = n.as_u64().ok_or("index: bad index")? as usize;
                        a.get(i).cloned().ok_or_else(|| format!("index out of range: {i}"))?
                    }
                    (Value::Null, _) => Value::Null,
                    (other, _) => return Err(format!("can't index item of type {}", kind_of(other))),
                };
            }
            v
        }
        "len" => {
            want(name, args, 1)?;
            Value::from(match &args[0] {
                Value::String(s) => s.chars().count(),
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                Value::Null => 0,
                other => return Err(format!("len of type {}", kind_of(other))),
            })
        }
        "eq" => {
            let Some((first, rest)) = args.split_first() else { return Err("eq: missing argument".into()) };
            if rest.is_empty() {
                return Err("missing argument for comparison".into());
            }
            Value::Bool(rest.iter().any(|r| same(first, r)))
        }
        "ne" => {
            want(name, args, 2)?;
            Value::Bool(!same(&args[0], &args[1]))
        }
        "lt" | "le" | "gt" | "ge" => {
            want(name, args, 2)?;
            let order = compare(&args[0], &args[1]).ok_or("incompatible types for comparison")?;
            Value::Bool(match name {
                "lt" => order.is_lt(),
                "le" => order.is_le(),
                "gt" => order.is_gt(),
                _ => order.is_ge(),
            })
        }
        "not" => {
            want(name, args, 1)?;
            Value::Bool(!truthy(&args[0]))
        }
        "and" => args.iter().find(|a| !truthy(a)).or(args.last()).cloned().unwrap_or(Value::Null),
        "or" => args.iter().find(|a| truthy(a)).or(args.last()).cloned().unwrap_or(Value::Null),
        other => return Err(format!("function {other:?} not defined")),
    })
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Go's `Sprintf` for the verbs scripts use: `%s`, `%v`, `%d`, `%q`, `%%`,
/// with an optional `-` and width.
fn printf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let left = chars.next_if_eq(&'-').is_some();
        let mut width = 0usize;
        while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
            width = width * 10 + d as usize;
            chars.next();
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let s = match verb {
            'q' => serde_json::to_string(&text(arg)).unwrap_or_default(),
            'd' if arg.is_number() => text(arg),
            's' | 'v' => text(arg),
            _ => format!("%!{verb}({})", text(arg)),
        };
        let pad = width.saturating_sub(s.chars().count());
        if left {
            out.push_str(&s);
            out.push_str(&" ".repeat(pad));
        } else {
            out.push_str(&" ".repeat(pad));
            out.push_str(&s);
        }
    }
    for extra in args {
        let _ = write!(out, "%!(EXTRA {})", text(extra));
    }
    out
}

/// Aligns tab-separated cells into columns as Docker's table output does
/// (Go's tabwriter with minimum width 10 and padding 3): every cell that a
/// tab ends is padded to its column's width; the last cell of a line is not.
pub fn align_tabs(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for cells in &lines {
        for (i, cell) in cells.iter().enumerate().take(cells.len().saturating_sub(1)) {
            let w = (cell.chars().count() + 3).max(10);
            if widths.len() <= i {
                widths.push(w);
            } else {
                widths[i] = widths[i].max(w);
            }
        }
    }
    let mut out = String::new();
    for cells in &lines {
        let last = cells.len() - 1;
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    fn doc() -> Value {
        json!({
            "Name": "/web",
            "Id": "abc123",
            "State": {"Running": true, "Pid": 42},
            "NetworkSettings": {
                "IPAddress": "172.17.0.2",
                "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
                "Networks": {
                    "n1": {"IPAddress": "10.1.0.2", "Aliases": ["a", "b"]},
                    "bridge": {"IPAddress": "172.17.0.2", "Aliases": null},
                },
            },
            "Labels": {},
        })
    }

    #[test]
    fn fields_and_text() {
        let d = doc();
        assert_eq!(render("{{.NetworkSettings.IPAddress}}", &d), "172.17.0.2");
        assert_eq!(render("pid={{.State.Pid}} up={{.State.Running}}", &d), "pid=42 up=true");
        assert_eq!(render("{{.NetworkSettings.Networks.n1.IPAddress}}", &d), "10.1.0.2");
        assert_eq!(render("{{.NetworkSettings.Networks.nosuch}}", &d), "<no value>");
        assert_eq!(render("{{.NetworkSettings.Networks.n1.Aliases}}", &d), "[a b]");
        assert_eq!(render("{{.State}}", &d), "map[Pid:42 Running:true]");
        assert_eq!(render("{{$.Id}}", &d), "abc123");
        assert_eq!(render("no actions", &d), "no actions");
    }

    #[test]
    fn a_misspelt_field_is_an_error() {
        let t = Template::parse("{{.NetworkSettings.IPAdress}}").unwrap();
        let e = t.render(&doc()).unwrap_err().to_string();
        assert!(e.contains("can't evaluate field IPAdress"), "{e}");
    }

    #[test]
    fn range_over_maps_and_lists() {
        let d = doc();
        assert_eq!(
            render("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", &d),
            "172.17.0.2 10.1.0.2 ",
            "maps range in key order"
        );
        assert_eq!(
            render("{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}};{{end}}", &d),
            "bridge=172.17.0.2;n1=10.1.0.2;"
        );
        assert_eq!(
            render("{{range $p, $b := .NetworkSettings.Ports}}{{$p}}->{{(index $b 0).HostPort}}{{end}}", &d),
            "80/tcp->8080"
        );
        assert_eq!(render("{{range .Labels}}x{{else}}none{{end}}", &d), "none");
        assert_eq!(render("{{range $i, $a := .NetworkSettings.Networks.n1.Aliases}}{{$i}}{{$a}}{{end}}", &d), "0a1b");
    }

    #[test]
    fn json_functions_and_pipelines() {
        let d = doc();
        assert_eq!(render("{{json .State}}", &d), r#"{"Pid":42,"Running":true}"#);
        assert_eq!(render("{{json .NetworkSettings.Networks.n1.Aliases}}", &d), r#"["a","b"]"#);
        assert_eq!(render("{{.Name | upper}}", &d), "/WEB");
        assert_eq!(render("{{join .NetworkSettings.Networks.n1.Aliases \",\"}}", &d), "a,b");
        assert_eq!(render("{{index .NetworkSettings.Networks \"n1\" | json | len}}", &d), "44");
        assert_eq!(render("{{len .NetworkSettings.Networks}}", &d), "2");
        assert_eq!(render("{{printf \"%-6s|%3d\" .Id .State.Pid}}", &d), "abc123| 42");
        assert_eq!(render("{{println .Id}}", &d), "abc123\n");
        assert_eq!(render("{{split \"a:b\" \":\"}}", &d), "[a b]");
        assert_eq!(render("{{title \"hello world\"}}", &d), "Hello World");
        assert_eq!(render("{{truncate .Id 3}}", &d), "abc");
    }

    #[test]
    fn conditions_with_and_trim_markers() {
        let d = doc();
        assert_eq!(render("{{if .State.Running}}up{{else}}down{{end}}", &d), "up");
        assert_eq!(render("{{if eq .State.Pid 7}}a{{else if eq .State.Pid 42}}b{{else}}c{{end}}", &d), "b");
        assert_eq!(render("{{if not .Labels}}empty{{end}}", &d), "empty");
        assert_eq!(render("{{with .NetworkSettings.Networks.n1}}{{.IPAddress}}{{end}}", &d), "10.1.0.2");
        assert_eq!(render("{{with .missing}}x{{else}}y{{end}}", &json!({"a": 1})), "y");
        assert_eq!(render("a  {{- .Id -}}  b", &d), "aabc123b");
        assert_eq!(render("{{/* a comment */}}x", &d), "x");
        assert_eq!(render("{{if and .State.Running (gt .State.Pid 1)}}ok{{end}}", &d), "ok");
    }

    #[test]
    fn bad_templates_are_parse_errors() {
        for bad in ["{{.Id", "{{if .A}}x", "{{end}}", "{{nosuch .A}}", "{{range}}{{end}}", "{{.A | }}", "{{\"x}}"] {
            let e = Template::parse(bad).map(|_| ()).unwrap_err().to_string();
            assert!(e.starts_with("Template parsing error"), "{bad}: {e}");
        }
    }

    #[test]
    fn tabs_align_like_docker_tables() {
        let out = align_tabs("CONTAINER ID\tNAMES\nabc\tweb\n");
        assert_eq!(out, "CONTAINER ID   NAMES\nabc            web\n");
        assert_eq!(align_tabs("a\tb\n"), "a         b\n");
    }
}
