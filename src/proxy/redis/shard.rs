//! Redis over a sharded cluster: where each command of a pipeline goes, and
//! how the replies of split commands are merged back.
//!
//! A run of commands for one sharded cluster becomes a [`Fanout`]: one batch
//! per shard (`parts`) and a `plan` with one [`Step`] per client command, in
//! the client's order. The reply writer later walks the plan, taking each
//! part's replies in order, so a pipeline keeps its order across shards.
//!
//! * Single-key commands (and multi-key ones whose keys share a shard, e.g.
//!   by `{hash tag}`) go to the key's shard as they are.
//! * `MGET`, `MSET`, `DEL`, `UNLINK`, `EXISTS`, `TOUCH` are split per shard
//!   and merged ([`Merge`]).
//! * `FLUSHALL`/`FLUSHDB` go to every shard, `DBSIZE` is summed, `KEYS`
//!   merged, `SCAN` walks the shards with the shard folded into the cursor.
//! * Other commands whose keys span shards, and the other keyspace-wide
//!   commands (`RANDOMKEY`, `SWAPDB`, ...) are answered with an error naming
//!   the command and why (with one shard they are simply forwarded).
//! * `MULTI` binds to the shard of the first keyed command (or of `WATCH`);
//!   commands for another shard inside it answer `-CROSSSLOT` and make `EXEC`
//!   fail with `-EXECABORT`, as Redis Cluster does.
//! * Session commands (`SELECT`, `HELLO`, `AUTH`, `CLIENT SETNAME`, `SCRIPT`)
//!   go to every shard; keyless commands (`INFO`, `TIME`, `PUBLISH`, ...) go
//!   to the first shard, where pub/sub lives.

use bytes::{BufMut, Bytes, BytesMut};
use switchyard_codecs::WireHead;
use switchyard_codecs::redis::{self, Command, Limits};

use crate::upstream::ShardMap;

/// What one client command becomes.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The next reply of this part, as it is.
    Forward(u16),
    /// A reply made by the gateway.
    Local(Bytes),
    /// The next reply of this part is not the client's (a `MULTI` sent on its behalf).
    Discard(u16),
    /// The next reply of each of these parts, merged.
    Merge(Merge, Vec<u16>),
}

/// How the replies of a split command become one.
#[derive(Debug, PartialEq, Eq)]
pub enum Merge {
    /// Integers added up (`DEL`, `UNLINK`, `EXISTS`, `TOUCH`).
    Sum,
    /// `+OK` when every part said so (`MSET`).
    AllOk,
    /// The first part's reply (commands sent to every shard).
    First,
    /// The parts' arrays joined into one (`KEYS`).
    Concat,
    /// A shard's `SCAN` reply with the shard folded into its cursor (see [`scan`]).
    Scan { shard: u64, shards: u64 },
    /// An array gathered from the parts' arrays (`MGET`): element `i` of the
    /// result is element `.1` of the reply of the `.0`-th merged part.
    Gather(Vec<(u16, u32)>),
}

/// Where a batch goes: a shard's primary or one of its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dest {
    pub host: usize,
    pub replica: bool,
}

impl From<usize> for Dest {
    fn from(host: usize) -> Self {
        Dest {
            host,
            replica: false,
        }
    }
}

/// The shard batches and the reply plan of one run of commands.
#[derive(Debug, Default)]
pub struct Fanout {
    /// (destination, commands), one per shard (and replica) touched.
    pub parts: Vec<(Dest, Vec<Bytes>)>,
    pub plan: Vec<Step>,
}

impl Fanout {
    /// Queue `wire` for `dest`; the index of its part.
    fn send(&mut self, dest: impl Into<Dest>, wire: Bytes) -> u16 {
        let dest = dest.into();
        let at = match self.parts.iter().position(|(d, _)| *d == dest) {
            Some(i) => i,
            None => {
                self.parts.push((dest, Vec::new()));
                self.parts.len() - 1
            }
        };
        if let Some((_, cmds)) = self.parts.get_mut(at) {
            cmds.push(wire);
        }
        u16::try_from(at).unwrap_or(u16::MAX)
    }

    /// The replies expected from each part, in part order (one command may
    /// answer several times, e.g. `UNSUBSCRIBE a b`).
    pub fn reply_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.parts.len()];
        let mut add = |p: u16| {
            if let Some(n) = counts.get_mut(usize::from(p)) {
                *n += 1;
            }
        };
        for step in &self.plan {
            match step {
                Step::Forward(p) | Step::Discard(p) => add(*p),
                Step::Merge(_, parts) => parts.iter().copied().for_each(&mut add),
                Step::Local(_) => {}
            }
        }
        counts
    }

    /// Client commands in the plan (gateway-sent `MULTI`s excluded).
    pub fn client_commands(&self) -> usize {
        self.plan
            .iter()
            .filter(|s| !matches!(s, Step::Discard(_)))
            .count()
    }
}

/// A session's sharding state: the shard its transaction and `WATCH` are bound to.
#[derive(Debug, Default)]
pub struct ShardSession {
    txn: Option<Txn>,
    watch: Option<usize>,
}

#[derive(Debug)]
struct Txn {
    host: Option<usize>,
    /// `MULTI` was sent to `host`.
    multi_sent: bool,
    /// A command was refused while queuing: `EXEC` aborts.
    failed: bool,
}

const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// Commands that need every key of the database, answered with an error.
const KEYSPACE_WIDE: [&str; 17] = [
    "KEYS",
    "SCAN",
    "FLUSHALL",
    "FLUSHDB",
    "DBSIZE",
    "RANDOMKEY",
    "SWAPDB",
    "MONITOR",
    "MIGRATE",
    "WAIT",
    "WAITAOF",
    "CLUSTER",
    "SHUTDOWN",
    "REPLICAOF",
    "SLAVEOF",
    "FAILOVER",
    "MOVE",
];

fn cross_shard(cmd: &Command) -> Bytes {
    redis::error_reply(&format!(
        "CROSSSLOT Keys in request don't hash to the same shard ('{}' cannot span shards; put its keys under one {{hash tag}})",
        String::from_utf8_lossy(cmd.name()).to_lowercase()
    ))
}

/// The one shard all of `cmd`'s keys live on: `Ok(None)` without keys,
/// `Err(())` when they span shards.
fn one_host(cmd: &Command, map: &ShardMap) -> Result<Option<usize>, ()> {
    let mut host = None;
    for key in cmd.keys() {
        let h = map.host_for(key);
        match host {
            None => host = Some(h),
            Some(first) if first != h => return Err(()),
            Some(_) => {}
        }
    }
    Ok(host)
}

fn bulk(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    out.put_u8(b'$');
    out.extend_from_slice(data.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// Add `cmd` to `fanout`; with `replica_reads`, read-only commands outside
/// transactions go to the shard's replica.
pub fn plan(
    cmd: &Command,
    map: &ShardMap,
    replica_reads: bool,
    session: &mut ShardSession,
    fanout: &mut Fanout,
) {
    let step = if session.txn.is_some() {
        in_transaction(cmd, map, session, fanout)
    } else {
        let reads = replica_reads && cmd.is_read_only();
        outside_transaction(cmd, map, reads, replica_reads, session, fanout)
    };
    fanout.plan.push(step);
}

fn in_transaction(
    cmd: &Command,
    map: &ShardMap,
    session: &mut ShardSession,
    fanout: &mut Fanout,
) -> Step {
    let Some(txn) = session.txn.as_mut() else {
        return Step::Local(redis::error_reply("internal: no transaction"));
    };
    if cmd.is("MULTI") {
        return Step::Local(redis::error_reply("ERR MULTI calls can not be nested"));
    }
    if cmd.is("WATCH") {
        return Step::Local(redis::error_reply("ERR WATCH inside MULTI is not allowed"));
    }
    if cmd.is("EXEC") || cmd.is("DISCARD") {
        let exec = cmd.is("EXEC");
        let Some(txn) = session.txn.take() else {
            return Step::Local(redis::error_reply("internal: no transaction"));
        };
        session.watch = None;
        return match txn.host {
            Some(h) if txn.failed && exec => {
                if txn.multi_sent {
                    let p = fanout.send(h, Command::from_args(["DISCARD"]).wire().clone());
                    fanout.plan.push(Step::Discard(p));
                }
                Step::Local(redis::error_reply(EXECABORT))
            }
            Some(h) => {
                if !txn.multi_sent {
                    let p = fanout.send(h, Command::from_args(["MULTI"]).wire().clone());
                    fanout.plan.push(Step::Discard(p));
                }
                Step::Forward(fanout.send(h, cmd.wire().clone()))
            }
            None if exec && txn.failed => Step::Local(redis::error_reply(EXECABORT)),
            None if exec => Step::Local(Bytes::from_static(b"*0\r\n")),
            None => Step::Local(Bytes::from_static(b"+OK\r\n")),
        };
    }
    let host = match one_host(cmd, map) {
        Ok(Some(h)) => h,
        Ok(None) => txn.host.unwrap_or_else(|| map.home()),
        Err(()) => {
            txn.failed = true;
            return Step::Local(cross_shard(cmd));
        }
    };
    match txn.host {
        Some(h) if h != host => {
            txn.failed = true;
            return Step::Local(cross_shard(cmd));
        }
        _ => txn.host = Some(host),
    }
    if !txn.multi_sent {
        txn.multi_sent = true;
        let p = fanout.send(host, Command::from_args(["MULTI"]).wire().clone());
        fanout.plan.push(Step::Discard(p));
    }
    Step::Forward(fanout.send(host, cmd.wire().clone()))
}

fn outside_transaction(
    cmd: &Command,
    map: &ShardMap,
    to_replica: bool,
    replicas: bool,
    session: &mut ShardSession,
    fanout: &mut Fanout,
) -> Step {
    let read = |host: usize| Dest {
        host,
        replica: to_replica,
    };
    let mut upper = [0u8; 16];
    let name = cmd.name();
    let upper = match upper.get_mut(..name.len()) {
        Some(u) => {
            u.copy_from_slice(name);
            u.make_ascii_uppercase();
            &*u
        }
        None => name,
    };
    match upper {
        b"MULTI" => {
            session.txn = Some(Txn {
                host: session.watch,
                multi_sent: false,
                failed: false,
            });
            Step::Local(Bytes::from_static(b"+OK\r\n"))
        }
        b"EXEC" => Step::Local(redis::error_reply("ERR EXEC without MULTI")),
        b"DISCARD" => Step::Local(redis::error_reply("ERR DISCARD without MULTI")),
        b"WATCH" => match (one_host(cmd, map), session.watch) {
            (Ok(Some(h)), None) => {
                session.watch = Some(h);
                Step::Forward(fanout.send(h, cmd.wire().clone()))
            }
            (Ok(Some(h)), Some(w)) if h == w => Step::Forward(fanout.send(h, cmd.wire().clone())),
            (Ok(None), _) => Step::Local(redis::error_reply(
                "wrong number of arguments for 'watch' command",
            )),
            _ => Step::Local(cross_shard(cmd)),
        },
        b"UNWATCH" => match session.watch.take() {
            Some(h) => Step::Forward(fanout.send(h, cmd.wire().clone())),
            None => Step::Local(Bytes::from_static(b"+OK\r\n")),
        },
        b"PING" if cmd.argc() <= 2 => Step::Local(match cmd.arg(1) {
            None => Bytes::from_static(b"+PONG\r\n"),
            Some(msg) => bulk(msg),
        }),
        b"ECHO" if cmd.argc() == 2 => Step::Local(bulk(cmd.arg(1).unwrap_or_default())),
        b"SELECT" | b"HELLO" | b"AUTH" | b"SCRIPT" => broadcast(cmd, map, replicas, fanout),
        b"CLIENT"
            if cmd
                .arg(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"SETNAME")) =>
        {
            broadcast(cmd, map, replicas, fanout)
        }
        // Answered once per channel (pub/sub lives on the first shard).
        b"UNSUBSCRIBE" | b"PUNSUBSCRIBE" | b"SUNSUBSCRIBE" => {
            let p = fanout.send(map.home(), cmd.wire().clone());
            for _ in 1..redis::reply_count(cmd) {
                fanout.plan.push(Step::Forward(p));
            }
            Step::Forward(p)
        }
        // One shard holds the whole keyspace: nothing to split.
        _ if map.hosts().len() == 1 && KEYSPACE_WIDE.iter().any(|k| cmd.is(k)) => {
            Step::Forward(fanout.send(map.home(), cmd.wire().clone()))
        }
        b"FLUSHALL" | b"FLUSHDB" => every_shard(cmd, map, fanout, Merge::AllOk),
        b"DBSIZE" => every_shard(cmd, map, fanout, Merge::Sum),
        b"KEYS" => every_shard(cmd, map, fanout, Merge::Concat),
        b"SCAN" => scan(cmd, map, fanout),
        b"MGET" => split(cmd, map, to_replica, fanout, 1, SplitAs::Gather),
        b"MSET" => split(cmd, map, false, fanout, 2, SplitAs::AllOk),
        b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" => {
            split(cmd, map, to_replica, fanout, 1, SplitAs::Sum)
        }
        _ if KEYSPACE_WIDE.iter().any(|k| cmd.is(k)) => Step::Local(redis::error_reply(&format!(
            "'{}' is not supported on a sharded cluster: its keys live on {} servers",
            String::from_utf8_lossy(name).to_lowercase(),
            map.hosts().len()
        ))),
        _ => match one_host(cmd, map) {
            Ok(Some(h)) => Step::Forward(fanout.send(read(h), cmd.wire().clone())),
            Ok(None) => Step::Forward(fanout.send(map.home(), cmd.wire().clone())),
            Err(()) => Step::Local(cross_shard(cmd)),
        },
    }
}

/// Send `cmd` to every shard's primary and merge the replies `how`.
fn every_shard(cmd: &Command, map: &ShardMap, fanout: &mut Fanout, how: Merge) -> Step {
    let parts = map
        .hosts()
        .iter()
        .map(|&h| fanout.send(h, cmd.wire().clone()))
        .collect();
    Step::Merge(how, parts)
}

/// `SCAN cursor ...` over every shard in turn, as Envoy and predixy do: the
/// client's cursor is `inner * shards + shard`, where `inner` is the cursor
/// of the shard being scanned; when a shard is done the next one starts at 0,
/// and after the last one the cursor is 0.
fn scan(cmd: &Command, map: &ShardMap, fanout: &mut Fanout) -> Step {
    let hosts = map.hosts();
    let n = hosts.len() as u64;
    let cursor = cmd
        .arg(1)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok());
    let Some(cursor) = cursor.filter(|_| n > 0) else {
        // Let the server give its own error (`invalid cursor`, arity).
        return Step::Forward(fanout.send(map.home(), cmd.wire().clone()));
    };
    let shard = cursor % n;
    let inner = (cursor / n).to_string();
    let sub = Command::from_args(
        [cmd.name(), inner.as_bytes()]
            .into_iter()
            .chain(cmd.args().skip(2)),
    );
    let host = hosts
        .get(shard as usize)
        .copied()
        .unwrap_or_else(|| map.home());
    let p = fanout.send(host, sub.wire().clone());
    Step::Merge(Merge::Scan { shard, shards: n }, vec![p])
}

/// Send `cmd` to every shard (and, with `replicas`, every shard's replica
/// connection, whose replies are dropped); the reply is the first shard's
/// (or an error).
fn broadcast(cmd: &Command, map: &ShardMap, replicas: bool, fanout: &mut Fanout) -> Step {
    let parts = map
        .hosts()
        .iter()
        .map(|&h| fanout.send(h, cmd.wire().clone()))
        .collect();
    if replicas {
        for &host in map.hosts() {
            let p = fanout.send(
                Dest {
                    host,
                    replica: true,
                },
                cmd.wire().clone(),
            );
            fanout.plan.push(Step::Discard(p));
        }
    }
    Step::Merge(Merge::First, parts)
}

#[derive(Clone, Copy)]
enum SplitAs {
    Gather,
    AllOk,
    Sum,
}

/// Split a multi-key command by shard: `stride` 1 for key lists, 2 for key/value pairs.
fn split(
    cmd: &Command,
    map: &ShardMap,
    to_replica: bool,
    fanout: &mut Fanout,
    stride: usize,
    how: SplitAs,
) -> Step {
    let dest = |host: usize| Dest {
        host,
        replica: to_replica,
    };
    let args: Vec<&[u8]> = cmd.args().skip(1).collect();
    if args.is_empty() || !args.len().is_multiple_of(stride) {
        // Let the server give its own arity error.
        return Step::Forward(fanout.send(map.home(), cmd.wire().clone()));
    }
    // (host, argument indices) per shard, in order of first appearance.
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, key) in args.iter().enumerate().step_by(stride) {
        let h = map.host_for(key);
        match groups.iter_mut().find(|(g, _)| *g == h) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((h, vec![i])),
        }
    }
    if let [(h, _)] = groups.as_slice() {
        return Step::Forward(fanout.send(dest(*h), cmd.wire().clone()));
    }
    let name: &[u8] = match how {
        SplitAs::Gather => b"MGET",
        SplitAs::AllOk => b"MSET",
        SplitAs::Sum => cmd.name(),
    };
    let mut positions = Vec::new();
    let mut parts = Vec::with_capacity(groups.len());
    for (g, (host, idx)) in groups.iter().enumerate() {
        let sub = Command::from_args(
            std::iter::once(name).chain(
                idx.iter()
                    .flat_map(|&i| args.get(i..i + stride).unwrap_or_default().iter().copied()),
            ),
        );
        parts.push(fanout.send(dest(*host), sub.wire().clone()));
        if let SplitAs::Gather = how {
            for (pos, &i) in idx.iter().enumerate() {
                positions.push((i, (g as u16, pos as u32)));
            }
        }
    }
    let merge = match how {
        SplitAs::Gather => {
            positions.sort_unstable_by_key(|(i, _)| *i);
            Merge::Gather(positions.into_iter().map(|(_, p)| p).collect())
        }
        SplitAs::AllOk => Merge::AllOk,
        SplitAs::Sum => Merge::Sum,
    };
    Step::Merge(merge, parts)
}

/// The content of a bulk string reply (`$3\r\nabc\r\n` -> `abc`).
fn bulk_value(wire: &[u8]) -> Option<&[u8]> {
    let rest = wire.strip_prefix(b"$")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    rest.get(nl + 1..)?.strip_suffix(b"\r\n")
}

fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-' | b'!'))
}

/// Merge the replies of one split command's parts (in part order).
pub fn merge(how: &Merge, replies: &[Bytes], limits: Limits) -> Bytes {
    if let Some(e) = replies.iter().find(|r| is_error(r)) {
        return e.clone();
    }
    let unexpected = || redis::error_reply("unexpected reply from a shard while merging");
    match how {
        Merge::First => replies.first().cloned().unwrap_or_else(unexpected),
        Merge::AllOk => match replies.iter().find(|r| r.as_ref() != b"+OK\r\n") {
            Some(other) => other.clone(),
            None => Bytes::from_static(b"+OK\r\n"),
        },
        Merge::Sum => {
            let mut sum: i64 = 0;
            for r in replies {
                let n = r
                    .strip_prefix(b":")
                    .and_then(|r| r.strip_suffix(b"\r\n"))
                    .and_then(|d| std::str::from_utf8(d).ok())
                    .and_then(|d| d.parse::<i64>().ok());
                match n {
                    Some(n) => sum = sum.saturating_add(n),
                    None => return unexpected(),
                }
            }
            Bytes::from(format!(":{sum}\r\n"))
        }
        Merge::Concat => {
            let mut elements = Vec::with_capacity(replies.len());
            for r in replies {
                match redis::array_elements(r, limits) {
                    Some(e) => elements.extend(e),
                    None => return unexpected(),
                }
            }
            let mut out =
                BytesMut::with_capacity(16 + elements.iter().map(Bytes::len).sum::<usize>());
            out.extend_from_slice(format!("*{}\r\n", elements.len()).as_bytes());
            for e in &elements {
                out.extend_from_slice(e);
            }
            out.freeze()
        }
        Merge::Scan { shard, shards } => {
            let Some(reply) = replies.first() else {
                return unexpected();
            };
            let parts = redis::array_elements(reply, limits);
            let Some([cursor, keys]) = parts.as_deref() else {
                return unexpected();
            };
            let inner =
                bulk_value(cursor).and_then(|c| std::str::from_utf8(c).ok()?.parse::<u64>().ok());
            let Some(inner) = inner else {
                return unexpected();
            };
            let next = if inner == 0 {
                if shard + 1 >= *shards { 0 } else { shard + 1 }
            } else {
                match inner
                    .checked_mul(*shards)
                    .and_then(|c| c.checked_add(*shard))
                {
                    Some(c) => c,
                    None => {
                        return redis::error_reply(
                            "ERR the shard's SCAN cursor is too large to carry the shard index",
                        );
                    }
                }
            };
            let mut out = BytesMut::with_capacity(32 + keys.len());
            out.extend_from_slice(b"*2\r\n");
            out.extend_from_slice(&bulk(next.to_string().as_bytes()));
            out.extend_from_slice(keys);
            out.freeze()
        }
        Merge::Gather(positions) => {
            let mut elements = Vec::with_capacity(replies.len());
            for r in replies {
                match redis::array_elements(r, limits) {
                    Some(e) => elements.push(e),
                    None => return unexpected(),
                }
            }
            let mut out = BytesMut::with_capacity(
                16 + elements.iter().flatten().map(Bytes::len).sum::<usize>(),
            );
            out.extend_from_slice(format!("*{}\r\n", positions.len()).as_bytes());
            for &(part, pos) in positions {
                match elements
                    .get(usize::from(part))
                    .and_then(|e| e.get(pos as usize))
                {
                    Some(e) => out.extend_from_slice(e),
                    None => return unexpected(),
                }
            }
            out.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Shards;

    fn shards() -> Shards {
        let r: crate::config::redis::ClusterRedis =
            serde_saphyr::from_str("{sharding: slots}").unwrap();
        let names = vec!["a:1".into(), "b:1".into(), "c:1".into()];
        Shards::new(&r, names, vec![1, 1, 1]).unwrap()
    }

    fn c(args: &[&str]) -> Command {
        Command::from_args(args)
    }

    fn run(cmds: &[&[&str]]) -> Fanout {
        let s = shards();
        let map = s.map();
        let mut session = ShardSession::default();
        let mut f = Fanout::default();
        for args in cmds {
            plan(&c(args), &map, false, &mut session, &mut f);
        }
        f
    }

    // Three equal hosts own slots 0..5461, 5461..10922, 10922..16384:
    // "hello" (slot 866) and "b" (3300) live on host 0, "foo" (12182) and "a" (15495) on host 2.
    #[test]
    fn single_key_commands_go_to_their_shard_in_one_batch_each() {
        let f = run(&[&["SET", "hello", "1"], &["GET", "foo"], &["GET", "hello"]]);
        assert_eq!(f.parts.len(), 2);
        assert_eq!(f.parts[0].0, Dest::from(0));
        assert_eq!(f.parts[0].1.len(), 2);
        assert_eq!(f.parts[1].0, Dest::from(2));
        assert_eq!(
            f.plan,
            [Step::Forward(0), Step::Forward(1), Step::Forward(0)]
        );
    }

    #[test]
    fn mget_is_split_and_gathered_in_key_order() {
        let f = run(&[&["MGET", "foo", "hello", "a", "b"]]);
        assert_eq!(f.parts.len(), 2);
        assert_eq!(f.parts[0].1[0], *c(&["MGET", "foo", "a"]).wire());
        assert_eq!(f.parts[1].1[0], *c(&["MGET", "hello", "b"]).wire());
        assert_eq!(
            f.plan,
            [Step::Merge(
                Merge::Gather(vec![(0, 0), (1, 0), (0, 1), (1, 1)]),
                vec![0, 1]
            )]
        );
        let merged = merge(
            &Merge::Gather(vec![(0, 0), (1, 0), (0, 1), (1, 1)]),
            &[
                Bytes::from_static(b"*2\r\n$3\r\nFOO\r\n$-1\r\n"),
                Bytes::from_static(b"*2\r\n$5\r\nHELLO\r\n$1\r\nB\r\n"),
            ],
            Limits::default(),
        );
        assert_eq!(
            &merged[..],
            b"*4\r\n$3\r\nFOO\r\n$5\r\nHELLO\r\n$-1\r\n$1\r\nB\r\n"
        );
    }

    #[test]
    fn mset_and_del_split_and_merge() {
        let f = run(&[
            &["MSET", "foo", "1", "hello", "2"],
            &["DEL", "foo", "hello", "a"],
        ]);
        assert_eq!(
            f.parts[0].1,
            [
                c(&["MSET", "foo", "1"]).wire().clone(),
                c(&["DEL", "foo", "a"]).wire().clone()
            ]
        );
        assert_eq!(f.plan[0], Step::Merge(Merge::AllOk, vec![0, 1]));
        let ok = Bytes::from_static(b"+OK\r\n");
        assert_eq!(
            merge(&Merge::AllOk, &[ok.clone(), ok], Limits::default()),
            "+OK\r\n"
        );
        let sum = merge(
            &Merge::Sum,
            &[Bytes::from_static(b":2\r\n"), Bytes::from_static(b":1\r\n")],
            Limits::default(),
        );
        assert_eq!(sum, ":3\r\n");
        let err = Bytes::from_static(b"-WRONGTYPE x\r\n");
        assert_eq!(
            merge(
                &Merge::Sum,
                &[Bytes::from_static(b":2\r\n"), err.clone()],
                Limits::default()
            ),
            err
        );
    }

    #[test]
    fn cross_shard_and_keyspace_commands_are_refused_hash_tags_pass() {
        let f = run(&[
            &["RENAME", "foo", "hello"],
            &["RANDOMKEY"],
            &["RENAME", "{u}a", "{u}b"],
            &["SUNIONSTORE", "{t}d", "{t}x", "{t}y"],
        ]);
        assert!(matches!(&f.plan[0], Step::Local(e) if e.starts_with(b"-CROSSSLOT")));
        assert!(
            matches!(&f.plan[1], Step::Local(e) if e.starts_with(b"-ERR 'randomkey' is not supported on a sharded cluster"))
        );
        assert!(matches!(f.plan[2], Step::Forward(_)));
        assert!(matches!(f.plan[3], Step::Forward(_)));
    }

    #[test]
    fn keyspace_commands_fan_out_and_scan_folds_the_shard_into_the_cursor() {
        let f = run(&[
            &["FLUSHALL"],
            &["DBSIZE"],
            &["KEYS", "*"],
            &["SCAN", "7", "COUNT", "5"],
        ]);
        assert_eq!(f.plan[0], Step::Merge(Merge::AllOk, vec![0, 1, 2]));
        assert_eq!(f.plan[1], Step::Merge(Merge::Sum, vec![0, 1, 2]));
        assert_eq!(f.plan[2], Step::Merge(Merge::Concat, vec![0, 1, 2]));
        // Cursor 7 over 3 shards: shard 1, its cursor 2.
        assert_eq!(
            f.plan[3],
            Step::Merge(
                Merge::Scan {
                    shard: 1,
                    shards: 3
                },
                vec![1]
            )
        );
        assert_eq!(
            f.parts[1].1.last().unwrap(),
            c(&["SCAN", "2", "COUNT", "5"]).wire()
        );
        let page = |cursor: &str| {
            Bytes::from(format!(
                "*2\r\n${}\r\n{cursor}\r\n*1\r\n$1\r\nk\r\n",
                cursor.len()
            ))
        };
        let scan = |shard, reply: &str| {
            merge(
                &Merge::Scan { shard, shards: 3 },
                &[page(reply)],
                Limits::default(),
            )
        };
        // Shard 1 goes on at its cursor 9: 9 * 3 + 1.
        assert_eq!(scan(1, "9"), page("28"));
        // Shard 1 is done: shard 2 from its start; after the last shard, 0.
        assert_eq!(scan(1, "0"), page("2"));
        assert_eq!(scan(2, "0"), page("0"));
        let keys = merge(
            &Merge::Concat,
            &[
                Bytes::from_static(b"*1\r\n$1\r\na\r\n"),
                Bytes::from_static(b"*0\r\n"),
                Bytes::from_static(b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n"),
            ],
            Limits::default(),
        );
        assert_eq!(&keys[..], b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n");
        // Several replies for one UNSUBSCRIBE.
        let f = run(&[&["UNSUBSCRIBE", "a", "b", "c"], &["PUNSUBSCRIBE"]]);
        assert_eq!(f.plan.len(), 4);
    }

    #[test]
    fn transactions_bind_to_one_shard() {
        let f = run(&[&["MULTI"], &["SET", "foo", "1"], &["INCR", "a"], &["EXEC"]]);
        // MULTI answered locally, sent ahead of the first command on foo's shard.
        assert_eq!(f.plan[0], Step::Local(Bytes::from_static(b"+OK\r\n")));
        assert_eq!(f.plan[1], Step::Discard(0));
        assert_eq!(
            f.plan[2..],
            [Step::Forward(0), Step::Forward(0), Step::Forward(0)]
        );
        assert_eq!(f.parts[0].1[0], *c(&["MULTI"]).wire());
        assert_eq!(f.client_commands(), 4);

        let f = run(&[
            &["MULTI"],
            &["SET", "foo", "1"],
            &["SET", "hello", "1"],
            &["EXEC"],
        ]);
        assert!(matches!(&f.plan[3], Step::Local(e) if e.starts_with(b"-CROSSSLOT")));
        // EXEC aborts, and the server-side MULTI is discarded.
        assert_eq!(f.plan[4], Step::Discard(0));
        assert!(matches!(&f.plan[5], Step::Local(e) if e.starts_with(b"-EXECABORT")));

        let f = run(&[&["MULTI"], &["EXEC"]]);
        assert_eq!(f.plan[1], Step::Local(Bytes::from_static(b"*0\r\n")));
    }

    #[test]
    fn watch_binds_the_next_transaction() {
        let f = run(&[&["WATCH", "hello"], &["MULTI"], &["EXEC"]]);
        assert_eq!(f.plan[0], Step::Forward(0));
        assert_eq!(f.parts[0].0, Dest::from(0));
        // EXEC after WATCH goes to the watched shard, with MULTI first.
        assert_eq!(
            f.parts[0].1,
            [
                c(&["WATCH", "hello"]).wire().clone(),
                c(&["MULTI"]).wire().clone(),
                c(&["EXEC"]).wire().clone()
            ]
        );
    }

    #[test]
    fn session_commands_go_everywhere_keyless_ones_home() {
        let f = run(&[&["SELECT", "1"], &["INFO"], &["PING"], &["ECHO", "hi"]]);
        assert_eq!(f.plan[0], Step::Merge(Merge::First, vec![0, 1, 2]));
        assert_eq!(f.plan[1], Step::Forward(0));
        assert_eq!(f.plan[2], Step::Local(Bytes::from_static(b"+PONG\r\n")));
        assert_eq!(f.plan[3], Step::Local(Bytes::from_static(b"$2\r\nhi\r\n")));
    }
}
