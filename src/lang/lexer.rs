//! The lexer: source text to tokens with spans. `#` starts a comment to the end of the line.

use super::diag::Span;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    /// A duration literal, in nanoseconds.
    Duration(i64),
    Arrow,      // ->
    TildeArrow, // ~>
    EqEq,
    NotEq,
    Le,
    Ge,
    Lt,
    Gt,
    Assign,
    Bang,
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    Dot,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Question,
    QQ, // ??
    Pipe,
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Int(i) => format!("number `{i}`"),
            Tok::Float(f) => format!("number `{f}`"),
            Tok::Str(s) => format!("string \"{s}\""),
            Tok::Duration(_) => "a duration".into(),
            Tok::Eof => "the end of the file".into(),
            other => format!("`{}`", other.symbol()),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::Arrow => "->",
            Tok::TildeArrow => "~>",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Le => "<=",
            Tok::Ge => ">=",
            Tok::Lt => "<",
            Tok::Gt => ">",
            Tok::Assign => "=",
            Tok::Bang => "!",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Dot => ".",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Question => "?",
            Tok::QQ => "??",
            Tok::Pipe => "|",
            _ => "?",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// A lexing error: a message and where.
#[derive(Debug, Clone)]
pub struct LexError {
    pub span: Span,
    pub message: String,
}

/// Nanoseconds per unit of a duration suffix.
pub fn duration_unit(s: &str) -> Option<i64> {
    Some(match s {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    })
}

/// The UTF-8 byte-order mark that some editors write at the start of a file.
pub const BOM: &str = "\u{feff}";

/// Cuts `src` into tokens. A byte-order mark at the very start is skipped (spans still count
/// its bytes, so they index `src` as given).
pub fn lex(src: &str) -> Result<Vec<Token>, LexError> {
    let b = src.as_bytes();
    let mut i = if src.starts_with(BOM) { BOM.len() } else { 0 };
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        let two = if i + 1 < b.len() { b[i + 1] } else { 0 };
        let tok = match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Ident(src[start..i].to_string()),
                    span: Span::new(start, i),
                });
                continue;
            }
            b'0'..=b'9' => {
                let tok = lex_number(src, &mut i)?;
                out.push(Token {
                    tok,
                    span: Span::new(start, i),
                });
                continue;
            }
            b'"' => {
                let s = lex_string(src, &mut i)?;
                out.push(Token {
                    tok: Tok::Str(s),
                    span: Span::new(start, i),
                });
                continue;
            }
            b'-' if two == b'>' => Some((Tok::Arrow, 2)),
            b'~' if two == b'>' => Some((Tok::TildeArrow, 2)),
            b'=' if two == b'=' => Some((Tok::EqEq, 2)),
            b'!' if two == b'=' => Some((Tok::NotEq, 2)),
            b'<' if two == b'=' => Some((Tok::Le, 2)),
            b'>' if two == b'=' => Some((Tok::Ge, 2)),
            b'?' if two == b'?' => Some((Tok::QQ, 2)),
            b'<' => Some((Tok::Lt, 1)),
            b'>' => Some((Tok::Gt, 1)),
            b'=' => Some((Tok::Assign, 1)),
            b'!' => Some((Tok::Bang, 1)),
            b'(' => Some((Tok::LParen, 1)),
            b')' => Some((Tok::RParen, 1)),
            b'{' => Some((Tok::LBrace, 1)),
            b'}' => Some((Tok::RBrace, 1)),
            b'[' => Some((Tok::LBracket, 1)),
            b']' => Some((Tok::RBracket, 1)),
            b',' => Some((Tok::Comma, 1)),
            b':' => Some((Tok::Colon, 1)),
            b'.' => Some((Tok::Dot, 1)),
            b'+' => Some((Tok::Plus, 1)),
            b'-' => Some((Tok::Minus, 1)),
            b'*' => Some((Tok::Star, 1)),
            b'/' => Some((Tok::Slash, 1)),
            b'%' => Some((Tok::Percent, 1)),
            b'?' => Some((Tok::Question, 1)),
            b'|' => Some((Tok::Pipe, 1)),
            _ => None,
        };
        match tok {
            Some((t, n)) => {
                i += n;
                out.push(Token {
                    tok: t,
                    span: Span::new(start, i),
                });
            }
            None => {
                let ch = src[start..].chars().next().unwrap_or('?');
                return Err(LexError {
                    span: Span::new(start, start + ch.len_utf8()),
                    message: format!("unexpected character `{ch}`"),
                });
            }
        }
    }
    out.push(Token {
        tok: Tok::Eof,
        span: Span::new(b.len(), b.len()),
    });
    Ok(out)
}

fn lex_number(src: &str, i: &mut usize) -> Result<Tok, LexError> {
    let b = src.as_bytes();
    let start = *i;
    while *i < b.len() && b[*i].is_ascii_digit() {
        *i += 1;
    }
    let mut is_float = false;
    if *i + 1 < b.len() && b[*i] == b'.' && b[*i + 1].is_ascii_digit() {
        is_float = true;
        *i += 1;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
    }
    if *i < b.len() && (b[*i] == b'e' || b[*i] == b'E') {
        let mut j = *i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            is_float = true;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            *i = j;
        }
    }
    let num = &src[start..*i];
    // A unit glued to the number makes a duration: `250us`, `30m`.
    let ustart = *i;
    while *i < b.len() && b[*i].is_ascii_alphabetic() {
        *i += 1;
    }
    if *i > ustart {
        let unit = &src[ustart..*i];
        let Some(mult) = duration_unit(unit) else {
            return Err(LexError {
                span: Span::new(start, *i),
                message: format!("unknown duration unit `{unit}` (use ns, us, ms, s, m, h or d)"),
            });
        };
        let v: f64 = num.parse().map_err(|_| LexError {
            span: Span::new(start, *i),
            message: format!("bad number `{num}`"),
        })?;
        let ns = v * mult as f64;
        if !(0.0..9.2e18).contains(&ns) {
            return Err(LexError {
                span: Span::new(start, *i),
                message: "duration out of range".into(),
            });
        }
        return Ok(Tok::Duration(ns.round() as i64));
    }
    if is_float {
        num.parse::<f64>().map(Tok::Float).map_err(|_| LexError {
            span: Span::new(start, *i),
            message: format!("bad number `{num}`"),
        })
    } else {
        num.parse::<i64>().map(Tok::Int).map_err(|_| LexError {
            span: Span::new(start, *i),
            message: format!("integer `{num}` does not fit in 64 bits"),
        })
    }
}

fn lex_string(src: &str, i: &mut usize) -> Result<String, LexError> {
    let start = *i;
    *i += 1;
    let mut out = String::new();
    let mut chars = src[*i..].char_indices();
    while let Some((off, c)) = chars.next() {
        match c {
            '"' => {
                *i += off + 1;
                return Ok(out);
            }
            '\n' => break,
            '\\' => {
                let Some((eoff, e)) = chars.next() else { break };
                let esc_at = *i + eoff - 1;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    'u' => {
                        let mut code = 0u32;
                        for _ in 0..4 {
                            let d = chars.next().and_then(|(_, h)| h.to_digit(16));
                            let Some(d) = d else {
                                return Err(LexError {
                                    span: Span::new(esc_at, esc_at + 2),
                                    message: "`\\u` needs four hex digits".into(),
                                });
                            };
                            code = code * 16 + d;
                        }
                        match char::from_u32(code) {
                            Some(ch) => out.push(ch),
                            None => {
                                return Err(LexError {
                                    span: Span::new(esc_at, esc_at + 6),
                                    message: "invalid unicode escape".into(),
                                })
                            }
                        }
                    }
                    other => {
                        return Err(LexError {
                            span: Span::new(esc_at, esc_at + 1 + other.len_utf8()),
                            message: format!("unknown escape `\\{other}`"),
                        })
                    }
                }
            }
            c => out.push(c),
        }
    }
    Err(LexError {
        span: Span::new(start, start + 1),
        message: "unterminated string".into(),
    })
}
