//! The groups' layout hashes (see the parent module): reading them, setting a layout `fill` and
//! then `ok` under a generation, taking a cache built before the hashes existed as it is, and
//! emptying a layout before it is filled. Writes remove layouts from them inside their own scripts
//! (`layout::scripts`), never here.

use crate::cache::{
    Cache, CacheError, Context,
    layout::{Group, Keys, Layout, MARKER_FIELD},
};
use redis::Script;
use std::{collections::HashMap, sync::LazyLock};

/// Buckets emptied per command.
const CLEAR_CHUNK: u32 = 512;

/// The layout hashes as one read found them.
#[derive(Debug, Default)]
pub(crate) struct Validity {
    /// By group: layout name → state (`ok:…`, `fill:…`); `None` when the group has no hash yet.
    groups: Vec<Option<HashMap<String, String>>>,
}

impl Validity {
    /// Whether a layout is `ok` (complete and written by every write since) in a group.
    pub(crate) fn ok(&self, group: Group, layout: Layout) -> bool {
        self.state(group, layout)
            .is_some_and(|s| s.starts_with("ok:"))
    }

    fn state(&self, group: Group, layout: Layout) -> Option<&str> {
        let hash = self.groups.get(group as usize)?.as_ref()?;
        hash.get(&layout.to_string()).map(String::as_str)
    }

    /// The layouts `ok` in a group.
    pub(crate) fn ok_layouts(&self, group: Group) -> Vec<Layout> {
        let Some(Some(hash)) = self.groups.get(group as usize) else {
            return Vec::new();
        };
        let mut ok: Vec<Layout> = hash
            .iter()
            .filter(|(_, state)| state.starts_with("ok:"))
            .filter_map(|(name, _)| name.parse().ok())
            .collect();
        ok.sort_by_key(|l| (l.version, l.bits));
        ok
    }

    /// Whether a group has no hash yet (nothing of this release has seen it since Redis was empty).
    pub(crate) fn missing(&self, group: Group) -> bool {
        matches!(self.groups.get(group as usize), Some(None))
    }
}

/// KEYS: generation, layouts. ARGV: generation, names… Sets each named layout `fill` under the
/// generation, unless it is `ok`, while the generation is current. Returns 1, or 0 when it is not.
static BEGIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], '.', '1')
for i = 2, #ARGV do
  local state = redis.call('HGET', KEYS[2], ARGV[i]) or ''
  if string.sub(state, 1, 3) ~= 'ok:' then redis.call('HSET', KEYS[2], ARGV[i], 'fill:' .. ARGV[1]) end
end
return 1
",
    )
});

/// KEYS: generation, layouts. ARGV: generation, names… Sets `ok` each named layout still `fill`
/// under the generation, while it is current. Returns how many.
static VALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = 0
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == 'fill:' .. ARGV[1] then
    redis.call('HSET', KEYS[2], ARGV[i], 'ok:' .. ARGV[1])
    n = n + 1
  end
end
return n
",
    )
});

/// KEYS: generation, complete, layouts, then the first bucket of each candidate layout. ARGV: the
/// candidates' names. A group that has no hash but is complete was built by a release before the
/// hashes, which wrote and marked only its own layout: the candidate whose first bucket carries
/// the marker of the very generation the group is complete under is that layout, taken as `ok`.
/// Returns how many were (0: the hash is left absent).
static ADOPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local generation = redis.call('GET', KEYS[1])
if not generation or redis.call('GET', KEYS[2]) ~= generation then return 0 end
local n = 0
for i = 4, #KEYS do
  if redis.call('HGET', KEYS[i], '{}') == generation then
    redis.call('HSET', KEYS[3], '.', '1', ARGV[i - 3], 'ok:' .. generation)
    n = n + 1
  end
end
return n
",
        std::str::from_utf8(MARKER_FIELD).expect("ascii")
    ))
});

/// KEYS: layouts. Forgets every layout (they may all have lost writes), keeping the hash.
const FORGET: &str = r"
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if name ~= '.' then redis.call('HDEL', KEYS[1], name) end
end
redis.call('HSET', KEYS[1], '.', '1')
return 1
";

impl Cache {
    /// Every group's layout hash, all groups at once.
    pub(crate) async fn validity(&self) -> Result<Validity, CacheError> {
        let asked = self.keys().groups().iter().map(|g| async move {
            let mut conn = self.conn();
            let (exists, hash): (bool, HashMap<String, String>) = redis::pipe()
                .exists(g.layouts())
                .hgetall(g.layouts())
                .query_async(&mut conn)
                .await
                .context("reading the layouts")?;
            Ok::<_, CacheError>(exists.then_some(hash))
        });
        Ok(Validity {
            groups: futures_util::future::try_join_all(asked).await?,
        })
    }

    /// Takes a group's cache, built by a release before the layout hashes, as complete in the
    /// layout it was built in, whichever bucket bits that was (see [`ADOPT`]).
    pub(crate) async fn adopt_layout(&self, group: Group) -> Result<bool, CacheError> {
        let g = self.keys().group(group);
        let mut call = ADOPT.prepare_invoke();
        call.key(g.generation()).key(g.complete()).key(g.layouts());
        let candidates: Vec<Keys> = (1..=24)
            .filter_map(|bits| self.keys().for_layout(Layout::with_bits(bits)))
            .collect();
        for keys in &candidates {
            let g = keys.group(group);
            call.key(g.bucket(g.buckets().start));
        }
        for keys in &candidates {
            call.arg(keys.layout().to_string());
        }
        let adopted: i64 = call
            .invoke_async(&mut self.conn())
            .await
            .context("adopting a layout")?;
        Ok(adopted > 0)
    }

    /// Sets layouts `fill` under `generation` (those already `ok` stay so); false if the
    /// generation is gone.
    pub(crate) async fn begin_fill(
        &self,
        group: Group,
        generation: &str,
        layouts: &[Layout],
    ) -> Result<bool, CacheError> {
        self.layouts_script(&BEGIN, group, generation, layouts)
            .await
            .map(|n| n == 1)
    }

    /// Sets `ok` the layouts still `fill` under `generation`; returns how many.
    pub(crate) async fn validate(
        &self,
        group: Group,
        generation: &str,
        layouts: &[Layout],
    ) -> Result<u64, CacheError> {
        self.layouts_script(&VALIDATE, group, generation, layouts)
            .await
    }

    async fn layouts_script(
        &self,
        script: &Script,
        group: Group,
        generation: &str,
        layouts: &[Layout],
    ) -> Result<u64, CacheError> {
        let g = self.keys().group(group);
        let mut call = script.prepare_invoke();
        call.key(g.generation()).key(g.layouts()).arg(generation);
        for layout in layouts {
            call.arg(layout.to_string());
        }
        call.invoke_async(&mut self.conn())
            .await
            .context("setting a layout's state")
    }

    /// Whether a layout is `ok` in a group now.
    pub(crate) async fn layout_is_ok(
        &self,
        group: Group,
        layout: Layout,
    ) -> Result<bool, CacheError> {
        let state: Option<String> = redis::cmd("HGET")
            .arg(self.keys().group(group).layouts())
            .arg(layout.to_string())
            .query_async(&mut self.conn())
            .await
            .context("reading a layout's state")?;
        Ok(state.is_some_and(|s| s.starts_with("ok:")))
    }

    /// Forgets every layout of a group: what Redis that went back in time gets.
    pub(crate) async fn forget_layouts(&self, group: Group) -> Result<(), CacheError> {
        Script::new(FORGET)
            .key(self.keys().group(group).layouts())
            .invoke_async::<i64>(&mut self.conn())
            .await
            .context("forgetting the layouts")
            .map(drop)
    }

    /// Deletes a group's buckets of a layout, before it is filled: a layout that was dropped may
    /// hold records that ended since.
    pub(crate) async fn clear_buckets(&self, group: Group, keys: &Keys) -> Result<(), CacheError> {
        let g = keys.group(group);
        let buckets = g.buckets();
        let mut start = buckets.start;
        while start < buckets.end {
            let end = (start + CLEAR_CHUNK).min(buckets.end);
            let names: Vec<String> = (start..end).map(|b| g.bucket(b)).collect();
            redis::cmd("DEL")
                .arg(names)
                .query_async::<()>(&mut self.conn())
                .await
                .context("emptying a layout")?;
            start = end;
        }
        Ok(())
    }
}
