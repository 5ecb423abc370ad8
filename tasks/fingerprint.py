"""Fingerprints of normalized article text, for exact and near-duplicate detection.

Pure: no database or network. A `Fingerprint` carries
- `text_hash`: SHA-256 of the word tokens, for exact duplicates anywhere;
- `signature`: MinHash signatures (datasketch's "affine32" permutations, applied here in
  numpy, over a stable shingle hash so every worker process computes the same values) of
  the whole text and of its lead (first `lead_words` words), plus both shingle counts;
- `band_keys`: LSH band keys of both signatures, which the shared index stores so that a
  look-up touches only articles sharing a band (sublinear, no scan).

Why this shape (numbers from benchmarks/dedup_quality.py on the BBC corpus):
- A syndicated copy (boilerplate added, a paragraph dropped, 5-10% of the words edited,
  new headline) keeps most of the story's 3-word shingles but adds and loses some, so its
  Jaccard similarity falls to ~0.2-0.3 while its *containment* (shared shingles over the
  smaller set) stays above ~0.5. Unrelated articles stay below ~0.2 on either measure.
  So the score is the containment estimated from the MinHash Jaccard and the two set
  sizes, trusted only when the Jaccard estimate itself is clearly above chance
  (`jaccard_floor`), because with few agreeing values a lopsided pair's estimate is noise.
- A feed summary (the first sentences of a story) is contained in the full article, but
  their Jaccard is ~0.05: no affordable LSH finds that. Both share a *lead*, though, so
  the lead gets its own small signature and bands, and lead-vs-lead Jaccard is a second
  score. It counts only where the rest cannot contradict it: when the shorter text is
  summary-sized, or when the containment agrees. Otherwise a feed that opens every item
  with the same paragraph (a press-release header) would make all its items one story.
- Bands of 2 rows: at 1M stored articles a query meets ~70 unrelated candidates (32 full
  bands), while a copy at Jaccard 0.25 is a candidate with p = 0.87 and one at 0.8 with
  p > 0.999999. Candidates are ranked by shared bands in SQL and verified here.

Signatures are stored truncated to 16 bits per value: 2 bytes per permutation, with a
false-agreement rate of 1/65536 per value, corrected in the estimate.

Speed (issue 6): fingerprinting is on every entry's path, so it is a few passes of numpy
over the text's bytes instead of a regex and a Python hash call per shingle (~4x faster,
under 0.1 ms per BBC article). A byte table finds the words; every shingle's hash comes
from one prefix sum (a polynomial hash of its bytes, then splitmix); the MinHash
permutations are applied to all shingles at once, and the lead's signature is the minimum
over the first columns of that same matrix. The values are exactly what datasketch's
`MinHash(scheme="affine32").update_batch` gives for the same shingle hashes, which
tests/test_fingerprint.py checks. The shingle hash is kept nowhere but in signatures,
which migration 0002 recomputes with the current code.

Per text, that is still some forty numpy calls, and their fixed cost is about half the
time. `fingerprint_many` gives a batch the same fingerprints with each call covering many
texts laid end to end: half the time per BBC article in the pipeline's batches of 200.
"""

from __future__ import annotations

import hashlib
import re
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"\w+")
_SCHEME = "affine32"
_HEADER = struct.Struct("<HH")  # shingle counts of the full text and of the lead
_U64 = np.uint64
# Per-band salts, so equal values in different bands (or in the lead) give other keys.
_FULL_SALT = 0x9E3779B97F4A7C15
_LEAD_SALT = 0xD1B54A32D192ED03
# Shingle hash: a polynomial over the bytes, mod 2**64, with an odd base (so it has an
# inverse, which takes a shingle's hash out of the running prefix sums).
_BASE = 0xA0761D6478BD642F
_BASE_INVERSE = pow(_BASE, -1, 1 << 64)
_U32_MAX = np.uint32(0xFFFFFFFF)
# The high half of each uint64 when viewed as two uint32 (a view costs nothing).
_HIGH_HALF = slice(1, None, 2) if sys.byteorder == "little" else slice(0, None, 2)


def _operand(value: int, dtype: type[np.unsignedinteger]) -> np.ndarray:
    # A read-only 0-d array: as an operand it costs numpy less than a scalar of the
    # same type (converted on every call), with the same results.
    array = np.array(value, dtype=dtype)
    array.flags.writeable = False
    return array


_MIX1, _MIX2 = _operand(0xBF58476D1CE4E5B9, np.uint64), _operand(0x94D049BB133111EB, np.uint64)
_SHIFTS64 = tuple(_operand(shift, np.uint64) for shift in (30, 27, 31))
_ONE64 = _operand(1, np.uint64)
_FMIX1, _FMIX2 = _operand(0x85EBCA6B, np.uint32), _operand(0xC2B2AE35, np.uint32)
_SHIFTS32 = _operand(16, np.uint32), _operand(13, np.uint32)
_SPACE = _operand(32, np.uint8)  # the separator in `_word_bytes` output
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Byte table: ASCII characters that are not `\w` become spaces; the bytes of non-ASCII
# characters stay (see `_word_bytes`).
_SEPARATORS = bytes(c if c > 127 or _WORD.match(chr(c)) else 32 for c in range(256))
_ASCII_SEPARATORS = bytes(ord(chr(c).lower()) if c < 128 else c for c in _SEPARATORS)
_ASCII_BYTES = bytes(range(128))


@dataclass(frozen=True, slots=True)
class FingerprintParams:
    """Shingle size, signature sizes and LSH layout. Changing them invalidates an index."""

    shingle_size: int = 3
    num_perm: int = 64
    bands: int = 32
    lead_words: int = 40
    lead_perm: int = 32
    lead_bands: int = 8
    # Below this estimated Jaccard a containment estimate is not trusted (see module doc).
    jaccard_floor: float = 0.15
    # Lead similarity counts only from here: two reports of one event often open alike
    # (BBC's Davis Cup reports share ~0.45 of their lead shingles), two cuts of one story
    # share far more.
    lead_floor: float = 0.6
    # A shared lead stands for the whole text only where the whole cannot disagree: the
    # shorter text is a summary, at most this many shingles (about 120 words)...
    summary_shingles: int = 120
    # ...or the texts' containment backs it. Unrelated items behind one standing opening
    # (a press-release header) share their lead and nothing else: containment ~0.15.
    lead_containment: float = 0.5
    seed: int = 1

    @property
    def rows(self) -> int:
        """Signature values per band (the lead bands use the same number)."""
        return self.num_perm // self.bands

    @property
    def signature_size(self) -> int:
        """Bytes of a stored signature."""
        return _HEADER.size + 2 * (self.num_perm + self.lead_perm)


DEFAULT_PARAMS = FingerprintParams()


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What the dedup index needs to know about one article's text."""

    text_hash: str
    signature: bytes  # header + num_perm + lead_perm little-endian uint16 values
    band_keys: tuple[int, ...]
    shingle_count: int


@dataclass(frozen=True, slots=True)
class Similarity:
    """Estimated similarities of two signatures; `score` is what thresholds compare."""

    jaccard: float
    containment: float
    lead: float
    score: float


def words(text: str) -> list[str]:
    """Lower-cased word tokens: the unit shingles are built from."""
    return _WORD.findall(text.lower())


def shingles(tokens: Sequence[str], size: int) -> set[bytes]:
    """The set of `size`-word shingles; a short text yields one shingle of all its words."""
    if len(tokens) < size:
        return {" ".join(tokens).encode()} if tokens else set()
    return {" ".join(tokens[i : i + size]).encode() for i in range(len(tokens) - size + 1)}


def text_hash(text: str) -> str:
    """SHA-256 over the word tokens: equal for texts differing only in case/punctuation."""
    return hashlib.sha256(" ".join(words(text)).encode()).hexdigest()


def _mix64(x: np.ndarray) -> np.ndarray:
    # splitmix64's finalizer: a bijection on 64-bit integers with good avalanche, so
    # distinct band values give distinct keys and keys spread evenly over the index.
    s1, s2, s3 = _SHIFTS64
    x = x ^ (x >> s1)  # a new array: the steps below work in place
    x *= _MIX1
    x ^= x >> s2
    x *= _MIX2
    x ^= x >> s3
    return x


def _mix64_in_place(x: np.ndarray) -> np.ndarray:
    # `_mix64` of an array of our own: no new array per step.
    s1, s2, s3 = _SHIFTS64
    x ^= x >> s1
    x *= _MIX1
    x ^= x >> s2
    x *= _MIX2
    x ^= x >> s3
    return x


def band_keys_matrix(values: np.ndarray, bands: int, salt: int = _FULL_SALT) -> np.ndarray:
    """LSH band keys of many signatures at once: int64 array of shape (n, bands).

    `values` is (n, bands * rows) of uint32 MinHash values. A key hashes the band number
    and the band's values; it is shifted to 63 bits so it fits a signed BIGINT.
    Vectorized so that benchmarks can index millions of signatures with the same keys.
    """
    values = np.asarray(values, dtype=np.uint64)
    n, width = values.shape
    rows = width // bands
    with np.errstate(over="ignore"):
        band_ids = np.arange(bands, dtype=np.uint64)
        acc = np.broadcast_to((band_ids + _U64(1)) * _U64(salt), (n, bands)).copy()
        grouped = values[:, : bands * rows].reshape(n, bands, rows)
        for row in range(rows):
            acc = _mix64(acc ^ grouped[:, :, row])
    return (acc >> _U64(1)).astype(np.int64)


@lru_cache(maxsize=8)
def _permutations(params: FingerprintParams) -> tuple[np.ndarray, np.ndarray]:
    # datasketch's "affine32" permutations for `params.seed`, drawn as its
    # `MinHash._init_permutations` (2.0) draws them: odd multipliers, any offsets, uint32.
    # Not through a MinHash: importing datasketch imports scipy, ~0.4 s on every worker
    # and CLI start. tests/test_fingerprint.py checks that they are datasketch's.
    gen = np.random.RandomState(params.seed)
    a = gen.randint(0, 1 << 31, params.num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, params.num_perm, dtype=np.uint32)
    return a, b


_powers_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_POWERS_KEPT = 1 << 17  # longer tables (texts over 128 KB) are not kept: 1 MB each at most


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """_BASE**i and _BASE**-i mod 2**64 for i < n (at least), grown on demand."""
    tables = _powers_cache.get("tables")
    if tables is None or len(tables[0]) < n:
        size = max(4096, 1 << (n - 1).bit_length())
        powers, inverse = (np.full(size, base, dtype=np.uint64) for base in (_BASE, _BASE_INVERSE))
        powers[0] = inverse[0] = 1
        # Both tables in one assignment, so another thread sees both or neither.
        tables = np.cumprod(powers), np.cumprod(inverse)
        if size <= _POWERS_KEPT:
            _powers_cache["tables"] = tables
    return tables


def _word_bytes(text: str) -> np.ndarray:
    """The UTF-8 bytes of `" ".join(words(text)) + " "` (nothing for no words), as uint8.

    Without a regex pass, which cost more than all the hashing together: a byte table
    turns every ASCII non-word character into a space (and, for an ASCII text, folds the
    case) and keeps the bytes of non-ASCII characters, so the non-ASCII characters that
    are not `\\w` (a few distinct ones per text, such as '£' or curly quotes) are turned
    into spaces first. Then a space is kept only right after a word character.
    """
    codes = np.frombuffer(_spaced_bytes(text), dtype=np.uint8)
    return codes[_kept_bytes(codes)]


def _spaced_bytes(text: str) -> bytes:
    # `_word_bytes` before the collapse: the lowered words' bytes, every other character a
    # space, and one more space at the end (so texts laid end to end stay apart).
    if text.isascii():
        return (text + " ").encode().translate(_ASCII_SEPARATORS)
    if (plain := _lowercase_bytes(text)) is not None:
        return plain
    lowered = text.lower()
    for char in set(_NON_ASCII.findall(lowered)):
        if _WORD.match(char) is None:
            lowered = lowered.replace(char, " ")
    return (lowered + " ").encode().translate(_SEPARATORS)


def _kept_bytes(codes: np.ndarray) -> np.ndarray:
    # A space is kept only right after a word byte: one space after each word, none before.
    is_word = codes != _SPACE
    keep = is_word.copy()
    keep[1:] |= is_word[:-1]
    return keep


def _lowercase_bytes(text: str) -> bytes | None:
    """`_word_bytes`'s bytes before the collapse, when lowercasing changes only ASCII.

    That holds when no non-ASCII character changes in lowercase (most texts: '£', 'é'),
    as str.lower() maps characters one by one but for a capital sigma, which changes.
    The ASCII table then folds the case, and the text is never lowercased (slow for
    non-ASCII text). None when it does not hold.
    """
    data = text.encode("utf-8", "surrogatepass")
    # Its non-ASCII characters: what is left once the ASCII bytes are deleted.
    others = set(data.translate(None, _ASCII_BYTES).decode("utf-8", "surrogatepass"))
    if any(char.lower() != char for char in others):
        return None
    for char in others:
        if _WORD.match(char) is None:
            # UTF-8 is self-synchronizing: a character's bytes only match where it stands.
            data = data.replace(char.encode("utf-8", "surrogatepass"), b" ")
    return (data + b" ").translate(_ASCII_SEPARATORS)


def _shingle_hashes(codes: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """The 64-bit hash of every shingle of `_word_bytes` output, and the word count.

    A shingle's hash is splitmix of the polynomial hash of its bytes (with the space
    after it): prefix sums over the whole text give every shingle's sum in one
    subtraction, which the inverse power of its start makes independent of where it
    stands. One value per shingle position, in text order, repeats kept. As in
    `shingles`, a text of fewer than `size` words is one shingle of all of them.
    """
    if len(codes) == 0:
        return np.empty(0, dtype=np.uint64), 0
    ends = (codes == _SPACE).nonzero()[0]  # the space after each word
    n_words = len(ends)
    return _mix64_in_place(_run_sums(codes, ends, min(size, n_words))), n_words


def _run_sums(codes: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    # The position-free polynomial hash of every run of `width` words of `codes` (`ends`:
    # the space after each word), before mixing: a new array, in text order.
    count = len(ends) - width + 1
    powers, inverse = _powers(len(codes))
    # through[k]: the sum over the bytes up to word k's space (a new array, ours).
    through = np.cumsum(powers[: len(codes)] * codes)[ends]
    # Run i ends with word i + width - 1. Run 0 starts the text; for the others, take
    # off the sum through word i - 1, then multiply by the inverse power of the run's
    # start (the byte after that word's space). Overlapping operands work as if the
    # input were copied first.
    sums = through[width - 1 :]
    sums[1:] -= through[: count - 1]
    sums[1:] *= inverse[1:][ends[: count - 1]]
    return sums


def shingle_hashes(tokens: Sequence[str], size: int) -> np.ndarray:
    """The 64-bit hash of every `size`-word shingle of `tokens` (as `words` gives them).

    One value per shingle position, repeats kept; the set of values stands for
    `shingles(tokens, size)`. `fingerprint` computes exactly these from the text.
    """
    data = (" ".join(tokens) + " ").encode() if tokens else b""
    return _shingle_hashes(np.frombuffer(data, dtype=np.uint8), size)[0]


def _fmix32(x: np.ndarray) -> np.ndarray:
    # MurmurHash3's finalizer, datasketch's pre-mix for the "affine32" scheme.
    s1, s2 = _SHIFTS32
    x = x ^ (x >> s1)  # a new array: the steps below work in place
    x *= _FMIX1
    x ^= x >> s2
    x *= _FMIX2
    x ^= x >> s1
    return x


def _permuted_t(hashes: np.ndarray, num_perm: int, params: FingerprintParams) -> np.ndarray:
    # (num_perm, n): a minimum along rows reads contiguous memory, about 1.5x faster.
    a, b = _permutations(params)
    high = np.ascontiguousarray(hashes, dtype=np.uint64).view(np.uint32)[_HIGH_HALF]
    inputs = _fmix32(high)
    matrix = np.multiply.outer(a[:num_perm], inputs)
    matrix += b[:num_perm, None]
    return matrix


def permuted(
    hashes: np.ndarray, num_perm: int, params: FingerprintParams = DEFAULT_PARAMS
) -> np.ndarray:
    """Every shingle's value under the first `num_perm` permutations: (n, num_perm) uint32.

    A shingle's MinHash input is the high 32 bits of its hash; the permutations are
    datasketch's "affine32" ones (pre-mix, then a * h + b mod 2**32) for `params.seed`.
    """
    return _permuted_t(hashes, num_perm, params).T


def permuted_min(
    hashes: np.ndarray, num_perm: int, params: FingerprintParams = DEFAULT_PARAMS
) -> np.ndarray:
    """The MinHash values (uint32) of a set of shingle hashes; all 2**32 - 1 when empty."""
    if len(hashes) == 0:
        return np.full(num_perm, _U32_MAX, dtype=np.uint32)
    return _permuted_t(hashes, num_perm, params).min(axis=1)


def _distinct(values: np.ndarray) -> int:
    if len(values) == 0:
        return 0
    ordered = np.sort(values)
    return int(np.count_nonzero(ordered[1:] != ordered[:-1])) + 1


@dataclass(frozen=True, slots=True)
class Signatures:
    """One text's MinHash values before truncation, with its shingle counts."""

    values: np.ndarray  # num_perm full-text then lead_perm lead uint32 values
    num_perm: int
    full_count: int
    lead_count: int

    @property
    def full(self) -> np.ndarray:
        return self.values[: self.num_perm]

    @property
    def lead(self) -> np.ndarray:
        return self.values[self.num_perm :]


def _signatures(codes: np.ndarray, params: FingerprintParams) -> Signatures:
    return Signatures(*_signature_values(codes, params))


def _signature_values(
    codes: np.ndarray, params: FingerprintParams
) -> tuple[np.ndarray, int, int, int]:
    # Signatures' fields, without building one (`fingerprint` needs none).
    size, num_perm, lead_perm = params.shingle_size, params.num_perm, params.lead_perm
    values = np.empty(num_perm + lead_perm, dtype=np.uint32)
    grams, n_words = _shingle_hashes(codes, size)
    if len(grams) == 0:
        values.fill(_U32_MAX)
        return values, num_perm, 0, 0
    matrix = _permuted_t(grams, num_perm, params)
    matrix.min(axis=1, out=values[:num_perm])
    lead_words = min(n_words, params.lead_words)
    if lead_words == n_words or lead_words >= size:
        # The lead's shingles are the text's first ones: the minimum over their columns.
        rows = len(grams) if lead_words == n_words else lead_words - size + 1
        matrix[:lead_perm, :rows].min(axis=1, out=values[num_perm:])
        full_count = _distinct(grams)
        lead_count = full_count if rows == len(grams) else _distinct(grams[:rows])
    else:  # a lead shorter than one shingle is one shingle of its words (or none)
        lead_end = np.flatnonzero(codes == 32)[lead_words - 1] + 1 if lead_words else 0
        lead_grams = _shingle_hashes(codes[:lead_end], size)[0]
        values[num_perm:] = permuted_min(lead_grams, lead_perm, params)
        full_count, lead_count = _distinct(grams), len(lead_grams)
    return values, num_perm, full_count, lead_count


def signatures(text: str, params: FingerprintParams = DEFAULT_PARAMS) -> Signatures:
    """The full-text and lead MinHash values of a text, as `fingerprint` stores them."""
    return _signatures(_word_bytes(text), params)


def pack_signature(full: np.ndarray, lead: np.ndarray, full_count: int, lead_count: int) -> bytes:
    """The stored form: both shingle counts, then the 16-bit truncated values."""
    header = _HEADER.pack(min(full_count, 0xFFFF), min(lead_count, 0xFFFF))
    values = np.concatenate([np.asarray(full), np.asarray(lead)]).astype(np.uint32)
    return header + (values & 0xFFFF).astype("<u2").tobytes()


def index_keys_matrix(
    full: np.ndarray, lead: np.ndarray, params: FingerprintParams = DEFAULT_PARAMS
) -> np.ndarray:
    """Full-text band keys then lead band keys of many signatures: (n, bands + lead_bands)."""
    full_keys = band_keys_matrix(full[:, : params.num_perm], params.bands)
    lead_values = lead[:, : params.lead_bands * params.rows]
    lead_keys = band_keys_matrix(lead_values, params.lead_bands, _LEAD_SALT)
    return np.concatenate([full_keys, lead_keys], axis=1)


@lru_cache(maxsize=8)
def _band_seeds(params: FingerprintParams) -> np.ndarray:
    # The initial accumulators of `band_keys_matrix`, full-text bands then lead bands.
    full = (np.arange(params.bands, dtype=np.uint64) + _U64(1)) * _U64(_FULL_SALT)
    lead = (np.arange(params.lead_bands, dtype=np.uint64) + _U64(1)) * _U64(_LEAD_SALT)
    return np.concatenate([full, lead])


def index_keys(
    full: np.ndarray, lead: np.ndarray, params: FingerprintParams = DEFAULT_PARAMS
) -> tuple[int, ...]:
    """Full-text band keys followed by lead band keys, for one signature.

    The same keys as `index_keys_matrix`, computed for both kinds of band in one pass
    (this is on every fingerprint's path; the matrix form's setup cost more than it).
    """
    rows = params.rows
    values = np.concatenate(
        [np.asarray(full)[: params.bands * rows], np.asarray(lead)[: params.lead_bands * rows]]
    )
    return _index_keys(values, params)


def _index_keys(band_values: np.ndarray, params: FingerprintParams) -> tuple[int, ...]:
    # band_values: the full-text band values then the lead band values, side by side.
    return tuple(_index_key_array(band_values, params).tolist())


def _index_key_array(band_values: np.ndarray, params: FingerprintParams) -> np.ndarray:
    # `_index_keys` of one row of band values (shape (width,)) or of many ((n, width)).
    rows = params.rows
    grouped = band_values.astype(np.uint64).reshape(*band_values.shape[:-1], -1, rows)
    acc = _band_seeds(params)
    for row in range(rows):
        acc = _mix64(acc ^ grouped[..., row])
    return (acc >> _ONE64).astype(np.int64)


def fingerprint(text: str, params: FingerprintParams = DEFAULT_PARAMS) -> Fingerprint:
    """Compute the exact hash, MinHash signatures and LSH band keys of a normalized text."""
    codes = _word_bytes(text)
    values, num_perm, full_count, lead_count = _signature_values(codes, params)
    header = _HEADER.pack(min(full_count, 0xFFFF), min(lead_count, 0xFFFF))
    band_keys: tuple[int, ...] = ()
    if full_count:
        rows = params.rows
        band_width = params.bands * rows
        if band_width == num_perm:  # the lead's band values follow directly
            band_keys = _index_keys(values[: band_width + params.lead_bands * rows], params)
        else:
            band_keys = index_keys(values[:num_perm], values[num_perm:], params)
    return Fingerprint(
        text_hash=hashlib.sha256(codes[:-1].tobytes()).hexdigest(),
        # The same bytes as pack_signature: astype keeps the low 16 bits.
        signature=header + values.astype("<u2").tobytes(),
        band_keys=band_keys,
        shingle_count=full_count,
    )


# `fingerprint_many` hashes and permutes texts in groups of about this many bytes (~5,000
# shingles). On BBC articles in batches of 200, per text: 8 KB groups ~68 us, 16 KB ~55,
# 32 to 64 KB 41-44 (noise); the smallest of those keeps the permuted matrix at ~1.4 MB.
_GROUP_BYTES = 32768


def fingerprint_many(
    texts: Sequence[str], params: FingerprintParams = DEFAULT_PARAMS
) -> list[Fingerprint]:
    """`[fingerprint(text, params) for text in texts]`: the same values, in fewer steps.

    For batches (the pipeline fingerprints a poll's entries together): `fingerprint`
    makes some forty small numpy calls per text, whose fixed cost is about half its
    time. Here the texts' bytes are laid end to end and each step runs once per group
    of texts (`_GROUP_BYTES`) or once per batch. Only each text's hash and its shingle
    counts (a sort each; sorting a group's texts as padded rows was no faster) are still
    computed text by text.
    """
    if not texts:
        return []
    if params.lead_words < params.shingle_size:
        # Leads shorter than a shingle take the other branch of `_signature_values`.
        return [fingerprint(text, params) for text in texts]
    spaced = [_spaced_bytes(text) for text in texts]
    raw = np.frombuffer(b"".join(spaced), dtype=np.uint8)
    keep = _kept_bytes(raw)
    codes = raw[keep]  # every text's `_word_bytes`, one after another
    # Each text's bytes end with a space, so the collapse never joins two texts.
    raw_starts = np.cumsum([0] + [len(data) for data in spaced[:-1]])
    bounds = [0, *np.cumsum(np.add.reduceat(keep, raw_starts, dtype=np.intp)).tolist()]
    spaces = (codes == _SPACE).nonzero()[0]  # the space after each word
    word_starts = np.searchsorted(spaces, bounds).tolist()  # each text's first word

    n = len(texts)
    values = np.empty((n, params.num_perm + params.lead_perm), dtype=np.uint32)
    counts = np.empty((n, 2), dtype=np.intp)  # full-text and lead shingle counts
    for i in np.flatnonzero(np.diff(word_starts) < params.shingle_size).tolist():
        # A text shorter than a shingle (rare) is one shingle of its words, or none.
        row, _, full_count, lead_count = _signature_values(codes[bounds[i] : bounds[i + 1]], params)
        values[i], counts[i] = row, (full_count, lead_count)
    first = 0
    for last in range(1, n + 1):
        if last == n or bounds[last] - bounds[first] >= _GROUP_BYTES:
            group = slice(first, last)
            _group_signatures(
                codes[bounds[first] : bounds[last]],
                spaces[word_starts[first] : word_starts[last]] - bounds[first],
                np.diff(word_starts[first : last + 1]),
                params,
                values[group],
                counts[group],
            )
            first = last

    # Band keys, signatures and text hashes as `fingerprint` makes them, from whole arrays.
    rows = params.rows
    band_values = np.concatenate(
        [
            values[:, : params.bands * rows],
            values[:, params.num_perm : params.num_perm + params.lead_bands * rows],
        ],
        axis=1,
    )
    keys = _index_key_array(band_values, params).tolist()
    signatures = values.astype("<u2").tobytes()
    size = 2 * values.shape[1]
    text_bytes = memoryview(codes.tobytes())
    fingerprints = []
    for i, (full_count, lead_count) in enumerate(counts.tolist()):
        start, end = bounds[i], bounds[i + 1]
        header = _HEADER.pack(min(full_count, 0xFFFF), min(lead_count, 0xFFFF))
        fingerprints.append(
            Fingerprint(
                # Without the last space, as `fingerprint` hashes `codes[:-1]`.
                text_hash=hashlib.sha256(text_bytes[start : max(start, end - 1)]).hexdigest(),
                signature=header + signatures[i * size : (i + 1) * size],
                band_keys=tuple(keys[i]) if full_count else (),
                shingle_count=full_count,
            )
        )
    return fingerprints


def _group_signatures(
    codes: np.ndarray,
    spaces: np.ndarray,
    n_words: np.ndarray,
    params: FingerprintParams,
    values: np.ndarray,
    counts: np.ndarray,
) -> None:
    # `_signature_values` of texts laid end to end in `codes` (`spaces`: the space after
    # each word; `n_words`: each text's word count), written into the rows of `values`
    # and `counts` of the texts that have at least a shingle's words.
    size, num_perm, lead_perm = params.shingle_size, params.num_perm, params.lead_perm
    grams = _shingle_hashes_many(codes, spaces, n_words, size)
    if len(grams) == 0:
        return
    shingled = n_words >= size
    n_grams = n_words[shingled] - size + 1
    ends = np.cumsum(n_grams)
    starts = ends - n_grams
    matrix = _permuted_t(grams, num_perm, params)
    values[shingled, :num_perm] = np.minimum.reduceat(matrix, starts, axis=1).T
    # A lead's shingles are its text's first ones (a lead of at least `size` words).
    n_lead = np.minimum(n_words[shingled], params.lead_words) - size + 1
    lead_starts = np.cumsum(n_lead) - n_lead
    lead_columns = np.repeat(starts - lead_starts, n_lead) + np.arange(n_lead.sum())
    lead = np.minimum.reduceat(matrix[:lead_perm, lead_columns], lead_starts, axis=1)
    values[shingled, num_perm:] = lead.T
    text_counts = []
    for start, end, lead_end in zip(
        starts.tolist(), ends.tolist(), (starts + n_lead).tolist(), strict=True
    ):
        full_count = _distinct(grams[start:end])
        lead_count = full_count if lead_end == end else _distinct(grams[start:lead_end])
        text_counts.append((full_count, lead_count))
    counts[shingled] = text_counts


def _shingle_hashes_many(
    codes: np.ndarray, ends: np.ndarray, n_words: np.ndarray, size: int
) -> np.ndarray:
    # `_shingle_hashes` of texts laid end to end (`ends`: the space after each word;
    # `n_words`: each text's word count), one text's after another's, for the texts of at
    # least `size` words. A shingle's hash does not depend on where it stands (the inverse
    # power of its start takes its position out), so one prefix sum serves all the texts.
    count = len(ends) - size + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    sums = _run_sums(codes, ends, size)
    # Keep the shingles whose first and last words are in one text.
    text_of = np.repeat(np.arange(len(n_words)), n_words)
    return _mix64_in_place(sums[text_of[:count] == text_of[size - 1 :]])


def _agreement(equal: int, total: int) -> float:
    # The Jaccard estimate from `equal` of `total` minima agreeing. b-bit minwise
    # hashing: unequal values still agree by chance with p = 2**-16.
    if total == 0:
        return 0.0
    chance = 1.0 / 65536
    return max(0.0, (equal / total - chance) / (1.0 - chance))


def containment_from_jaccard(jaccard: float, size_a: int, size_b: int) -> float:
    """|A ∩ B| / min(|A|, |B|) implied by a Jaccard estimate and the two set sizes."""
    smaller = min(size_a, size_b)
    if smaller <= 0:
        return 0.0
    shared = jaccard * (size_a + size_b) / (1.0 + jaccard)
    return min(1.0, shared / smaller)


def similarity(a: bytes, b: bytes, params: FingerprintParams = DEFAULT_PARAMS) -> Similarity:
    """Estimate how much of one text the other contains, from signatures alone.

    `score` = max(containment, lead Jaccard) as `decision_score` combines them (see the
    module docstring for why).
    Signatures of another layout compare as unrelated.
    """
    return similarities(a, [b], params)[0]


def similarities(
    signature: bytes, others: Sequence[bytes], params: FingerprintParams = DEFAULT_PARAMS
) -> list[Similarity]:
    """`similarity(signature, other)` for each of `others`, comparing them all at once."""
    return [Similarity(*parts) for parts in _compared(signature, others, params)]


def similarity_scores(
    signature: bytes, others: Sequence[bytes], params: FingerprintParams = DEFAULT_PARAMS
) -> list[float]:
    """The `score` of each of `similarities(signature, others)`: all that ranking needs."""
    return [parts[3] for parts in _compared(signature, others, params)]


def _compared(
    signature: bytes, others: Sequence[bytes], params: FingerprintParams
) -> list[tuple[float, float, float, float]]:
    # (jaccard, containment, lead, score) per candidate. A look-up verifies a handful of
    # candidates (~15 in a 1,000 x 50 poll): one numpy comparison finds the agreeing
    # minima of all of them, and the few floats per candidate are then plain Python,
    # where numpy's fixed cost per call was most of the time (three candidates: 31 ->
    # 16 us). `_agreement`, `containment_from_jaccard` and `decision_score` are inlined,
    # the same operations in the same order: the calls were half of the loop's time.
    size = params.signature_size
    if not others or len(signature) != size:
        return [(0.0, 0.0, 0.0, 0.0)] * len(others)
    data = b"".join(sig if len(sig) == size else bytes(size) for sig in others)
    # A signature is all little-endian uint16: the two header counts, then the values.
    matrix = np.frombuffer(data, dtype="<u2").reshape(len(others), size // 2)
    equal = matrix[:, 2:] == np.frombuffer(signature, dtype="<u2")[2:]
    n, m = params.num_perm, params.lead_perm
    count_a, lead_a = _HEADER.unpack_from(signature)
    chance = 1.0 / 65536
    spread = 1.0 - chance
    floor, lead_floor = params.jaccard_floor, params.lead_floor
    summary, lead_containment = params.summary_shingles, params.lead_containment
    out: list[tuple[float, float, float, float]] = []
    for sig, full_equal, lead_equal, (count_b, lead_b) in zip(
        others,
        equal[:, :n].sum(axis=1).tolist(),
        equal[:, n:].sum(axis=1).tolist(),
        matrix[:, :2].tolist(),
        strict=True,
    ):
        if len(sig) != size:
            out.append((0.0, 0.0, 0.0, 0.0))
            continue
        jaccard = max(0.0, (full_equal / n - chance) / spread) if n else 0.0
        smaller = min(count_a, count_b)
        containment = (
            min(1.0, jaccard * (count_a + count_b) / (1.0 + jaccard) / smaller)
            if smaller > 0
            else 0.0
        )
        lead = max(0.0, (lead_equal / m - chance) / spread) if lead_a and lead_b and m else 0.0
        trusted = containment if jaccard >= floor else jaccard
        lead_counts = lead >= lead_floor and (smaller <= summary or containment >= lead_containment)
        out.append((jaccard, containment, lead, max(trusted, lead if lead_counts else 0.0)))
    return out


def decision_score(
    jaccard: float, containment: float, lead: float, smaller: float, params: FingerprintParams
) -> float:
    """The score a threshold compares.

    The containment, trusted only from `jaccard_floor` (below it the Jaccard itself); or
    the lead's Jaccard, from `lead_floor`, where the shorter text (`smaller` shingles) is
    a summary or the containment backs the lead (`summary_shingles`, `lead_containment`).
    """
    trusted = containment if jaccard >= params.jaccard_floor else jaccard
    lead_counts = lead >= params.lead_floor and (
        smaller <= params.summary_shingles or containment >= params.lead_containment
    )
    return max(trusted, lead if lead_counts else 0.0)


@dataclass(frozen=True, slots=True)
class ShingleProfile:
    """The distinct shingle hashes of a text and of its lead, for exact comparisons.

    Sorted unique 64-bit values of `shingle_hashes`: the same sets as `shingles`, up to
    a hash collision (about 400^2 / 2^65 for an article), at a tenth of the cost of
    building sets of byte strings.
    """

    full: np.ndarray
    lead: np.ndarray


def shingle_profile(text: str, params: FingerprintParams = DEFAULT_PARAMS) -> ShingleProfile:
    """Exact shingle sets of `text` (computed once, compared with many candidates)."""
    hashes, n_words = _shingle_hashes(_word_bytes(text), params.shingle_size)
    # A shingle's hash does not depend on where it stands: the lead's are the first ones.
    lead = hashes[: max(1, min(n_words, params.lead_words) - params.shingle_size + 1)]
    full = sorted_distinct(hashes)
    return ShingleProfile(full, full if len(lead) == len(hashes) else sorted_distinct(lead))


def sorted_distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, ascending: what `np.unique` returns.

    numpy 2's `np.unique` hashes the values first: ~24 us for an article's ~450 shingle
    hashes, against ~3 us for a sort and a comparison with the neighbour. Exact
    verification builds two such sets per text, ~11,000 texts in a 1,000 x 50 poll.
    """
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


# Profiles kept for verification (~7 KB each with their text). An original is verified
# against each of its copies, and a verified copy is often the candidate of a later one:
# a 1,000 x 50 poll (benchmarks/ingest.py) computed 14,400 profiles with 256 kept and
# the copies' own profiles not kept, 11,300 with both (9,600 with 4,096 kept).
PROFILE_CACHE_SIZE = 2048


@lru_cache(maxsize=PROFILE_CACHE_SIZE)
def _cached_profile(text: str, params: FingerprintParams) -> ShingleProfile:
    return shingle_profile(text, params)


def exact_similarity(a: str, b: str, params: FingerprintParams = DEFAULT_PARAMS) -> Similarity:
    """The similarity `similarity` estimates, computed exactly from two texts' shingles.

    Same rule as the estimate (`decision_score`), so it is the ground truth the
    estimate approximates.
    """
    return compare_profiles(shingle_profile(a, params), shingle_profile(b, params), params)


def compare_profiles(
    pa: ShingleProfile, pb: ShingleProfile, params: FingerprintParams = DEFAULT_PARAMS
) -> Similarity:
    """`exact_similarity` of two precomputed profiles."""
    fa, fb = pa.full, pb.full
    shared = len(np.intersect1d(fa, fb, assume_unique=True))
    union = len(fa) + len(fb) - shared
    jaccard = shared / union if union else 0.0
    smaller = min(len(fa), len(fb))
    containment = shared / smaller if smaller else 0.0
    la, lb = pa.lead, pb.lead
    lead_shared = len(np.intersect1d(la, lb, assume_unique=True))
    lead_union = len(la) + len(lb) - lead_shared
    lead = lead_shared / lead_union if len(la) and len(lb) and lead_union else 0.0
    return Similarity(
        jaccard,
        containment,
        lead,
        decision_score(jaccard, containment, lead, smaller, params),
    )


# An estimate this close to the threshold is checked against the exact shingle sets:
# MinHash with 64 values has a standard error of ~0.06 on Jaccard (more on containment
# of lopsided pairs), so near the threshold the estimate alone would flip a coin.
VERIFY_MARGIN = 0.15
# At most this many borderline candidates are verified per look-up.
MAX_VERIFIED = 8


def best_match(
    signature: bytes,
    candidates: Iterable[tuple[int, bytes]],
    threshold: float,
    params: FingerprintParams = DEFAULT_PARAMS,
    *,
    text: str | None = None,
    texts_of: Callable[[list[int]], dict[int, str]] | None = None,
) -> tuple[int, float] | None:
    """The candidate most similar to `signature` with a score at or above `threshold`.

    Given the query's `text` and a way to load candidates' texts, estimates within
    VERIFY_MARGIN of the threshold are replaced by the exact similarity, so decisions
    near the threshold are exact; far from it the estimate decides alone.
    """
    pairs = list(candidates)
    scores = similarity_scores(signature, [sig for _, sig in pairs], params)
    scored = sorted(zip(scores, [cid for cid, _ in pairs], strict=True), reverse=True)
    verify = text is not None and texts_of is not None
    if not scored:
        return None
    top_score, top_id = scored[0]
    if not verify or top_score >= threshold + VERIFY_MARGIN:
        return (top_id, top_score) if top_score >= threshold else None
    borderline = [cid for score, cid in scored if score > threshold - VERIFY_MARGIN]
    if not borderline:
        return None
    assert text is not None and texts_of is not None
    texts = texts_of(borderline[:MAX_VERIFIED])
    query = _cached_profile(text, params)
    exact = sorted(
        (
            (compare_profiles(query, _cached_profile(texts[cid], params), params).score, cid)
            for cid in texts
        ),
        reverse=True,
    )
    if exact and exact[0][0] >= threshold:
        return exact[0][1], exact[0][0]
    return None
