//! Session variables a proxy can track and replay instead of pinning the
//! session to one backend connection (ProxySQL's model): the character set
//! variables (`SET NAMES`, `SET CHARACTER SET`, `SET character_set_*`,
//! `SET collation_connection`) and `autocommit`.
//!
//! [`tracked_set`] recognises a `SET` statement made only of such
//! assignments, each with a single-token value (a name, a number, a quoted
//! string or `DEFAULT`); anything else (expressions, user variables,
//! `GLOBAL`, comments, other variables) is `None` and the caller falls back
//! to pinning. [`SessionVars`] keeps the latest assignment of each variable
//! in order and writes the one `SET` statement that recreates them.

/// A tracked session variable (or a statement setting several of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Var {
    /// `SET NAMES cs [COLLATE coll]`: client, results and connection.
    Names,
    /// `SET CHARACTER SET cs` / `SET CHARSET cs`.
    Charset,
    CharacterSetClient,
    CharacterSetResults,
    CharacterSetConnection,
    CollationConnection,
    Autocommit,
}

impl Var {
    fn by_name(name: &[u8]) -> Option<Var> {
        let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        Some(if eq("character_set_client") {
            Var::CharacterSetClient
        } else if eq("character_set_results") {
            Var::CharacterSetResults
        } else if eq("character_set_connection") {
            Var::CharacterSetConnection
        } else if eq("collation_connection") {
            Var::CollationConnection
        } else if eq("autocommit") {
            Var::Autocommit
        } else {
            return None;
        })
    }
    /// Whether setting `self` replaces an earlier assignment of `earlier`.
    fn replaces(self, earlier: Var) -> bool {
        use Var::*;
        match self {
            Names | Charset => earlier != Autocommit,
            CharacterSetConnection | CollationConnection => {
                matches!(earlier, CharacterSetConnection | CollationConnection)
            }
            _ => earlier == self,
        }
    }
}

/// One tracked assignment: the variable and its text for replay
/// (`NAMES latin1 COLLATE latin1_bin`, `autocommit = 0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Assignment {
    pub var: Var,
    pub text: String,
}

/// A statement's bytes without surrounding whitespace and trailing `;`.
fn trim(sql: &[u8]) -> &[u8] {
    let mut s = sql.trim_ascii();
    while let Some(rest) = s.strip_suffix(b";") {
        s = rest.trim_ascii_end();
    }
    s
}

/// Split on commas outside quotes; `None` on an unterminated quote.
fn split_commas(sql: &[u8]) -> Option<Vec<&[u8]>> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while let Some(&c) = sql.get(i) {
        match quote {
            Some(q) if c == b'\\' && q != b'`' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if matches!(c, b'\'' | b'"' | b'`') => quote = Some(c),
            None if c == b',' => {
                parts.push(sql.get(start..i)?);
                start = i + 1;
            }
            None => {}
        }
        i += 1;
    }
    if quote.is_some() {
        return None;
    }
    parts.push(sql.get(start..)?);
    Some(parts)
}

/// Split off the first token of `s` (after whitespace): a word, a quoted
/// string, or one punctuation character (`:=` as one).
fn token(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = s.trim_ascii_start();
    let &c = s.first()?;
    let end = if matches!(c, b'\'' | b'"' | b'`') {
        let mut i = 1;
        loop {
            match s.get(i) {
                None => return None,
                Some(b'\\') if c != b'`' => i += 2,
                Some(&d) if d == c => {
                    if s.get(i + 1) == Some(&c) {
                        i += 2;
                    } else {
                        break i + 1;
                    }
                }
                Some(_) => i += 1,
            }
        }
    } else if c.is_ascii_alphanumeric() || c == b'_' {
        s.iter()
            .position(|&d| !(d.is_ascii_alphanumeric() || d == b'_'))
            .unwrap_or(s.len())
    } else if c == b':' && s.get(1) == Some(&b'=') {
        2
    } else {
        1
    };
    Some((s.get(..end)?, s.get(end..)?))
}

fn is_word(t: &[u8]) -> bool {
    t.first()
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn is_value(t: &[u8]) -> bool {
    is_word(t) || t.first().is_some_and(|c| matches!(c, b'\'' | b'"'))
}

fn kw(t: &[u8], k: &str) -> bool {
    t.eq_ignore_ascii_case(k.as_bytes())
}

fn text(t: &[u8]) -> Option<&str> {
    std::str::from_utf8(t).ok()
}

/// One assignment of a `SET` statement, or `None` when it is not tracked.
fn assignment(part: &[u8]) -> Option<Assignment> {
    let (first, rest) = token(part)?;
    if kw(first, "NAMES") {
        let (cs, rest) = token(rest)?;
        if !is_value(cs) {
            return None;
        }
        let mut out = format!("NAMES {}", text(cs)?);
        if let Some((c, rest)) = token(rest) {
            let (coll, rest) = token(rest)?;
            if !kw(c, "COLLATE") || !is_value(coll) || !rest.trim_ascii().is_empty() {
                return None;
            }
            out.push_str(" COLLATE ");
            out.push_str(text(coll)?);
        }
        return Some(Assignment {
            var: Var::Names,
            text: out,
        });
    }
    let charset_value = if kw(first, "CHARSET") {
        Some(rest)
    } else if kw(first, "CHARACTER") {
        let (set, rest) = token(rest)?;
        if !kw(set, "SET") {
            return None;
        }
        Some(rest)
    } else {
        None
    };
    if let Some(rest) = charset_value {
        let (cs, rest) = token(rest)?;
        if !is_value(cs) || !rest.trim_ascii().is_empty() {
            return None;
        }
        return Some(Assignment {
            var: Var::Charset,
            text: format!("CHARACTER SET {}", text(cs)?),
        });
    }
    // `[SESSION | LOCAL] name`, `@@[session. | local.]name`.
    let (name, rest) = if first == b"@" {
        let (at, rest) = token(rest)?;
        if at != b"@" {
            return None;
        }
        let (name, rest) = token(rest)?;
        if kw(name, "session") || kw(name, "local") {
            let (dot, rest) = token(rest)?;
            if dot != b"." {
                return None;
            }
            token(rest)?
        } else {
            (name, rest)
        }
    } else if kw(first, "SESSION") || kw(first, "LOCAL") {
        token(rest)?
    } else {
        (first, rest)
    };
    let var = Var::by_name(name)?;
    let (eq, rest) = token(rest)?;
    if eq != b"=" && eq != b":=" {
        return None;
    }
    let (value, rest) = token(rest)?;
    if !is_value(value) || !rest.trim_ascii().is_empty() {
        return None;
    }
    Some(Assignment {
        var,
        text: format!("{} = {}", text(name)?.to_ascii_lowercase(), text(value)?),
    })
}

/// The assignments of `sql` when it is a `SET` of tracked session
/// variables only (see the module docs); `None` otherwise.
pub fn tracked_set(sql: &[u8]) -> Option<Vec<Assignment>> {
    // The first word decides for almost every query, before any scan.
    let (set, rest) = token(sql)?;
    if !kw(set, "SET") {
        return None;
    }
    let rest = trim(rest);
    if rest.len() > 4096 || memchr::memchr3(b'#', b'/', b';', rest).is_some() || has_dashes(rest) {
        return None;
    }
    split_commas(rest)?.into_iter().map(assignment).collect()
}

fn has_dashes(sql: &[u8]) -> bool {
    memchr::memmem::find(sql, b"--").is_some()
}

/// A session's tracked variables: the latest assignment of each, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SessionVars {
    set: Vec<Assignment>,
}

impl SessionVars {
    /// No variable was set.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
    /// Record assignments that the server accepted.
    pub fn apply(&mut self, assignments: impl IntoIterator<Item = Assignment>) {
        for a in assignments {
            self.set.retain(|e| !a.var.replaces(e.var));
            self.set.push(a);
        }
    }
    /// The one `SET` statement that recreates these variables on a fresh
    /// connection (`None` when there is nothing to set).
    pub fn replay(&self) -> Option<String> {
        if self.set.is_empty() {
            return None;
        }
        let mut out = String::from("SET ");
        for (i, a) in self.set.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&a.text);
        }
        Some(out)
    }
    /// A hash of the variables (0 for none): the pool keeps connections
    /// apart by it, so a session gets one that already has its state.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        if self.set.is_empty() {
            return 0;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.set.hash(&mut h);
        h.finish() | 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Option<Vec<String>> {
        tracked_set(sql.as_bytes()).map(|v| v.into_iter().map(|a| a.text).collect())
    }

    #[test]
    fn charset_and_autocommit_sets_are_tracked() {
        assert_eq!(
            texts("SET NAMES utf8mb4"),
            Some(vec!["NAMES utf8mb4".into()])
        );
        assert_eq!(
            texts("set names 'utf8mb4' collate 'utf8mb4_unicode_ci';"),
            Some(vec!["NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'".into()])
        );
        assert_eq!(
            texts("SET AUTOCOMMIT = 0"),
            Some(vec!["autocommit = 0".into()])
        );
        assert_eq!(
            texts("SET @@session.autocommit=1, character_set_results = NULL"),
            Some(vec![
                "autocommit = 1".into(),
                "character_set_results = NULL".into()
            ])
        );
        assert_eq!(
            texts("SET SESSION collation_connection := latin1_bin"),
            Some(vec!["collation_connection = latin1_bin".into()])
        );
        assert_eq!(
            texts("SET CHARACTER SET latin1"),
            Some(vec!["CHARACTER SET latin1".into()])
        );
        assert_eq!(
            texts("SET @@autocommit = ON"),
            Some(vec!["autocommit = ON".into()])
        );
    }

    #[test]
    fn anything_else_is_not_tracked() {
        for sql in [
            "SET @x = 1",
            "SET sql_mode = ''",
            "SET GLOBAL autocommit = 0",
            "SET @@global.autocommit = 0",
            "SET autocommit = 0, @x = 1",
            "SET autocommit = 1 + 0",
            "SET autocommit = @x",
            "SET NAMES utf8 /* c */",
            "SET NAMES utf8; SELECT 1",
            "SET NAMES utf8 COLLATE",
            "SET NAMES 'utf8",
            "SELECT 1",
            "SET",
            "SET character_set_client = (SELECT 'x')",
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        ] {
            assert_eq!(texts(sql), None, "{sql}");
        }
    }

    #[test]
    fn later_assignments_replace_what_they_override_in_order() {
        let mut v = SessionVars::default();
        assert_eq!(v.replay(), None);
        assert_eq!(v.fingerprint(), 0);
        let set = |sql: &str| tracked_set(sql.as_bytes()).unwrap();
        v.apply(set("SET character_set_results = latin1, autocommit = 0"));
        v.apply(set("SET NAMES utf8mb4"));
        assert_eq!(v.replay().unwrap(), "SET autocommit = 0, NAMES utf8mb4");
        v.apply(set(
            "SET collation_connection = utf8mb4_bin, autocommit = 1",
        ));
        v.apply(set("SET character_set_connection = latin1"));
        assert_eq!(
            v.replay().unwrap(),
            "SET NAMES utf8mb4, autocommit = 1, character_set_connection = latin1"
        );
        let mut same = SessionVars::default();
        same.apply(set(
            "SET NAMES utf8mb4, autocommit = 1, character_set_connection = latin1",
        ));
        assert_eq!(same.fingerprint(), v.fingerprint());
        assert_ne!(same.fingerprint(), 0);
    }
}
