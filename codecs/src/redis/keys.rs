//! Where a command's keys are: a compact, case-insensitive command table.
//!
//! Only commands listed here have keys; unknown commands have none, so a
//! router sends them to the default route rather than guessing a shard.
use super::Command;
use super::parse::parse_int;

/// Argument positions of the keys: `extra` (if any), then `start..end` by `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    pub extra: Option<usize>,
    pub start: usize,
    pub end: usize,
    pub step: usize,
}

impl Plan {
    const NONE: Plan = Plan {
        extra: None,
        start: 0,
        end: 0,
        step: 1,
    };

    fn range(start: usize, end: usize, step: usize) -> Plan {
        Plan {
            extra: None,
            start,
            end: end.max(start),
            step,
        }
    }
}

/// How a command lays out its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// No keys.
    None,
    /// Argument 1.
    First,
    /// Argument 2 (after a subcommand: `OBJECT ENCODING key`).
    Second,
    /// Arguments 1 and 2 (`RENAME src dst`).
    FirstTwo,
    /// Every argument after the name (`DEL k1 k2`).
    All,
    /// Every argument but the last (`BLPOP k1 k2 timeout`).
    AllButLast,
    /// Arguments 1, 3, 5, ... (`MSET k1 v1 k2 v2`).
    Interleaved,
    /// `numkeys` at argument `at`, keys right after it; `dest` adds argument 1
    /// (`EVAL script 2 k1 k2`, `ZUNIONSTORE dst 2 k1 k2`).
    NumKeys { at: usize, dest: bool },
    /// `XREAD ... STREAMS k1 k2 id1 id2`.
    Streams,
}

/// Longest command name in the table.
const MAX_NAME: usize = 24;

fn spec(upper: &[u8]) -> Spec {
    match upper {
        // Strings, generic
        b"GET" | b"SET" | b"GETSET" | b"GETDEL" | b"GETEX" | b"SETNX" | b"SETEX" | b"PSETEX"
        | b"APPEND" | b"STRLEN" | b"INCR" | b"DECR" | b"INCRBY" | b"DECRBY" | b"INCRBYFLOAT"
        | b"GETRANGE" | b"SUBSTR" | b"SETRANGE" | b"EXPIRE" | b"PEXPIRE" | b"EXPIREAT"
        | b"PEXPIREAT" | b"EXPIRETIME" | b"PEXPIRETIME" | b"TTL" | b"PTTL" | b"PERSIST"
        | b"TYPE" | b"DUMP" | b"RESTORE" | b"SORT" | b"SORT_RO" | b"MOVE" => Spec::First,
        // Hashes
        b"HSET" | b"HGET" | b"HDEL" | b"HGETALL" | b"HMSET" | b"HMGET" | b"HINCRBY"
        | b"HINCRBYFLOAT" | b"HKEYS" | b"HVALS" | b"HLEN" | b"HEXISTS" | b"HSETNX" | b"HSCAN"
        | b"HSTRLEN" | b"HRANDFIELD" | b"HEXPIRE" | b"HPEXPIRE" | b"HEXPIREAT" | b"HPEXPIREAT"
        | b"HTTL" | b"HPTTL" | b"HPERSIST" | b"HEXPIRETIME" | b"HPEXPIRETIME" | b"HGETDEL"
        | b"HGETEX" | b"HSETEX" => Spec::First,
        // Lists
        b"LPUSH" | b"RPUSH" | b"LPOP" | b"RPOP" | b"LRANGE" | b"LLEN" | b"LINDEX" | b"LSET"
        | b"LREM" | b"LTRIM" | b"LINSERT" | b"LPOS" | b"LPUSHX" | b"RPUSHX" => Spec::First,
        // Sets
        b"SADD" | b"SREM" | b"SMEMBERS" | b"SISMEMBER" | b"SCARD" | b"SPOP" | b"SRANDMEMBER"
        | b"SMISMEMBER" | b"SSCAN" => Spec::First,
        // Sorted sets
        b"ZADD" | b"ZREM" | b"ZRANGE" | b"ZSCORE" | b"ZINCRBY" | b"ZCARD" | b"ZCOUNT"
        | b"ZRANK" | b"ZREVRANK" | b"ZREVRANGE" | b"ZRANGEBYSCORE" | b"ZREVRANGEBYSCORE"
        | b"ZREMRANGEBYSCORE" | b"ZREMRANGEBYRANK" | b"ZREMRANGEBYLEX" | b"ZSCAN" | b"ZMSCORE"
        | b"ZPOPMIN" | b"ZPOPMAX" | b"ZLEXCOUNT" | b"ZRANGEBYLEX" | b"ZREVRANGEBYLEX"
        | b"ZRANDMEMBER" => Spec::First,
        // HyperLogLog, bitmaps, geo, streams
        b"PFADD"
        | b"SETBIT"
        | b"GETBIT"
        | b"BITCOUNT"
        | b"BITPOS"
        | b"BITFIELD"
        | b"BITFIELD_RO"
        | b"GEOADD"
        | b"GEODIST"
        | b"GEOPOS"
        | b"GEOHASH"
        | b"GEOSEARCH"
        | b"GEORADIUS"
        | b"GEORADIUS_RO"
        | b"GEORADIUSBYMEMBER"
        | b"GEORADIUSBYMEMBER_RO"
        | b"XADD"
        | b"XLEN"
        | b"XRANGE"
        | b"XREVRANGE"
        | b"XDEL"
        | b"XTRIM"
        | b"XACK"
        | b"XCLAIM"
        | b"XAUTOCLAIM"
        | b"XPENDING"
        | b"XSETID" => Spec::First,
        // Subcommand, then the key
        b"OBJECT" | b"MEMORY" | b"XINFO" | b"XGROUP" => Spec::Second,
        b"RENAME" | b"RENAMENX" | b"SMOVE" | b"RPOPLPUSH" | b"BRPOPLPUSH" | b"LMOVE"
        | b"BLMOVE" | b"COPY" | b"LCS" | b"GEOSEARCHSTORE" | b"ZRANGESTORE" => Spec::FirstTwo,
        b"MGET" | b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" | b"WATCH" | b"PFCOUNT"
        | b"PFMERGE" | b"SINTER" | b"SUNION" | b"SDIFF" | b"SINTERSTORE" | b"SUNIONSTORE"
        | b"SDIFFSTORE" => Spec::All,
        b"BLPOP" | b"BRPOP" | b"BZPOPMIN" | b"BZPOPMAX" => Spec::AllButLast,
        b"MSET" | b"MSETNX" => Spec::Interleaved,
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" | b"BLMPOP"
        | b"BZMPOP" => Spec::NumKeys { at: 2, dest: false },
        b"ZUNION" | b"ZINTER" | b"ZDIFF" | b"ZINTERCARD" | b"SINTERCARD" | b"LMPOP" | b"ZMPOP" => {
            Spec::NumKeys { at: 1, dest: false }
        }
        b"ZUNIONSTORE" | b"ZINTERSTORE" | b"ZDIFFSTORE" => Spec::NumKeys { at: 2, dest: true },
        b"XREAD" | b"XREADGROUP" => Spec::Streams,
        _ => Spec::None,
    }
}

/// Whether a command only reads data (Redis' `readonly` flag): what a proxy
/// may send to a replica. Unknown commands are not.
pub(super) fn is_read_only(cmd: &Command) -> bool {
    let name = cmd.name();
    let mut upper = [0u8; MAX_NAME];
    let Some(slot) = upper.get_mut(..name.len()) else {
        return false;
    };
    slot.copy_from_slice(name);
    slot.make_ascii_uppercase();
    matches!(
        &*slot,
        b"GET"
            | b"MGET"
            | b"STRLEN"
            | b"GETRANGE"
            | b"SUBSTR"
            | b"LCS"
            | b"EXISTS"
            | b"TTL"
            | b"PTTL"
            | b"EXPIRETIME"
            | b"PEXPIRETIME"
            | b"TYPE"
            | b"DUMP"
            | b"SORT_RO"
            | b"HGET"
            | b"HMGET"
            | b"HGETALL"
            | b"HKEYS"
            | b"HVALS"
            | b"HLEN"
            | b"HEXISTS"
            | b"HSTRLEN"
            | b"HRANDFIELD"
            | b"HSCAN"
            | b"HTTL"
            | b"HPTTL"
            | b"HEXPIRETIME"
            | b"HPEXPIRETIME"
            | b"LRANGE"
            | b"LLEN"
            | b"LINDEX"
            | b"LPOS"
            | b"SMEMBERS"
            | b"SISMEMBER"
            | b"SMISMEMBER"
            | b"SCARD"
            | b"SRANDMEMBER"
            | b"SSCAN"
            | b"SINTER"
            | b"SUNION"
            | b"SDIFF"
            | b"SINTERCARD"
            | b"ZRANGE"
            | b"ZRANGEBYSCORE"
            | b"ZRANGEBYLEX"
            | b"ZREVRANGE"
            | b"ZREVRANGEBYSCORE"
            | b"ZREVRANGEBYLEX"
            | b"ZSCORE"
            | b"ZMSCORE"
            | b"ZCARD"
            | b"ZCOUNT"
            | b"ZLEXCOUNT"
            | b"ZRANK"
            | b"ZREVRANK"
            | b"ZSCAN"
            | b"ZRANDMEMBER"
            | b"ZUNION"
            | b"ZINTER"
            | b"ZDIFF"
            | b"ZINTERCARD"
            | b"BITCOUNT"
            | b"BITPOS"
            | b"GETBIT"
            | b"BITFIELD_RO"
            | b"XRANGE"
            | b"XREVRANGE"
            | b"XLEN"
            | b"XREAD"
            | b"XPENDING"
            | b"GEOPOS"
            | b"GEODIST"
            | b"GEOHASH"
            | b"GEORADIUS_RO"
            | b"GEORADIUSBYMEMBER_RO"
            | b"GEOSEARCH"
            | b"EVAL_RO"
            | b"EVALSHA_RO"
            | b"FCALL_RO"
    )
}

/// The key positions of `cmd`.
pub(super) fn plan(cmd: &Command) -> Plan {
    let name = cmd.name();
    let mut upper = [0u8; MAX_NAME];
    let Some(slot) = upper.get_mut(..name.len()) else {
        return Plan::NONE;
    };
    slot.copy_from_slice(name);
    slot.make_ascii_uppercase();
    let argc = cmd.argc();
    match spec(slot) {
        Spec::None => Plan::NONE,
        Spec::First => Plan::range(1, argc.min(2), 1),
        Spec::Second => Plan::range(2, argc.min(3), 1),
        Spec::FirstTwo => Plan::range(1, argc.min(3), 1),
        Spec::All => Plan::range(1, argc, 1),
        Spec::AllButLast => Plan::range(1, argc.saturating_sub(1), 1),
        Spec::Interleaved => Plan::range(1, argc, 2),
        Spec::NumKeys { at, dest } => {
            let n = cmd
                .arg(at)
                .and_then(parse_int)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0);
            let start = at + 1;
            let mut plan = Plan::range(start, start.saturating_add(n).min(argc), 1);
            if dest && argc > 1 {
                plan.extra = Some(1);
            }
            plan
        }
        Spec::Streams => {
            let streams = (1..argc).find(|&i| {
                cmd.arg(i)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"STREAMS"))
            });
            match streams {
                Some(s) => {
                    let rest = argc - s - 1;
                    Plan::range(s + 1, s + 1 + rest / 2, 1)
                }
                None => Plan::NONE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::redis::Command;

    fn keys(args: &[&str]) -> Vec<String> {
        Command::from_args(args)
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn read_only_commands() {
        for read in [
            &["get", "k"][..],
            &["MGET", "a", "b"],
            &["hgetall", "h"],
            &["ZRANGE", "z", "0", "-1"],
        ] {
            assert!(Command::from_args(read).is_read_only(), "{read:?}");
        }
        for write in [
            &["SET", "k", "v"][..],
            &["DEL", "k"],
            &["GETDEL", "k"],
            &["EVAL", "s", "0"],
            &["NOSUCH"],
            &["PFCOUNT", "h"],
        ] {
            assert!(!Command::from_args(write).is_read_only(), "{write:?}");
        }
    }

    #[test]
    fn table() {
        assert_eq!(keys(&["get", "k"]), ["k"]);
        assert_eq!(keys(&["GET"]), Vec::<String>::new());
        assert_eq!(keys(&["SeT", "k", "v", "EX", "10"]), ["k"]);
        assert_eq!(keys(&["HSET", "h", "f", "v"]), ["h"]);
        assert_eq!(keys(&["OBJECT", "ENCODING", "k"]), ["k"]);
        assert_eq!(keys(&["OBJECT", "HELP"]), Vec::<String>::new());
        assert_eq!(keys(&["MGET", "a", "b", "c"]), ["a", "b", "c"]);
        assert_eq!(keys(&["DEL", "a"]), ["a"]);
        assert_eq!(keys(&["MSET", "a", "1", "b", "2"]), ["a", "b"]);
        assert_eq!(keys(&["MSET", "a", "1", "b"]), ["a", "b"]);
        assert_eq!(
            keys(&["EVAL", "return 1", "2", "k1", "k2", "a1"]),
            ["k1", "k2"]
        );
        assert_eq!(keys(&["EVAL", "return 1", "0", "a1"]), Vec::<String>::new());
        assert_eq!(keys(&["EVALSHA", "abc", "5", "k1"]), ["k1"]);
        assert_eq!(keys(&["EVAL", "s", "x", "k1"]), Vec::<String>::new());
        assert_eq!(keys(&["FCALL", "f", "1", "k", "a"]), ["k"]);
        assert_eq!(keys(&["RENAME", "a", "b"]), ["a", "b"]);
        assert_eq!(keys(&["LMOVE", "a", "b", "LEFT", "RIGHT"]), ["a", "b"]);
        assert_eq!(keys(&["BLPOP", "a", "b", "0"]), ["a", "b"]);
        assert_eq!(keys(&["BLPOP"]), Vec::<String>::new());
        assert_eq!(keys(&["SINTERSTORE", "d", "a", "b"]), ["d", "a", "b"]);
        assert_eq!(
            keys(&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"]),
            ["d", "a", "b"]
        );
        assert_eq!(keys(&["ZUNION", "2", "a", "b", "WITHSCORES"]), ["a", "b"]);
        assert_eq!(
            keys(&["XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"]),
            ["s1", "s2"]
        );
        assert_eq!(keys(&["XREAD", "COUNT", "2"]), Vec::<String>::new());
        for none in [
            "PING",
            "ECHO",
            "AUTH",
            "HELLO",
            "SELECT",
            "INFO",
            "CLIENT",
            "COMMAND",
            "CONFIG",
            "DBSIZE",
            "FLUSHALL",
            "FLUSHDB",
            "KEYS",
            "SCAN",
            "QUIT",
            "MULTI",
            "EXEC",
            "DISCARD",
            "SUBSCRIBE",
            "PSUBSCRIBE",
            "UNSUBSCRIBE",
            "PUBLISH",
            "TIME",
            "FOO",
        ] {
            assert_eq!(keys(&[none, "x", "y"]), Vec::<String>::new(), "{none}");
        }
        assert_eq!(
            keys(&["AVERYLONGCOMMANDNAMEOVERTHETABLELIMIT", "x"]),
            Vec::<String>::new()
        );
    }
}
