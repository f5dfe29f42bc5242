//! The command phase, client side: command bytes, the response shape each
//! one gets, a SQL statement classifier for read/write split and session
//! stickiness, and a query digest (literals replaced by `?`).
//!
//! The classifier is a tokenizer, not a SQL parser: it skips string
//! literals, quoted identifiers and comments, and decides on the first
//! keyword and a few words anywhere (`FOR UPDATE`, `LAST_INSERT_ID`, user
//! variables, ...). Where it is unsure it chooses the primary and pins the
//! session: a wrong "read" could lose a write, a wrong "write" only costs load.

use super::response::Expect;

pub const QUIT: u8 = 0x01;
pub const INIT_DB: u8 = 0x02;
pub const QUERY: u8 = 0x03;
pub const FIELD_LIST: u8 = 0x04;
pub const STATISTICS: u8 = 0x09;
pub const PROCESS_INFO: u8 = 0x0A;
pub const PROCESS_KILL: u8 = 0x0C;
pub const PING: u8 = 0x0E;
pub const CHANGE_USER: u8 = 0x11;
pub const BINLOG_DUMP: u8 = 0x12;
pub const STMT_PREPARE: u8 = 0x16;
pub const STMT_EXECUTE: u8 = 0x17;
pub const STMT_SEND_LONG_DATA: u8 = 0x18;
pub const STMT_CLOSE: u8 = 0x19;
pub const STMT_RESET: u8 = 0x1A;
pub const SET_OPTION: u8 = 0x1B;
pub const STMT_FETCH: u8 = 0x1C;
pub const RESET_CONNECTION: u8 = 0x1F;
/// MariaDB's COM_STMT_BULK_EXECUTE (needs `MARIADB_CLIENT_STMT_BULK_OPERATIONS`).
pub const STMT_BULK_EXECUTE: u8 = 0xFA;

/// A client command, by its first payload byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command(pub u8);

impl Command {
    /// The shape of the server's response to this command; `None` for
    /// commands a proxy must not forward (replication, unknown).
    pub fn expect(self) -> Option<Expect> {
        Some(match self.0 {
            QUIT | STMT_CLOSE | STMT_SEND_LONG_DATA => Expect::Nothing,
            QUERY | STMT_EXECUTE | STMT_BULK_EXECUTE | PROCESS_INFO => Expect::ResultSet,
            STMT_PREPARE => Expect::Prepare,
            STMT_FETCH => Expect::Rows,
            FIELD_LIST => Expect::FieldList,
            INIT_DB
            | STATISTICS
            | PROCESS_KILL
            | PING
            | STMT_RESET
            | SET_OPTION
            | RESET_CONNECTION
            | 0x05..=0x08
            | 0x0D => Expect::Single,
            _ => return None,
        })
    }
    /// The command's name, for metadata and logs.
    pub fn name(self) -> &'static str {
        match self.0 {
            QUIT => "COM_QUIT",
            INIT_DB => "COM_INIT_DB",
            QUERY => "COM_QUERY",
            FIELD_LIST => "COM_FIELD_LIST",
            STATISTICS => "COM_STATISTICS",
            PROCESS_INFO => "COM_PROCESS_INFO",
            PROCESS_KILL => "COM_PROCESS_KILL",
            PING => "COM_PING",
            CHANGE_USER => "COM_CHANGE_USER",
            BINLOG_DUMP => "COM_BINLOG_DUMP",
            STMT_PREPARE => "COM_STMT_PREPARE",
            STMT_EXECUTE => "COM_STMT_EXECUTE",
            STMT_SEND_LONG_DATA => "COM_STMT_SEND_LONG_DATA",
            STMT_CLOSE => "COM_STMT_CLOSE",
            STMT_RESET => "COM_STMT_RESET",
            SET_OPTION => "COM_SET_OPTION",
            STMT_FETCH => "COM_STMT_FETCH",
            RESET_CONNECTION => "COM_RESET_CONNECTION",
            STMT_BULK_EXECUTE => "COM_STMT_BULK_EXECUTE",
            _ => "COM_UNKNOWN",
        }
    }
}

/// Where a statement may run, and what it does to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    /// A plain read: a replica may answer it.
    pub read: bool,
    /// It creates session state (user variables, temporary tables, table
    /// locks, SQL-level prepared statements, session variables, named
    /// locks): the session must stay on one primary connection from now on.
    pub pins: bool,
    /// It is `USE schema`.
    pub is_use: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a [u8]),
    /// `@name` (not `@@name`).
    UserVar,
    /// `@@name`.
    SysVar,
    /// A string or number literal.
    Literal,
    /// `/*! ... */` or `/*M! ... */`: code the server runs.
    ExecComment,
    Punct(u8),
}

/// Split SQL into tokens, skipping whitespace and comments.
struct Tokens<'a> {
    sql: &'a [u8],
    i: usize,
}

impl<'a> Tokens<'a> {
    fn new(sql: &'a [u8]) -> Self {
        Self { sql, i: 0 }
    }
    fn at(&self, k: usize) -> u8 {
        self.sql.get(self.i + k).copied().unwrap_or(0)
    }
    fn skip_quoted(&mut self, q: u8) {
        self.i += 1;
        while self.i < self.sql.len() {
            let c = self.at(0);
            if c == b'\\' && q != b'`' {
                self.i += 2;
            } else if c == q {
                if self.at(1) == q {
                    self.i += 2;
                } else {
                    self.i += 1;
                    return;
                }
            } else {
                self.i += 1;
            }
        }
    }
    fn word_end(&self, from: usize) -> usize {
        let mut j = from;
        while let Some(&c) = self.sql.get(j) {
            if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
                j += 1;
            } else {
                break;
            }
        }
        j
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;
    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            let c = *self.sql.get(self.i)?;
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | 0x0B | 0x0C => self.i += 1,
                b'#' => self.skip_line(),
                b'-' if self.at(1) == b'-'
                    && matches!(self.at(2), b' ' | b'\t' | b'\r' | b'\n' | 0) =>
                {
                    self.skip_line()
                }
                b'/' if self.at(1) == b'*' => {
                    let exec = self.at(2) == b'!' || (self.at(2) == b'M' && self.at(3) == b'!');
                    let body = self.sql.get(self.i + 2..).unwrap_or_default();
                    let end = memchr::memmem::find(body, b"*/")
                        .map_or(self.sql.len(), |e| self.i + 2 + e + 2);
                    self.i = end;
                    if exec {
                        return Some(Token::ExecComment);
                    }
                }
                b'\'' | b'"' => {
                    self.skip_quoted(c);
                    return Some(Token::Literal);
                }
                b'`' => {
                    let start = self.i + 1;
                    self.skip_quoted(c);
                    let end = self.i.saturating_sub(1).max(start);
                    return Some(Token::Word(self.sql.get(start..end).unwrap_or_default()));
                }
                b'@' => {
                    if self.at(1) == b'@' {
                        self.i = self.word_end(self.i + 2);
                        return Some(Token::SysVar);
                    }
                    let from = self.i + 1;
                    if matches!(self.at(1), b'\'' | b'"' | b'`') {
                        self.i += 1;
                        self.skip_quoted(self.at(0));
                    } else {
                        self.i = self.word_end(from);
                    }
                    return Some(Token::UserVar);
                }
                b'0'..=b'9' => {
                    let mut j = self.i;
                    while let Some(&d) = self.sql.get(j) {
                        if d.is_ascii_alphanumeric() || d == b'.' || d == b'_' {
                            j += 1;
                        } else {
                            break;
                        }
                    }
                    self.i = j;
                    return Some(Token::Literal);
                }
                c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 => {
                    let start = self.i;
                    self.i = self.word_end(start);
                    return Some(Token::Word(self.sql.get(start..self.i).unwrap_or_default()));
                }
                _ => {
                    self.i += 1;
                    return Some(Token::Punct(c));
                }
            }
        }
    }
}

impl Tokens<'_> {
    fn skip_line(&mut self) {
        self.i = memchr::memchr(b'\n', self.sql.get(self.i..).unwrap_or_default())
            .map_or(self.sql.len(), |e| self.i + e + 1);
    }
}

fn is(word: &[u8], kw: &str) -> bool {
    word.eq_ignore_ascii_case(kw.as_bytes())
}

/// How much of a statement the classifier reads (a huge INSERT is a write
/// by its first word; the rest cannot turn it into a read).
const SCAN_LIMIT: usize = 64 * 1024;

/// Classify one COM_QUERY text (see the module docs).
pub fn classify(sql: &[u8]) -> Statement {
    let sql = sql.get(..SCAN_LIMIT).unwrap_or(sql);
    let write = Statement {
        read: false,
        pins: false,
        is_use: false,
    };
    let pinned = Statement {
        read: false,
        pins: true,
        is_use: false,
    };
    let mut tokens = Tokens::new(sql).skip_while(|t| *t == Token::Punct(b'('));
    let first = match tokens.next() {
        Some(Token::Word(w)) => w,
        Some(Token::ExecComment) => return pinned,
        _ => return write,
    };
    let rest: Vec<Token> = tokens.collect();
    let words = || {
        rest.iter().filter_map(|t| {
            if let Token::Word(w) = t {
                Some(*w)
            } else {
                None
            }
        })
    };
    let has = |kw: &str| words().any(|w| is(w, kw));
    // Several statements in one query: the primary, pinned (any may set state).
    let multi = rest
        .iter()
        .position(|t| *t == Token::Punct(b';'))
        .is_some_and(|at| rest.get(at + 1..).is_some_and(|after| !after.is_empty()));
    if multi || rest.contains(&Token::ExecComment) {
        return pinned;
    }
    let user_vars = rest.contains(&Token::UserVar);
    if ["SET", "LOCK", "PREPARE", "EXECUTE", "DEALLOCATE", "HANDLER"]
        .iter()
        .any(|k| is(first, k))
    {
        return pinned;
    }
    if is(first, "CREATE") && words().next().is_some_and(|w| is(w, "TEMPORARY")) {
        return pinned;
    }
    if is(first, "USE") {
        return Statement {
            read: false,
            pins: false,
            is_use: true,
        };
    }
    let reads = [
        "SELECT", "SHOW", "DESC", "DESCRIBE", "EXPLAIN", "WITH", "VALUES", "TABLE", "HELP",
    ];
    if !reads.iter().any(|k| is(first, k)) {
        return Statement {
            pins: user_vars,
            ..write
        };
    }
    if user_vars
        || [
            "GET_LOCK",
            "RELEASE_LOCK",
            "RELEASE_ALL_LOCKS",
            "IS_USED_LOCK",
        ]
        .iter()
        .any(|k| has(k))
    {
        return pinned;
    }
    let locking = words().zip(words().skip(1)).any(|(a, b)| {
        (is(a, "FOR") && (is(b, "UPDATE") || is(b, "SHARE"))) || (is(a, "SHARE") && is(b, "MODE"))
    });
    let session = [
        "LAST_INSERT_ID",
        "FOUND_ROWS",
        "ROW_COUNT",
        "INTO",
        "UPDATE",
        "DELETE",
        "INSERT",
    ]
    .iter()
    .any(|k| has(k));
    if locking || session {
        return write;
    }
    Statement {
        read: true,
        pins: false,
        is_use: false,
    }
}

/// A `KILL` statement: `KILL [HARD | SOFT] [CONNECTION | QUERY [ID]] <id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    /// `KILL QUERY`: only the running statement; else the whole connection.
    pub query: bool,
    pub id: u64,
}

/// The `KILL` statement in `sql`, if it is one that names a connection id
/// (`KILL USER name` and expressions are `None`).
pub fn kill(sql: &[u8]) -> Option<Kill> {
    let mut sql = sql.trim_ascii();
    while let Some(rest) = sql.strip_suffix(b";") {
        sql = rest.trim_ascii_end();
    }
    if sql.len() > 128 {
        return None;
    }
    let mut words = sql
        .split(|c| c.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    if !is(words.next()?, "KILL") {
        return None;
    }
    let mut word = words.next()?;
    if is(word, "HARD") || is(word, "SOFT") {
        word = words.next()?;
    }
    let mut query = false;
    if is(word, "CONNECTION") {
        word = words.next()?;
    } else if is(word, "QUERY") {
        query = true;
        word = words.next()?;
        if is(word, "ID") {
            word = words.next()?;
        }
    }
    if words.next().is_some() || word.is_empty() || !word.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let id = std::str::from_utf8(word).ok()?.parse().ok()?;
    Some(Kill { query, id })
}

/// `sql` with every `CONNECTION_ID()` call replaced by `id` (outside
/// strings, quoted names and comments); `None` when there is none.
pub fn rewrite_connection_id(sql: &[u8], id: u32) -> Option<Vec<u8>> {
    // Cheap test first: the word's underscore, then the whole word.
    let found = memchr::memchr_iter(b'_', sql).any(|i| {
        i >= 10
            && sql
                .get(i - 10..i + 3)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"connection_id"))
    });
    if !found {
        return None;
    }
    let mut calls = Vec::new();
    let mut t = Tokens::new(sql);
    let mut prev: [Option<(Token, usize)>; 2] = [None, None];
    while let Some(tok) = t.next() {
        let end = t.i;
        if tok == Token::Punct(b')')
            && let [Some((Token::Word(w), w_end)), Some((Token::Punct(b'('), _))] = prev
            && is(w, "CONNECTION_ID")
            && sql.get(w_end - w.len()..w_end) == Some(w)
        {
            calls.push((w_end - w.len(), end));
        }
        prev = [prev[1], Some((tok, end))];
    }
    if calls.is_empty() {
        return None;
    }
    let id = id.to_string();
    let mut out = Vec::with_capacity(sql.len());
    let mut at = 0;
    for (start, end) in calls {
        out.extend_from_slice(sql.get(at..start)?);
        out.extend_from_slice(id.as_bytes());
        at = end;
    }
    out.extend_from_slice(sql.get(at..)?);
    Some(out)
}

/// The schema named by `USE schema` (backquotes removed).
pub fn use_schema(sql: &[u8]) -> Option<&[u8]> {
    let mut t = Tokens::new(sql);
    match (t.next(), t.next()) {
        (Some(Token::Word(u)), Some(Token::Word(db))) if is(u, "USE") => Some(db),
        _ => None,
    }
}

/// A query's digest: keywords upper-cased, literals replaced by `?`, comments
/// dropped, whitespace collapsed, `IN (?, ?, ...)` folded to `IN (...)`;
/// at most `max` bytes.
pub fn digest(sql: &[u8], max: usize) -> String {
    let sql = sql.get(..SCAN_LIMIT).unwrap_or(sql);
    let mut out = String::with_capacity(sql.len().min(max));
    let mut prev: Option<Token> = None;
    let mut in_list = 0usize;
    // Just after a folded `(...)` and its comma: a next `(` is folded too.
    let mut list_chain = false;
    for t in Tokens::new(sql) {
        if out.len() >= max {
            break;
        }
        // `(?, ?, ?)` → `(...)`.
        if in_list > 0 {
            match t {
                Token::Literal | Token::Punct(b',') => continue,
                Token::Punct(b')') => {
                    in_list = 0;
                    out.push_str("...)");
                    prev = Some(t);
                    list_chain = true;
                    continue;
                }
                _ => in_list = 0,
            }
        }
        let piece: std::borrow::Cow<str> = match t {
            Token::Word(w) => String::from_utf8_lossy(w),
            Token::Literal => "?".into(),
            Token::UserVar => "@?".into(),
            Token::SysVar => "@@?".into(),
            Token::ExecComment => continue,
            Token::Punct(c) => char::from(c).to_string().into(),
        };
        let glue = !matches!(
            (prev, t),
            (None, _)
                | (Some(Token::Punct(b'(' | b'.')), _)
                | (_, Token::Punct(b',' | b')' | b'.' | b';'))
        );
        if glue {
            out.push(' ');
        }
        out.push_str(&piece);
        let opens_list = matches!(prev, Some(Token::Word(w)) if is(w, "IN") || is(w, "VALUES"))
            || (list_chain && prev == Some(Token::Punct(b',')));
        if t == Token::Punct(b'(') && opens_list {
            in_list = 1;
        }
        if t != Token::Punct(b',') {
            list_chain = false;
        }
        prev = Some(t);
    }
    out.truncate(floor_char_boundary(&out, max));
    out
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(sql: &str) -> bool {
        classify(sql.as_bytes()).read
    }
    fn pins(sql: &str) -> bool {
        classify(sql.as_bytes()).pins
    }

    #[test]
    fn plain_selects_are_reads() {
        for sql in [
            "SELECT 1",
            "  select * from t where id = 3",
            "/* hint */ SELECT @@port",
            "-- c\nSELECT a FROM t",
            "(SELECT 1) UNION (SELECT 2)",
            "SHOW TABLES",
            "select * from users where email = 'a@b.c'",
            "select 'for update' from t",
            "SELECT c FROM sbtest1 WHERE id=5;",
        ] {
            assert!(read(sql), "{sql}");
            assert!(!pins(sql), "{sql}");
        }
    }

    #[test]
    fn writes_locking_reads_and_session_reads_go_to_the_primary() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "update t set a=1",
            "SELECT * FROM t WHERE id=1 FOR UPDATE",
            "select * from t lock in share mode",
            "SELECT * FROM t FOR SHARE",
            "SELECT LAST_INSERT_ID()",
            "select found_rows()",
            "SELECT a INTO OUTFILE '/tmp/x' FROM t",
            "BEGIN",
            "START TRANSACTION",
            "COMMIT",
            "CALL p()",
            "",
            "-- only a comment",
        ] {
            assert!(!read(sql), "{sql}");
        }
    }

    #[test]
    fn session_state_pins() {
        for sql in [
            "SET @x = 1",
            "set names utf8mb4",
            "SET autocommit=0",
            "LOCK TABLES t WRITE",
            "CREATE TEMPORARY TABLE tmp (a int)",
            "SELECT @x := 1",
            "SELECT @x",
            "SELECT GET_LOCK('a', 1)",
            "PREPARE s FROM 'select 1'",
            "SELECT 1; SET @a = 2",
            "/*!40101 SET NAMES utf8 */",
            "insert into t values (@x)",
        ] {
            assert!(pins(sql), "{sql}");
            assert!(!read(sql), "{sql}");
        }
        assert!(!pins("CREATE TABLE t (a int)"));
    }

    #[test]
    fn kill_statements_are_recognised() {
        let k = |sql: &str| kill(sql.as_bytes());
        assert_eq!(
            k("KILL 42"),
            Some(Kill {
                query: false,
                id: 42
            })
        );
        assert_eq!(
            k("kill connection 7;"),
            Some(Kill {
                query: false,
                id: 7
            })
        );
        assert_eq!(k("KILL QUERY 9"), Some(Kill { query: true, id: 9 }));
        assert_eq!(k("KILL HARD QUERY ID 3"), Some(Kill { query: true, id: 3 }));
        assert_eq!(
            k("KILL SOFT 5"),
            Some(Kill {
                query: false,
                id: 5
            })
        );
        for sql in [
            "KILL USER app",
            "KILL 1+1",
            "KILL",
            "SELECT 1",
            "KILL QUERY",
            "KILL 99999999999999999999999",
        ] {
            assert_eq!(k(sql), None, "{sql}");
        }
    }

    #[test]
    fn connection_id_calls_are_rewritten_outside_strings() {
        let r = |sql: &str| {
            rewrite_connection_id(sql.as_bytes(), 77).map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(r("SELECT CONNECTION_ID()").as_deref(), Some("SELECT 77"));
        assert_eq!(
            r("select connection_id ( ), 'CONNECTION_ID()' /* CONNECTION_ID() */, x.connection_id from t").as_deref(),
            Some("select 77, 'CONNECTION_ID()' /* CONNECTION_ID() */, x.connection_id from t")
        );
        assert_eq!(r("SELECT 1"), None);
        assert_eq!(r("SELECT 'connection_id()'"), None);
        assert_eq!(r("_"), None);
    }

    #[test]
    fn use_is_recognised_with_its_schema() {
        assert!(classify(b"USE shop").is_use);
        assert_eq!(use_schema(b"use `my db`"), Some(&b"my db"[..]));
        assert_eq!(use_schema(b"USE shop"), Some(&b"shop"[..]));
        assert_eq!(use_schema(b"SELECT 1"), None);
    }

    #[test]
    fn digests_fold_literals_and_lists() {
        assert_eq!(
            digest(b"SELECT c FROM sbtest1 WHERE id=42", 1024),
            "SELECT c FROM sbtest1 WHERE id = ?"
        );
        assert_eq!(
            digest(
                b"select  *\n from t where name = 'bob' and id in (1, 2, 3)",
                1024
            ),
            "select * from t where name = ? and id in (...)"
        );
        assert_eq!(
            digest(b"INSERT INTO t VALUES (1,'a'),(2,'b')", 1024),
            "INSERT INTO t VALUES (...), (...)"
        );
        assert_eq!(digest(b"SELECT 1", 3), "SEL");
    }

    #[test]
    fn every_forwarded_command_has_a_response_shape() {
        assert_eq!(Command(QUERY).expect(), Some(Expect::ResultSet));
        assert_eq!(Command(STMT_CLOSE).expect(), Some(Expect::Nothing));
        assert_eq!(Command(STMT_PREPARE).expect(), Some(Expect::Prepare));
        assert_eq!(Command(BINLOG_DUMP).expect(), None);
        assert_eq!(Command(CHANGE_USER).expect(), None);
    }
}
