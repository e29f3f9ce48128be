//! The pattern language: lexer, parser, syntax tree and diagnostics.
//!
//! The language is described in `docs/patterns.md`. [`parse`] turns a file into
//! [`ast::PatternDecl`]s or into located [`Diagnostic`]s.

pub mod ast;
pub mod diag;
pub mod lexer;
pub mod parser;

pub use diag::{Diagnostic, Diagnostics, Span};

/// Parses one pattern file. `file` names it in diagnostics.
///
/// ```
/// let src = "pattern p\n  from bets\n  match a -> b\n  emit out { n: 1 }\n";
/// let pats = kairos::lang::parse("p.cep", src).unwrap();
/// assert_eq!(pats[0].name.name, "p");
/// ```
pub fn parse(file: &str, source: &str) -> Result<Vec<ast::PatternDecl>, Diagnostics> {
    let (pats, errs) = parse_partial(file, source);
    if errs.is_empty() {
        Ok(pats)
    } else {
        Err(Diagnostics(errs))
    }
}

/// Parses what it can: the blocks that parse, and one diagnostic per block that does not.
pub fn parse_partial(file: &str, source: &str) -> (Vec<ast::PatternDecl>, Vec<Diagnostic>) {
    let toks = match lexer::lex(source) {
        Ok(t) => t,
        Err(e) => {
            return (
                Vec::new(),
                vec![Diagnostic::at(file, source, e.span, e.message)],
            )
        }
    };
    let (pats, errs) = parser::Parser::new(&toks).parse_file();
    let diags = errs
        .into_iter()
        .map(|e| {
            let d = Diagnostic::at(file, source, e.span, e.message);
            match e.hint {
                Some(h) => d.with_hint(h),
                None => d,
            }
        })
        .collect();
    (pats, diags)
}
