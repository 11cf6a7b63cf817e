//! Stream replies read in place: an entry's fields moved out of Redis's reply, for the worker's
//! reads of the write-behind stream and the near-cache's reads of the change feed.

use redis::{FromRedisValue, ParsingError, Value};

/// An entry as a stream read returns it (`XREAD`, `XREADGROUP`, `XRANGE`, `XCLAIM`,
/// `XAUTOCLAIM`): its id and its fields, names and values in turn, moved out of the reply.
/// `redis`'s own stream replies clone the whole reply and build a hash map per entry (and two more
/// around them), which was most of what reading the change feed and the write-behind stream cost
/// the server.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: String,
    fields: Vec<Value>,
}

impl Entry {
    /// Takes the value of the field `name` out of the entry (`None`: no such field, or not a
    /// string).
    pub(crate) fn take(&mut self, name: &str) -> Option<Vec<u8>> {
        self.fields
            .chunks_exact_mut(2)
            .find(|pair| matches!(&pair[0], Value::BulkString(n) if n == name.as_bytes()))
            .and_then(|pair| match std::mem::replace(&mut pair[1], Value::Nil) {
                Value::BulkString(value) => Some(value),
                _ => None,
            })
    }
}

impl FromRedisValue for Entry {
    fn from_redis_value(v: Value) -> Result<Entry, ParsingError> {
        // `[id, [name, value, …]]`; an entry deleted while pending reads as `[id, nil]`, and
        // `XREADGROUP … CLAIM` adds two counts after the fields.
        let Value::Array(parts) = v else {
            return Err(format!("a stream entry is an array, not {v:?}").into());
        };
        let mut parts = parts.into_iter();
        let id = match parts.next() {
            Some(Value::BulkString(id)) => String::from_utf8(id)?,
            other => return Err(format!("a stream entry's id, not {other:?}").into()),
        };
        let fields = match parts.next() {
            Some(Value::Array(fields)) => fields,
            Some(Value::Map(pairs)) => pairs.into_iter().flat_map(|(n, v)| [n, v]).collect(),
            Some(Value::Nil) | None => Vec::new(),
            Some(other) => return Err(format!("a stream entry's fields, not {other:?}").into()),
        };
        Ok(Entry { id, fields })
    }
}

/// The entries of an `XREAD` or `XREADGROUP` reply, every stream's in turn (none: nil).
pub(crate) struct Read(pub(crate) Vec<Entry>);

impl FromRedisValue for Read {
    fn from_redis_value(v: Value) -> Result<Read, ParsingError> {
        // RESP2: `[[stream, entries], …]`; RESP3: a map of stream to entries.
        let streams: Vec<Value> = match v {
            Value::Nil => return Ok(Read(Vec::new())),
            Value::Array(streams) => streams
                .into_iter()
                .map(|s| match s {
                    Value::Array(pair) if pair.len() == 2 => {
                        Ok(pair.into_iter().nth(1).expect("two"))
                    }
                    other => Err(format!("a stream of a read, not {other:?}")),
                })
                .collect::<Result<_, _>>()?,
            Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
            other => return Err(format!("a stream read's reply, not {other:?}").into()),
        };
        let mut entries = Vec::new();
        for stream in streams {
            entries.extend(Vec::<Entry>::from_redis_value(stream)?);
        }
        Ok(Read(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{
        AsyncCommands,
        streams::{StreamAutoClaimReply, StreamRangeReply, StreamReadReply},
    };

    /// Our reading of stream replies against `redis`'s own (the reference), on the test Redis in
    /// both protocols: the same ids, and the same value for every field, from `XREAD` (one and two
    /// streams, and nothing), `XREADGROUP` (new entries, then the pending ones after one was
    /// deleted), `XAUTOCLAIM` (which leaves the deleted one out) and `XRANGE`.
    #[tokio::test]
    async fn stream_replies_read_as_redis_reads_them() {
        let url = std::env::var("SUPPRESSD_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        for protocol in ["resp2", "resp3"] {
            let prefix = format!("entries{}:", uuid::Uuid::new_v4().simple());
            let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
            let client = redis::Client::open(format!("{url}?protocol={protocol}")).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let mut ids = Vec::new();
            for (stream, fields) in [
                (&a, vec![("r", "one"), ("w", "1")]),
                (&a, vec![("r", ""), ("x", "\u{0}binary\u{ff}")]),
                (&b, vec![("s", "7")]),
            ] {
                let id: String = conn.xadd(stream, "*", &fields).await.unwrap();
                ids.push(id);
            }
            let _: () = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&a)
                .arg("g")
                .arg("0")
                .query_async(&mut conn)
                .await
                .unwrap();
            let read_group = |from: &str| {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg("g")
                    .arg("c")
                    .arg("STREAMS")
                    .arg(&a)
                    .arg(from);
                cmd
            };
            let mut xread = redis::cmd("XREAD");
            xread.arg("STREAMS").arg(&a).arg(&b).arg("0").arg("0");
            let mut xread_one = redis::cmd("XREAD");
            xread_one.arg("STREAMS").arg(&a).arg(&ids[0]);
            let mut nothing = redis::cmd("XREAD");
            nothing.arg("STREAMS").arg(&b).arg("$");
            for cmd in [xread, xread_one, nothing, read_group(">")] {
                let value: Value = cmd.query_async(&mut conn).await.unwrap();
                let Read(ours) = Read::from_redis_value(value.clone()).unwrap();
                let theirs = StreamReadReply::from_redis_value(value).unwrap();
                same(ours, theirs.keys.into_iter().flat_map(|k| k.ids).collect());
            }
            // Pending entries after one of them was deleted: that one reads as `[id, nil]`.
            let _: i64 = conn.xdel(&a, &[&ids[1]]).await.unwrap();
            let value: Value = read_group("0").query_async(&mut conn).await.unwrap();
            let Read(ours) = Read::from_redis_value(value.clone()).unwrap();
            assert_eq!(ours.len(), 2, "{protocol}: both pending entries");
            let theirs = StreamReadReply::from_redis_value(value).unwrap();
            same(ours, theirs.keys.into_iter().flat_map(|k| k.ids).collect());
            let mut autoclaim = redis::cmd("XAUTOCLAIM");
            autoclaim.arg(&a).arg("g").arg("other").arg(0).arg("0-0");
            let value: Value = autoclaim.query_async(&mut conn).await.unwrap();
            let (_, ours, _): (Value, Vec<Entry>, Value) =
                FromRedisValue::from_redis_value(value.clone()).unwrap();
            assert_eq!(ours.len(), 1, "{protocol}: the entry left pending");
            same(
                ours,
                StreamAutoClaimReply::from_redis_value(value)
                    .unwrap()
                    .claimed,
            );
            let value: Value = conn.xrange_all(&a).await.unwrap();
            let ours = Vec::<Entry>::from_redis_value(value.clone()).unwrap();
            same(ours, StreamRangeReply::from_redis_value(value).unwrap().ids);
            let _: () = conn.del(&[&a, &b]).await.unwrap();
        }
    }

    fn same(ours: Vec<Entry>, theirs: Vec<redis::streams::StreamId>) {
        assert_eq!(ours.len(), theirs.len());
        for (mut ours, theirs) in ours.into_iter().zip(theirs) {
            assert_eq!(ours.id, theirs.id);
            assert_eq!(ours.fields.len(), 2 * theirs.map.len(), "{}", ours.id);
            for (name, value) in &theirs.map {
                let Value::BulkString(value) = value else {
                    panic!("{name}: {value:?}");
                };
                assert_eq!(ours.take(name).as_ref(), Some(value), "{name}");
            }
        }
    }

    /// A field that is not there, or was taken already, is `None`; fields are found by their whole
    /// name.
    #[test]
    fn an_entry_gives_each_field_once() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![bulk("rr"), bulk("no"), bulk("r"), bulk("yes")]),
        ]);
        let mut entry = Entry::from_redis_value(entry).unwrap();
        assert_eq!(entry.take("r"), Some(b"yes".to_vec()));
        assert_eq!(entry.take("r"), None);
        assert_eq!(entry.take("w"), None);
        assert!(Entry::from_redis_value(bulk("1-0")).is_err());
    }
}
