"""Fingerprints of normalized article text, for exact and near-duplicate detection.

Pure: no database or network. A `Fingerprint` carries
- `text_hash`: SHA-256 of the word tokens, for exact duplicates anywhere;
- `signature`: MinHash signatures (datasketch, with a stable CRC32 shingle hash so every
  worker process computes the same values) of the whole text and of its lead (first
  `lead_words` words), plus both shingle counts;
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
  score.
- Bands of 2 rows: at 1M stored articles a query meets ~70 unrelated candidates (32 full
  bands), while a copy at Jaccard 0.25 is a candidate with p = 0.87 and one at 0.8 with
  p > 0.999999. Candidates are ranked by shared bands in SQL and verified here.

Signatures are stored truncated to 16 bits per value: 2 bytes per permutation, with a
false-agreement rate of 1/65536 per value, corrected in the estimate.
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from datasketch import MinHash

_WORD = re.compile(r"\w+")
_SCHEME = "affine32"
_HEADER = struct.Struct("<HH")  # shingle counts of the full text and of the lead
_U64 = np.uint64
# Per-band salts, so equal values in different bands (or in the lead) give other keys.
_FULL_SALT = 0x9E3779B97F4A7C15
_LEAD_SALT = 0xD1B54A32D192ED03


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


def _crc32(data: bytes) -> int:
    return zlib.crc32(data)


def _mix64(x: np.ndarray) -> np.ndarray:
    # splitmix64's finalizer: a bijection on 64-bit integers with good avalanche, so
    # distinct band values give distinct keys and keys spread evenly over the index.
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


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


def band_keys_of(hashvalues: np.ndarray, params: FingerprintParams) -> tuple[int, ...]:
    """The full-text band keys of one signature (uint32 values)."""
    keys = band_keys_matrix(np.asarray(hashvalues)[None, : params.num_perm], params.bands)
    return tuple(int(k) for k in keys[0])


@lru_cache(maxsize=8)
def _permutations(params: FingerprintParams) -> tuple[np.ndarray, np.ndarray]:
    # datasketch draws its permutations from a seeded RNG on every MinHash(); drawing
    # them once per process makes a signature about seven times cheaper.
    template = MinHash(num_perm=params.num_perm, seed=params.seed, scheme=_SCHEME)
    a, b = template.permutations
    return a, b


def _minhash(grams: Iterable[bytes], num_perm: int, params: FingerprintParams) -> np.ndarray:
    a, b = _permutations(params)
    minhash = MinHash(
        num_perm=num_perm,
        seed=params.seed,
        hashfunc=_crc32,
        permutations=(a[:num_perm], b[:num_perm]),
        scheme=_SCHEME,
    )
    batch = list(grams)
    if batch:
        minhash.update_batch(batch)
    return np.asarray(minhash.hashvalues, dtype=np.uint32)


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


def index_keys(
    full: np.ndarray, lead: np.ndarray, params: FingerprintParams = DEFAULT_PARAMS
) -> tuple[int, ...]:
    """Full-text band keys followed by lead band keys, for one signature."""
    keys = index_keys_matrix(np.asarray(full)[None, :], np.asarray(lead)[None, :], params)
    return tuple(int(k) for k in keys[0])


def fingerprint(text: str, params: FingerprintParams = DEFAULT_PARAMS) -> Fingerprint:
    """Compute the exact hash, MinHash signatures and LSH band keys of a normalized text."""
    tokens = words(text)
    grams = shingles(tokens, params.shingle_size)
    lead_grams = shingles(tokens[: params.lead_words], params.shingle_size)
    full = _minhash(grams, params.num_perm, params)
    lead = _minhash(lead_grams, params.lead_perm, params)
    return Fingerprint(
        text_hash=hashlib.sha256(" ".join(tokens).encode()).hexdigest(),
        signature=pack_signature(full, lead, len(grams), len(lead_grams)),
        band_keys=index_keys(full, lead, params) if grams else (),
        shingle_count=len(grams),
    )


def _unpack(sig: bytes, params: FingerprintParams) -> tuple[int, int, np.ndarray]:
    full_count, lead_count = _HEADER.unpack_from(sig)
    return full_count, lead_count, np.frombuffer(sig, dtype="<u2", offset=_HEADER.size)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0:
        return 0.0
    agree = float(np.count_nonzero(a == b)) / len(a)
    # b-bit minwise hashing: unequal values still agree by chance with p = 2**-16.
    chance = 1.0 / 65536
    return max(0.0, (agree - chance) / (1.0 - chance))


def containment_from_jaccard(jaccard: float, size_a: int, size_b: int) -> float:
    """|A ∩ B| / min(|A|, |B|) implied by a Jaccard estimate and the two set sizes."""
    smaller = min(size_a, size_b)
    if smaller <= 0:
        return 0.0
    shared = jaccard * (size_a + size_b) / (1.0 + jaccard)
    return min(1.0, shared / smaller)


def similarity(a: bytes, b: bytes, params: FingerprintParams = DEFAULT_PARAMS) -> Similarity:
    """Estimate how much of one text the other contains, from signatures alone.

    `score` = max(containment, lead Jaccard), where containment counts only when the
    Jaccard estimate reaches `jaccard_floor` and the lead only from `lead_floor` (see
    the module docstring for why).
    Signatures of another layout compare as unrelated.
    """
    size = params.signature_size
    if len(a) != size or len(b) != size:
        return Similarity(0.0, 0.0, 0.0, 0.0)
    count_a, lead_a, va = _unpack(a, params)
    count_b, lead_b, vb = _unpack(b, params)
    n = params.num_perm
    jaccard = _agreement(va[:n], vb[:n])
    containment = containment_from_jaccard(jaccard, count_a, count_b)
    lead = _agreement(va[n:], vb[n:]) if lead_a and lead_b else 0.0
    trusted = containment if jaccard >= params.jaccard_floor else jaccard
    lead_score = lead if lead >= params.lead_floor else 0.0
    return Similarity(jaccard, containment, lead, max(trusted, lead_score))


def estimated_jaccard(a: bytes, b: bytes, params: FingerprintParams = DEFAULT_PARAMS) -> float:
    """Jaccard similarity of the full texts, estimated from two stored signatures."""
    return similarity(a, b, params).jaccard


def best_match(
    signature: bytes,
    candidates: Iterable[tuple[int, bytes]],
    threshold: float,
    params: FingerprintParams = DEFAULT_PARAMS,
) -> tuple[int, float] | None:
    """The candidate id most similar to `signature` with a score at or above `threshold`."""
    best: tuple[int, float] | None = None
    for candidate_id, other in candidates:
        score = similarity(signature, other, params).score
        if score >= threshold and (best is None or score > best[1]):
            best = (candidate_id, score)
    return best
