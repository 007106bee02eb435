r"""Vendor bucketing schemes: serve a split exactly as another flag system would.

A flag's ``bucketing: {scheme: ...}`` picks, at compile time, the function that
maps a bucket key to a variant of each of its splits, so users keep the cohort
they had under LaunchDarkly, Unleash, GrowthBook or flagd. The default scheme
(``tipkit``) is not here: it stays the inlined runner of ``_compiled.Serve``,
so its evaluations pay nothing for this module. Each scheme is written from
the vendor's published algorithm and checked against the vendor's own Python
SDK (``tests/test_flags_schemes.py``); ``docs/bucketing.md`` is the spec.

All hashing here is total: text is encoded as UTF-8 (UTF-16 code units for
GrowthBook) with ``surrogatepass``, so a lone surrogate buckets instead of
crashing mmh3 or raising.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Final

import mmh3

from tipkit.flags._bucketing import BUCKETS
from tipkit.flags._model import Outcome
from tipkit.flags._yaml import line_of

__all__ = [
    "BUCKETING_KEYS",
    "SCHEMES",
    "Scheme",
    "flag_scheme",
    "fnv1a32",
    "growthbook_hash",
    "launchdarkly_bucket",
    "parse_bucketing",
    "scheme_runner",
    "unleash_hash",
]

SCHEMES: Final = (
    "tipkit",
    "launchdarkly",
    "unleash",
    "growthbook-v1",
    "growthbook-v2",
    "flagd",
)
BUCKETING_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "tipkit": ("scheme",),
    "launchdarkly": ("scheme", "flag_key", "salt", "seed"),
    "unleash": ("scheme", "group", "disabled"),
    "growthbook-v1": ("scheme", "seed"),
    "growthbook-v2": ("scheme", "seed"),
    "flagd": ("scheme", "flag_key", "prefix", "version", "total"),
}
UNLEASH_VARIANT_SEED: Final = 86028157
"""The murmur3 seed Unleash hashes variant assignment with (rollout uses 0)."""
UNLEASH_TOTAL_WEIGHT: Final = 1000
"""Unleash variant weights are thousandths; tipkit's split then holds them exactly."""
_LD_SCALE: Final = float(0xFFFFFFFFFFFFFFF)

Pick = Callable[[str], int]
"""A compiled scheme over one split: ``pick(bucket_key) -> variant index``."""
Run = Callable[[Mapping[str, Any], Any], Outcome]


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def launchdarkly_bucket(prefix: str, key: str) -> float:
    """Return LaunchDarkly's bucket in ``[0, 1)``: sha1 of ``prefix.key``, 15 hex digits.

    *prefix* is ``flag_key.salt``, or ``str(seed)`` when the rollout has a seed.
    """
    digest = hashlib.sha1(_utf8(f"{prefix}.{key}"), usedforsecurity=False)
    return int(digest.hexdigest()[:15], 16) / _LD_SCALE


def unleash_hash(group: str, key: str, modulus: int, seed: int) -> int:
    """Return Unleash's normalised hash: ``murmur3(group:key, seed) % modulus + 1``."""
    return mmh3.hash(_utf8(f"{group}:{key}"), seed, signed=False) % modulus + 1


def fnv1a32(text: str) -> int:
    """Return FNV-1a (32 bit) over *text*'s UTF-16 code units, as GrowthBook's JS SDK does."""
    h = 0x811C9DC5
    if text.isascii():  # one code unit per byte: the common case, half the work
        for b in text.encode():
            h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
        return h
    data = text.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(data), 2):
        h = ((h ^ (data[i] | (data[i + 1] << 8))) * 0x01000193) & 0xFFFFFFFF
    return h


def growthbook_hash(seed: str, key: str, version: int) -> float:
    """Return GrowthBook's hash of *key* in ``[0, 1)`` (hash version 1 or 2)."""
    if version == 2:  # GrowthBook's own version numbers
        return (fnv1a32(str(fnv1a32(seed + key))) % 10000) / 10000
    return (fnv1a32(key + seed) % 1000) / 1000


def _cbor_text(text: str) -> bytes:
    """Return *text* as a CBOR text string (major type 3), shortest length form."""
    data = _utf8(text)
    n = len(data)
    if n < 24:  # CBOR's length encodings
        head = bytes((0x60 | n,))
    elif n < 0x100:
        head = bytes((0x78, n))
    elif n < 0x10000:
        head = b"\x79" + n.to_bytes(2, "big")
    elif n < 0x100000000:
        head = b"\x7a" + n.to_bytes(4, "big")
    else:  # pragma: no cover - a 4 GB key is refused long before
        head = b"\x7b" + n.to_bytes(8, "big")
    return head + data


class Scheme:
    """One flag's vendor bucketing, validated at load; immutable."""

    __slots__ = ("name", "params")

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        self.params = dict(params)

    def problem(self, names: tuple[str, ...], weights: tuple[int, ...]) -> str | None:
        """Return why this scheme cannot serve the split, or ``None`` if it can."""
        if self.name == "flagd" and "total" in self.params:
            if flagd_weights(weights, self.params["total"]) is None:
                return (
                    f"these percentages are not flagd weights out of a total of "
                    f"{self.params['total']} (each running sum must be k/total to 0.001%)"
                )
            return None
        if self.name != "unleash":
            return None
        disabled = self.params["disabled"]
        off = sum(w for n, w in zip(names, weights, strict=True) if n == disabled)
        rollout, rest = divmod(BUCKETS - off, 1000)
        if rest or not rollout:
            return (
                None
                if not rest
                else (
                    f"an unleash split's {disabled!r} weight must be a whole percent "
                    f"(the gradual rollout is 0..100), got {off / 1000}"
                )
            )
        for n, w in zip(names, weights, strict=True):
            if n != disabled and w % rollout:
                return (
                    f"variant {n!r}: an unleash variant's weight must be the rollout "
                    f"({rollout}%) times a thousandth of its variants' total"
                )
        return None

    def picker(self, names: tuple[str, ...], weights: tuple[int, ...]) -> Pick:
        """Return ``pick(key) -> index`` for a split of *names* with *weights* (thousandths)."""
        p = self.params
        if self.name == "launchdarkly":
            return _ld_picker(p, weights)
        if self.name == "unleash":
            return _unleash_picker(p, names, weights)
        if self.name == "flagd":
            return _flagd_picker(p, weights)
        return _growthbook_picker(p["seed"], int(self.name[-1]), weights)

    def describe(self) -> str:
        """Return ``launchdarkly (salt='s')`` for explain and repr."""
        extra = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name} ({extra})" if extra else self.name

    def __repr__(self) -> str:
        return f"<Scheme {self.describe()}>"


def _ld_picker(p: Mapping[str, Any], weights: tuple[int, ...]) -> Pick:
    seed = p.get("seed")
    prefix = f"{p['flag_key']}.{p['salt']}" if seed is None else str(seed)
    # LaunchDarkly sums weight/100000.0 in order, in floats: so do we, to match
    # its rounding at the boundaries exactly.
    total = 0.0
    ends = []
    for w in weights:
        total += w / 100000.0
        ends.append(total)
    bounds = tuple(ends)
    last = len(bounds) - 1

    def pick(key: str) -> int:
        b = launchdarkly_bucket(prefix, key)
        for i, end in enumerate(bounds):
            if b < end:
                return i
        return last

    return pick


def _unleash_picker(
    p: Mapping[str, Any], names: tuple[str, ...], weights: tuple[int, ...]
) -> Pick:
    group, disabled = p["group"], p["disabled"]
    off_index = names.index(disabled) if disabled in names else None
    off_weight = 0 if off_index is None else weights[off_index]
    rollout = (BUCKETS - off_weight) // 1000
    if not rollout:  # a 0% rollout: everyone is disabled
        return lambda _key: off_index or 0
    on = [(i, w // rollout) for i, w in enumerate(weights) if i != off_index and w]
    cums = []
    acc = 0
    for i, w in on:
        acc += w
        cums.append((acc, i))
    table = tuple(cums)
    single = table[0][1] if len(table) == 1 else None

    def pick(key: str) -> int:
        if off_index is not None and unleash_hash(group, key, 100, 0) > rollout:
            return off_index
        if single is not None:
            return single
        target = unleash_hash(group, key, acc, UNLEASH_VARIANT_SEED)
        for cum, i in table:
            if cum >= target:
                return i
        return table[-1][1]  # pragma: no cover - target <= acc always

    return pick


def _growthbook_picker(seed: str, version: int, weights: tuple[int, ...]) -> Pick:
    # GrowthBook's ranges: float cumulative sums of weights in [0, 1], in order.
    starts = []
    total = 0.0
    for w in weights:
        starts.append((total, total + w / 100000))
        total += w / 100000
    ranges = tuple(starts)
    last = len(ranges) - 1

    def pick(key: str) -> int:
        n = growthbook_hash(seed, key, version)
        for i, (lo, hi) in enumerate(ranges):
            if lo <= n < hi:
                return i
        return last

    return pick


def flagd_weights(weights: tuple[int, ...], total: int) -> tuple[int, ...] | None:
    """Return flagd's running sums out of *total* for a split's thousandths, or ``None``.

    A split written from flagd weights ``w`` out of ``total`` (thirds: 1, 1, 1
    of 3) holds each running sum ``c`` as ``round(c * 100000 / total)``
    thousandths; this recovers ``c``. ``None`` if some running sum is not within
    half a thousandth of such a ``c`` (the percentages are not flagd weights).
    """
    out = []
    acc = 0
    for w in weights:
        acc += w
        c = (2 * acc * total + BUCKETS) // (2 * BUCKETS)
        if abs(c * BUCKETS - acc * total) * 2 > total:
            return None
        out.append(c)
    return tuple(out)


def _flagd_picker(p: Mapping[str, Any], weights: tuple[int, ...]) -> Pick:
    prefix = p.get("prefix")
    flag_key = p["flag_key"]
    cbor = p.get("version", 3) == 3  # flagd's fractional v3
    head = b"\x82" + _cbor_text(flag_key)
    total = p.get("total", BUCKETS)
    ints = flagd_weights(weights, total) if total != BUCKETS else None
    if ints is None:  # thousandths are flagd weights as they are
        total = BUCKETS
        ints = tuple(acc for acc in _running(weights))
    bounds = ints
    last = len(bounds) - 1

    def hashed(key: str) -> bytes:
        if cbor:
            return (
                head + _cbor_text(key) if prefix is None else _cbor_text(prefix + key)
            )
        return _utf8((flag_key if prefix is None else prefix) + key)

    def pick(key: str) -> int:
        # (h * total) >> 32 with flagd's integer weights scaled to 100000: the
        # same thresholds on h, since the weights scale by a common factor.
        b = (mmh3.hash(hashed(key), 0, signed=False) * total) >> 32
        for i, end in enumerate(bounds):
            if b < end:
                return i
        return last  # pragma: no cover - b < total == bounds[-1]

    return pick


def _running(weights: tuple[int, ...]) -> list[int]:
    out = []
    acc = 0
    for w in weights:
        acc += w
        out.append(acc)
    return out


def scheme_runner(
    scheme: Scheme,
    outcomes: tuple[Outcome, ...],
    weights: tuple[int, ...],
    bucket_by: str | None,
    key_of: Callable[[Any], str],
) -> Run:
    """Return the split runner serving *outcomes* by *scheme*'s bucketing."""
    pick = scheme.picker(tuple(str(o.variant) for o in outcomes), weights)
    by = bucket_by

    def run(a: Mapping[str, Any], k: Any) -> Outcome:
        if by is not None:
            k = a.get(by)
        if k.__class__ is not str:
            k = key_of(k)
        return outcomes[pick(k)]

    return run


Bad = Callable[[str, str, "int | None"], None]


def parse_bucketing(  # noqa: C901, PLR0912, PLR0915  # a validator reads best as one flat list of checks
    key: str, fdoc: Mapping[str, Any], bad: Bad, line_of: Callable[..., int | None]
) -> Scheme | None:
    """Validate a flag's ``bucketing`` mapping; return its scheme (``None``: tipkit's).

    Every problem is reported through *bad* (message, field, line) as a
    ConfigError entry naming the flag and the field (``bucketing.salt``).
    """
    if "bucketing" not in fdoc:
        return None
    spec = fdoc["bucketing"]
    at = line_of(fdoc, "bucketing")
    if not isinstance(spec, Mapping):
        bad(
            f"'bucketing' must be a mapping like {{scheme: launchdarkly, salt: ...}}, "
            f"got {spec!r}",
            "bucketing",
            at,
        )
        return None
    name = spec.get("scheme")
    if name not in SCHEMES:
        bad(
            f"'bucketing.scheme' must be one of: {', '.join(SCHEMES)}; got {name!r}",
            "bucketing.scheme",
            line_of(spec, "scheme") or at,
        )
        return None
    allowed = BUCKETING_KEYS[name]
    ok = True
    for k in spec:
        if k not in allowed:
            bad(
                f"unknown key {k!r} for scheme {name!r}; expected one of: "
                f"{', '.join(allowed)}",
                f"bucketing.{k}",
                line_of(spec, k) or at,
            )
            ok = False
    params: dict[str, Any] = {}

    def text(field: str, default: str | None, *, empty: bool = False) -> None:
        nonlocal ok
        value = spec.get(field, default)
        if value is None:
            return
        if not isinstance(value, str) or (not value and not empty):
            bad(
                f"'bucketing.{field}' must be a non-empty string, got {value!r}",
                f"bucketing.{field}",
                line_of(spec, field) or at,
            )
            ok = False
            return
        params[field] = value

    if name == "tipkit":
        return None
    if name == "launchdarkly":
        text("flag_key", key)
        text("salt", None)
        if "salt" not in spec:
            bad(
                "scheme 'launchdarkly' needs 'salt': the LaunchDarkly flag's salt "
                "(its JSON 'salt' field)",
                "bucketing.salt",
                at,
            )
            ok = False
        seed = spec.get("seed")
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                bad(
                    f"'bucketing.seed' must be an integer, got {seed!r}",
                    "bucketing.seed",
                    line_of(spec, "seed") or at,
                )
                ok = False
            else:
                params["seed"] = seed
    elif name == "unleash":
        text("group", key)
        text("disabled", "off")
    elif name == "flagd":
        text("flag_key", key)
        text("prefix", None, empty=True)
        version = spec.get("version", 3)
        if version not in (2, 3) or isinstance(version, bool):
            bad(
                f"'bucketing.version' must be 3 (flagd's fractional v3, CBOR) or 2 "
                f"(murmur3 of the string), got {version!r}",
                "bucketing.version",
                line_of(spec, "version") or at,
            )
            ok = False
        elif version == 2:  # flagd's fractional v2
            params["version"] = 2
        total = spec.get("total")
        if total is not None:
            if isinstance(total, bool) or not isinstance(total, int):
                total = -1
            if not 1 <= total < BUCKETS:
                bad(
                    "'bucketing.total' must be flagd's total weight, an integer from 1 "
                    f"to 99999, got {spec.get('total')!r}",
                    "bucketing.total",
                    line_of(spec, "total") or at,
                )
                ok = False
            else:
                params["total"] = total
    else:
        text("seed", key, empty=True)
    return Scheme(name, params) if ok else None


def check_splits(
    scheme: Scheme | None, specs: list[tuple[Any, str, int | None]], bad: Bad
) -> None:
    """Report each split (``[(variant, thousandths)]``, field, line) *scheme* cannot serve."""
    if scheme is None:
        return
    for spec, field, line in specs:
        if isinstance(spec, list):
            names = tuple(n for n, _ in spec)
            why = scheme.problem(names, tuple(w for _, w in spec))
            if why is not None:
                bad(why, f"{field}.split" if field else "split", line)


def flag_scheme(
    key: str,
    fdoc: Mapping[str, Any],
    bad: Bad,
    rule_specs: list[tuple[Any, ...]],
    fall_spec: Any,
) -> Scheme | None:
    """Return flag *key*'s validated scheme; report its problems and its splits'.

    *rule_specs* are the compiler's ``(id, cond, serve spec, field, line)``;
    a split spec is ``[(variant, thousandths)]``.
    """
    scheme = parse_bucketing(key, fdoc, bad, line_of)
    splits = [(s[2], f"{s[3]}.serve", s[4]) for s in rule_specs]
    splits.append((fall_spec, "fallthrough", line_of(fdoc, "fallthrough")))
    check_splits(scheme, splits, bad)
    return scheme
