"""Fingerprints of normalized article text, for exact and near-duplicate detection.

Pure: no database or network. A `Fingerprint` carries
- `text_hash`: SHA-256 of the folded text, for exact duplicates anywhere;
- `signature`: a MinHash signature over word shingles (datasketch, with a stable
  CRC32 shingle hash so every worker process computes the same values);
- `band_keys`: one 63-bit key per LSH band, which the shared index stores so that a
  look-up touches only articles sharing a band (sublinear, no scan).

Similarity is estimated from signatures truncated to 16 bits per value: 2 bytes per
permutation on disk, with a false-agreement rate of 1/65536 per value, corrected below.
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


@dataclass(frozen=True, slots=True)
class FingerprintParams:
    """Shingle size and LSH layout. Changing them invalidates a stored index."""

    shingle_size: int = 3
    num_perm: int = 64
    bands: int = 32
    seed: int = 1

    @property
    def rows(self) -> int:
        """Signature values per band."""
        return self.num_perm // self.bands


DEFAULT_PARAMS = FingerprintParams()


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What the dedup index needs to know about one article's text."""

    text_hash: str
    signature: bytes  # num_perm little-endian uint16 values
    band_keys: tuple[int, ...]
    shingle_count: int


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


def band_keys_of(hashvalues: np.ndarray, params: FingerprintParams) -> tuple[int, ...]:
    """One key per band: a 63-bit hash of (band number, the band's values)."""
    rows = params.rows
    raw = hashvalues.astype("<u4").tobytes()
    keys = []
    for band in range(params.bands):
        chunk = raw[band * rows * 4 : (band + 1) * rows * 4]
        digest = hashlib.blake2b(chunk, digest_size=8, person=struct.pack("<Q", band)).digest()
        keys.append(int.from_bytes(digest, "little") >> 1)  # fits a signed BIGINT
    return tuple(keys)


@lru_cache(maxsize=8)
def _permutations(params: FingerprintParams) -> tuple[np.ndarray, np.ndarray]:
    # datasketch draws its permutations from a seeded RNG on every MinHash(); drawing
    # them once per process makes a signature about seven times cheaper.
    template = MinHash(num_perm=params.num_perm, seed=params.seed, scheme=_SCHEME)
    a, b = template.permutations
    return a, b


def fingerprint(text: str, params: FingerprintParams = DEFAULT_PARAMS) -> Fingerprint:
    """Compute the exact hash, MinHash signature and LSH band keys of a normalized text."""
    tokens = words(text)
    grams = shingles(tokens, params.shingle_size)
    minhash = MinHash(
        num_perm=params.num_perm,
        seed=params.seed,
        hashfunc=_crc32,
        permutations=_permutations(params),
        scheme=_SCHEME,
    )
    if grams:
        minhash.update_batch(list(grams))
    values = minhash.hashvalues
    signature = (values & 0xFFFF).astype("<u2").tobytes()
    return Fingerprint(
        text_hash=hashlib.sha256(" ".join(tokens).encode()).hexdigest(),
        signature=signature,
        band_keys=band_keys_of(values, params),
        shingle_count=len(grams),
    )


def estimated_jaccard(a: bytes, b: bytes) -> float:
    """Jaccard similarity estimated from two truncated signatures of equal length."""
    va = np.frombuffer(a, dtype="<u2")
    vb = np.frombuffer(b, dtype="<u2")
    if len(va) == 0 or len(va) != len(vb):
        return 0.0
    agree = float(np.count_nonzero(va == vb)) / len(va)
    # b-bit minwise hashing: unequal values still agree by chance with p = 2**-16.
    chance = 1.0 / 65536
    return max(0.0, (agree - chance) / (1.0 - chance))


def best_match(
    signature: bytes, candidates: Iterable[tuple[int, bytes]], threshold: float
) -> tuple[int, float] | None:
    """The candidate id most similar to `signature` at or above `threshold`, if any."""
    best: tuple[int, float] | None = None
    for candidate_id, other in candidates:
        score = estimated_jaccard(signature, other)
        if score >= threshold and (best is None or score > best[1]):
            best = (candidate_id, score)
    return best
