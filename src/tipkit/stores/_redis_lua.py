"""The Lua scripts of RedisStore, and how their arguments and replies are encoded.

Pure: no I/O and no ``redis`` import. Layout in Redis (every script touches
exactly one key, so each works on a Redis Cluster slot of its own):

* ``<prefix>ns:<namespace>``: one hash per namespace. Field ``version`` holds the
  namespace version; field ``:<key>`` holds the JSON array
  ``[entry_version, expires_at_us | null, value]``, the expiry in microseconds
  of the server's ``TIME``.
* ``<prefix>c:<key>``: one hash per counters key, one field per counter; its
  time to live is Redis's own key expiry.
* ``<prefix>tb:<key>``: one string per token bucket, ``"<level> <last>"`` (last
  refill in seconds of the server's ``TIME``), expiring once it would have
  refilled to capacity; a full bucket is deleted.

Every write to a namespace also ``PUBLISH``es its new version on a channel named
like the namespace's key, inside the same script (what ``RedisStore.watch``
listens to). On Redis Cluster the scripts of :data:`SHARDED_SCRIPTS` use
``SPUBLISH`` instead (sharded pub/sub: the message goes to the shard that owns
the namespace's slot only, not across the whole cluster bus), and the
namespace hashes and the audit stream share one hash tag, so the audited
compare-and-set (:data:`AUDITED_CAS`, two keys) runs on one slot.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from tipkit._core._durations import to_seconds_or_none
from tipkit._core._tokens import check_bucket_args
from tipkit.stores._protocol import Entry, Snapshot, TokenTake

__all__ = [
    "AUDITED_CAS",
    "MAX_PEXPIRE_MS",
    "PACKED_MAX",
    "SCRIPTS",
    "SCRIPTS_CLASSIC",
    "SHARDED_SCRIPTS",
    "Script",
    "amount_args",
    "bucket_args",
    "check_version",
    "entry",
    "fields",
    "number",
    "pack",
    "snapshot",
    "take_reply",
    "ttl_ms",
    "ttl_us",
]

# Seconds are turned into whole microseconds (entry expiry) or milliseconds (key
# expiry); the cap keeps PEXPIRE within what Redis accepts.
MAX_PEXPIRE_MS = 10**15

_PRELUDE = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function live(s, now)
  local exp = string.match(s, '^%[%d+,([^,]*),')
  return exp == 'null' or tonumber(exp) > now
end
local function version_is(key, field, expected, now)
  local s = redis.call('HGET', key, field)
  local current = 0
  if s and live(s, now) then current = tonumber(string.match(s, '^%[(%d+),')) end
  return current == tonumber(expected)
end
local function write(key, field, value, ttl_us, now)
  local v = redis.call('HINCRBY', key, 'version', 1)
  local exp = 'null'
  if ttl_us ~= '' then exp = string.format('%d', now + tonumber(ttl_us)) end
  redis.call('HSET', key, field, string.format('[%d,%s,', v, exp) .. value .. ']')
  redis.call('PUBLISH', key, v)
  return v
end
"""

# KEYS[1] namespace hash; ARGV[1] field.
_GET = """
local s = redis.call('HGET', KEYS[1], ARGV[1])
if not s or not live(s, now_us()) then return false end
return s
"""

# ARGV[1] field, ARGV[2] JSON value, ARGV[3] ttl in microseconds or ''.
_SET = """
return write(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now_us())
"""

# As _SET, plus ARGV[4] the expected entry version (0: absent or expired).
_CAS = """
local now = now_us()
if not version_is(KEYS[1], ARGV[1], ARGV[4], now) then return false end
return write(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now)
"""

# ARGV[1] field. An expired entry is removed without a version bump: it was
# already gone for every reader.
_DELETE = """
local s = redis.call('HGET', KEYS[1], ARGV[1])
if not s then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if not live(s, now_us()) then return 0 end
redis.call('PUBLISH', KEYS[1], redis.call('HINCRBY', KEYS[1], 'version', 1))
return 1
"""

# Returns {version, field, entry, field, entry, ...}; prunes expired entries.
_SNAPSHOT = """
local all = redis.call('HGETALL', KEYS[1])
local out = {0}
local now = nil
for i = 1, #all, 2 do
  local f, s = all[i], all[i + 1]
  if f == 'version' then
    out[1] = tonumber(s)
  else
    if not string.find(s, '^%[%d+,null,') then now = now or now_us() end
    if now == nil or live(s, now) then
      out[#out + 1] = f
      out[#out + 1] = s
    else
      redis.call('HDEL', KEYS[1], f)
    end
  end
end
return out
"""

# KEYS[1] counters hash; ARGV[1] ttl in milliseconds or ''; then field, amount pairs.
_INCREMENT = """
for i = 2, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
local all = redis.call('HGETALL', KEYS[1])
if ARGV[1] == '' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return all
"""

# KEYS[1] bucket (a string "level last"); ARGV tokens, rate, capacity, max_wait,
# max pexpire. The middle block is tipkit/_core/_tokens.py `take`, line for line,
# and the end is MemoryStore.take_tokens: keep the three in step. Returns
# {admitted, level}; wait and retry_after follow from the level exactly (take_reply).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local capacity, max_wait = tonumber(ARGV[3]), tonumber(ARGV[4])
local level, last = capacity, now
local state = redis.call('GET', KEYS[1])
if state then
  local l, s = string.match(state, '^(%S+) (%S+)$')
  level, last = tonumber(l), tonumber(s)
end
local admitted = 1
local elapsed = now - last
if elapsed > 0 then
  level = math.min(capacity, level + elapsed * rate)
end
if tokens <= 0 then
  level = math.min(capacity, level - tokens)
else
  local missing = tokens - level
  if missing <= 0 then
    level = level - tokens
  else
    local wait = missing / rate
    if wait <= max_wait then
      level = level - tokens
    else
      admitted = 0
    end
  end
end
local out = string.format('%.17g', level)
if level >= capacity then
  redis.call('DEL', KEYS[1])
else
  local origin = math.max(last, now)
  local refill = (capacity - level) / rate + (origin - now)
  local ms = math.min(tonumber(ARGV[5]), math.ceil(refill * 1000) + 1)
  redis.call('SET', KEYS[1], out .. string.format(' %.17g', origin),
    'PX', string.format('%d', ms))
end
return {admitted, out}
"""


# KEYS[1] namespace hash, KEYS[2] audit stream (one slot: a shared hash tag);
# ARGV as _CAS, then ARGV[5] the record's JSON, ARGV[6] MAXLEN ~ or ''.
# Returns {new version, stream id} or false: both written, or neither.
_AUDITED_CAS = """
local now = now_us()
if not version_is(KEYS[1], ARGV[1], ARGV[4], now) then return false end
local v = write(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now)
local id
if ARGV[6] == '' then
  id = redis.call('XADD', KEYS[2], '*', 'r', ARGV[5])
else
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'r', ARGV[5])
end
return {v, id}
"""


_SPUBLISH = """
local function spublish(channel, v)
  if not pcall(redis.call, 'SPUBLISH', channel, v) then
    redis.call('PUBLISH', channel, v)
  end
end
"""


class Script:
    """A Lua script and its SHA1, which is what ``SCRIPT LOAD`` answers."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, body: str, *, prelude: bool = True) -> None:
        self.name = name
        self.source = (_PRELUDE if prelude else "") + body
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()

    def sharded(self) -> Script:
        """Return this script publishing with ``SPUBLISH`` (sharded pub/sub).

        A server without ``SPUBLISH`` (Redis < 7) gets a ``PUBLISH`` instead,
        which the watch listener's classic fallback hears.
        """
        call = "redis.call('PUBLISH', "
        if call not in self.source:  # the hot take_tokens script stays as it is
            return Script(self.name, self.source, prelude=False)
        return Script(
            self.name,
            _SPUBLISH + self.source.replace(call, "spublish("),
            prelude=False,
        )


SCRIPTS = {
    s.name: s
    for s in (
        Script("get", _GET),
        Script("set", _SET),
        Script("compare_and_set", _CAS),
        Script("delete", _DELETE),
        Script("snapshot", _SNAPSHOT),
        Script("increment", _INCREMENT, prelude=False),
        Script("take_tokens", _TAKE, prelude=False),
    )
}

AUDITED_CAS = Script("audited_compare_and_set", _AUDITED_CAS)
"""The Cluster form of the audited compare-and-set (single node: WATCH/MULTI)."""

SHARDED_SCRIPTS = {
    name: script.sharded()
    for name, script in {**SCRIPTS, "audited": AUDITED_CAS}.items()
}
"""The scripts for a Redis Cluster with sharded pub/sub (Redis 7+)."""

SCRIPTS_CLASSIC = {**SCRIPTS, "audited": AUDITED_CAS}
"""The scripts for a Redis Cluster with classic pub/sub (``PUBLISH``)."""


def pack(*parts: bytes) -> bytes:
    """Return one RESP command (an array of bulk strings), ready for the socket."""
    out = [b"*%d\r\n" % len(parts)]
    out.extend(b"$%d\r\n%b\r\n" % (len(part), part) for part in parts)
    return b"".join(out)


# Packed take_tokens commands kept per store: a hot bucket sends the same bytes
# every time, so they are built (and their arguments checked) once.
PACKED_MAX = 4096


def entry(raw: bytes | None) -> Entry | None:
    if raw is None:
        return None
    version, _, value = json.loads(raw)
    return Entry(value, version)


def number(raw: bytes) -> float:
    # HINCRBYFLOAT prints integral totals without a decimal point: give them back
    # as ints, as MemoryStore does for int amounts.
    try:
        return int(raw)
    except ValueError:
        return float(raw)


def fields(flat: Sequence[bytes]) -> dict[str, float]:
    return {flat[i].decode(): number(flat[i + 1]) for i in range(0, len(flat), 2)}


def snapshot(flat: Sequence[Any]) -> Snapshot:
    entries: dict[str, Entry] = {}
    for i in range(1, len(flat), 2):
        version, _, value = json.loads(flat[i + 1])
        entries[flat[i].decode()[1:]] = Entry(value, version)
    return Snapshot(int(flat[0]), entries)


def take_reply(raw: Sequence[Any], tokens: float, rate: float) -> TokenTake:
    # The script returns the level only. As in _core/_tokens.take, a reservation
    # waits `missing / rate` where missing = tokens - level_before = -level_after
    # (exactly, in floating point), and a refusal leaves the level untouched, so
    # retry_after = (tokens - level) / rate.
    level = float(raw[1])
    if not raw[0]:
        return TokenTake(
            admitted=False, wait=0.0, tokens=level, retry_after=(tokens - level) / rate
        )
    wait = -level / rate if tokens > 0 and level < 0 else 0.0
    return TokenTake(admitted=True, wait=wait, tokens=level, retry_after=0.0)


def ttl_us(ttl: float | timedelta | None) -> str:
    secs = to_seconds_or_none(ttl, "ttl")
    return "" if secs is None else str(round(secs * 1_000_000))


def ttl_ms(ttl: float | timedelta | None) -> str:
    secs = to_seconds_or_none(ttl, "ttl")
    if secs is None:
        return ""
    # PEXPIRE with 0 or less deletes the key at once, as an elapsed TTL should.
    return str(min(MAX_PEXPIRE_MS, math.ceil(secs * 1000)))


def amount_args(key: str, amounts: Mapping[str, float]) -> list[str]:
    args: list[str] = []
    checked: Mapping[str, object] = amounts  # callers may pass anything at run time
    for field, amount in checked.items():
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise TypeError(
                f"increment {key}/{field}: amount must be a number, got {amount!r}"
            )
        if isinstance(amount, float) and not math.isfinite(amount):
            raise ValueError(
                f"increment {key}/{field}: amount must be finite, got {amount!r}"
            )
        args += (field, repr(amount))
    return args


def bucket_args(
    tokens: float, rate: float, capacity: float, max_wait: float
) -> tuple[str, ...]:
    check_bucket_args(tokens, rate, capacity, max_wait)
    # repr() round-trips a float exactly through Lua's tonumber; infinity does not parse.
    wait = 1e300 if max_wait == math.inf else max_wait
    return (
        repr(float(tokens)),
        repr(float(rate)),
        repr(float(capacity)),
        repr(float(wait)),
        str(MAX_PEXPIRE_MS),
    )


def check_version(version: object) -> str:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise TypeError(f"version must be an int >= 0 (0: absent), got {version!r}")
    return str(version)
