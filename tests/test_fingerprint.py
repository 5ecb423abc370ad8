"""Fingerprints: determinism, key ranges, and the similarity cases dedup relies on."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tasks.fingerprint import (
    DEFAULT_PARAMS,
    FingerprintParams,
    ShingleProfile,
    Similarity,
    _agreement,
    _permutations,
    _word_bytes,
    band_keys_matrix,
    best_match,
    containment_from_jaccard,
    decision_score,
    exact_similarity,
    fingerprint,
    fingerprint_many,
    index_keys,
    index_keys_matrix,
    pack_signature,
    permuted,
    permuted_min,
    shingle_hashes,
    shingles,
    signatures,
    similarities,
    similarity,
    similarity_scores,
    sorted_distinct,
    text_hash,
    words,
)
from tasks.models import RawEntry
from tasks.normalize import normalize_entry

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
INT64_MAX = 2**63 - 1
THRESHOLD = 0.5  # worker.settings default; repeated so a change there is deliberate here

texts = st.lists(
    st.text(alphabet="abcdefghij", min_size=1, max_size=6), min_size=1, max_size=120
).map(" ".join)

STORY = (
    "Washington and Seoul resumed negotiations on Tuesday over the cost-sharing agreement "
    "that decides how much South Korea pays toward the 28,500 US troops stationed on the "
    "peninsula. The talks in Honolulu are the first since the two allies failed to agree "
    "last year, officials said, adding that the gap between the two sides remained wide. "
    "A spokesman for the foreign ministry in Seoul said the delegation would press for a "
    "multi-year deal, while American negotiators were expected to seek a sharp increase. "
    "Analysts said the outcome could shape the alliance for years, as both governments face "
    "domestic pressure over defence spending and the future of the troop presence. "
    "The next round is scheduled for next month in Seoul, according to the ministry."
)
OTHER = (
    "The central bank left interest rates unchanged on Thursday, citing slowing inflation "
    "and a weaker labour market, and signalled that cuts could follow later in the year "
    "if price pressures continue to ease. Markets rallied after the decision, with the main "
    "index closing at a record high, while the currency slipped against the dollar. "
    "Economists were divided over the timing of the first cut, with some pointing to "
    "stubborn services inflation and others to falling energy costs over the winter."
)


def _edit(text: str, rate: float, seed: int) -> str:
    rng = random.Random(seed)
    out = [("changed" if rng.random() < rate else w) for w in text.split(" ")]
    return " ".join(out)


@given(texts)
@settings(max_examples=60, deadline=None)
def test_identical_texts_score_one(text: str) -> None:
    a, b = fingerprint(text), fingerprint(text)
    assert a == b
    sim = similarity(a.signature, b.signature)
    assert sim.jaccard == 1.0 and sim.score == 1.0


@given(texts)
@settings(max_examples=60, deadline=None)
def test_band_keys_fit_a_signed_bigint(text: str) -> None:
    fp = fingerprint(text)
    assert len(fp.band_keys) == DEFAULT_PARAMS.bands + DEFAULT_PARAMS.lead_bands
    assert all(0 <= key <= INT64_MAX for key in fp.band_keys)
    assert len(fp.signature) == DEFAULT_PARAMS.signature_size


@given(texts, texts)
@settings(max_examples=60, deadline=None)
def test_similarity_is_symmetric_and_bounded(a: str, b: str) -> None:
    sa, sb = fingerprint(a).signature, fingerprint(b).signature
    ab, ba = similarity(sa, sb), similarity(sb, sa)
    assert ab == ba
    for value in (ab.jaccard, ab.containment, ab.lead, ab.score):
        assert 0.0 <= value <= 1.0


def test_case_and_punctuation_do_not_change_the_fingerprint() -> None:
    assert fingerprint(STORY) == fingerprint(STORY.upper().replace(",", " ;"))


def test_empty_text_has_no_band_keys() -> None:
    fp = fingerprint("")
    assert fp.shingle_count == 0 and fp.band_keys == ()


def test_fingerprint_is_the_same_in_another_process() -> None:
    # Workers on several machines must agree on keys: no per-process hash seeds.
    code = (
        "import sys; from tasks.fingerprint import fingerprint; "
        "fp = fingerprint(sys.stdin.read()); print(fp.signature.hex(), *fp.band_keys)"
    )
    root = Path(__file__).resolve().parent.parent
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            input=STORY,
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
        ).stdout.split()
        for seed in (1, 2)
    ]
    here = fingerprint(STORY)
    assert runs[0] == runs[1] == [here.signature.hex(), *map(str, here.band_keys)]


def test_band_keys_differ_between_bands_with_equal_values() -> None:
    values = [[7, 7] * 4]
    keys = band_keys_matrix(np.array(values, dtype="uint32"), bands=4)
    assert len(set(keys[0].tolist())) == 4


def test_containment_from_jaccard() -> None:
    # B = A plus as many new shingles: J = 0.5, and all of A is in B.
    assert containment_from_jaccard(0.5, 100, 200) == 1.0
    assert containment_from_jaccard(0.0, 100, 200) == 0.0
    assert containment_from_jaccard(0.5, 0, 10) == 0.0


def test_a_lightly_edited_copy_with_boilerplate_is_a_near_duplicate() -> None:
    copy = "Read more on our website. " + _edit(STORY, 0.08, seed=3) + " Share this article."
    sim = similarity(fingerprint(STORY).signature, fingerprint(copy).signature)
    assert sim.score >= THRESHOLD
    assert set(fingerprint(STORY).band_keys) & set(fingerprint(copy).band_keys)


def test_a_summary_matches_its_story_through_the_lead() -> None:
    summary = " ".join(STORY.split(". ")[:2]) + "."
    assert 30 <= len(words(summary)) <= 80
    a, b = fingerprint(STORY), fingerprint(summary)
    sim = similarity(a.signature, b.signature)
    assert sim.jaccard < 0.5 and sim.lead >= THRESHOLD and sim.score >= THRESHOLD
    assert exact_similarity(STORY, summary).score >= THRESHOLD
    assert set(a.band_keys) & set(b.band_keys)


# A standing opening, as a press-release wire or a newsletter feed puts before each item.
OPENING = (
    "FOR IMMEDIATE RELEASE. This statement is issued by the press office of the regional "
    "development agency, which publishes news on investment, infrastructure, jobs and "
    "public services across the region every working day. Journalists may reproduce it "
    "freely; contact the press office for interviews, images and further information."
)


def test_different_stories_behind_one_opening_are_not_linked_by_their_lead() -> None:
    a, b = f"{OPENING} {STORY}", f"{OPENING} {OTHER}"
    sim = similarity(fingerprint(a).signature, fingerprint(b).signature)
    assert sim.lead >= THRESHOLD  # the leads alone look like one story
    assert sim.score < THRESHOLD
    assert exact_similarity(a, b).score < THRESHOLD
    # A copy of one of them still is one.
    copy = _edit(a, 0.05, seed=5) + " Share this article."
    assert similarity(fingerprint(a).signature, fingerprint(copy).signature).score >= THRESHOLD


def test_summaries_of_different_stories_are_not_linked() -> None:
    s1 = " ".join(STORY.split(". ")[:2])
    s2 = " ".join(OTHER.split(". ")[:2])
    assert similarity(fingerprint(s1).signature, fingerprint(s2).signature).score < 0.1


def test_different_stories_and_a_retelling_are_not_near_duplicates() -> None:
    retold = (
        "South Korean and American officials met in Honolulu this week to restart talks on "
        "how the cost of keeping 28,500 US soldiers in Korea is divided, after last year's "
        "round ended without a deal. Seoul wants an agreement covering several years."
    )
    story = fingerprint(STORY).signature
    assert similarity(story, fingerprint(OTHER).signature).score < 0.1
    assert similarity(story, fingerprint(retold).signature).score < THRESHOLD


def test_best_match_picks_the_most_similar_candidate_over_threshold() -> None:
    story = fingerprint(STORY).signature
    near = fingerprint(_edit(STORY, 0.02, seed=1)).signature
    far = fingerprint(_edit(STORY, 0.3, seed=1)).signature
    other = fingerprint(OTHER).signature
    match = best_match(story, [(1, other), (2, far), (3, near)], THRESHOLD)
    assert match is not None and match[0] == 3
    assert best_match(story, [(1, other)], THRESHOLD) is None


def test_signatures_of_another_layout_compare_as_unrelated() -> None:
    sig = fingerprint(STORY).signature
    assert similarity(sig, sig[:-2]).score == 0.0


def test_only_the_syndicated_seed_pair_is_linked() -> None:
    sigs = {}
    for path in sorted(SEEDS.glob("0*.txt")):
        raw = RawEntry(
            guid=path.name, url=None, title=None, content=path.read_text(), content_type="text"
        )
        article = normalize_entry(raw)
        sigs[path.name[:3]] = fingerprint(article.text or article.title).signature
    linked = {
        (a, b)
        for a in sigs
        for b in sigs
        if a < b and similarity(sigs[a], sigs[b]).score >= THRESHOLD
    }
    assert linked == {("001", "002")}


# The fast path must mean what the plain definitions say: the words of `words`, the
# shingle sets of `shingles`, and datasketch's MinHash over the shingle hashes.


def _datasketch(hashes: np.ndarray, num_perm: int) -> np.ndarray:
    # A shingle's MinHash input is the high 32 bits of its 64-bit hash.
    perms = MinHash(num_perm=DEFAULT_PARAMS.num_perm, seed=DEFAULT_PARAMS.seed, scheme="affine32")
    a, b = perms.permutations
    m = MinHash(
        num_perm=num_perm,
        seed=DEFAULT_PARAMS.seed,
        hashfunc=lambda h: h >> 32,
        permutations=(a[:num_perm], b[:num_perm]),
        scheme="affine32",
    )
    m.update_batch([int(h) for h in hashes])
    return np.asarray(m.hashvalues, dtype=np.uint32)


@given(st.one_of(st.text(), st.text(alphabet=st.sampled_from("aZ £é–“”ß_ ΣσςΟΔ\u0130,."))))
@settings(max_examples=300, deadline=None)
@example("Ünïcödé – £5m, “quoted” naïve_CAFÉ \u0130stanbul \u212aelvin x\u00a0y\u2028z")
@example("Lowercase only: £5m, naïve café, “quoted” – Straße")
@example("ΟΔΟΣ ΟΔΟΣ. Σ σ ς")
@example("lone \ud800 surrogate \udfff\tTAB\x0bVT\x1cFS 12_3")
@example("")
@example("  ,;  ")
def test_word_bytes_are_the_joined_words(text: str) -> None:
    tokens = words(text)
    expected = (" ".join(tokens) + " ").encode() if tokens else b""
    assert _word_bytes(text).tobytes() == expected
    assert fingerprint(text).text_hash == text_hash(text)


@given(texts)
@settings(max_examples=60, deadline=None)
@example("one")
@example("one two")
@example(STORY)
def test_signatures_are_datasketch_minhash_of_the_shingle_hashes(text: str) -> None:
    p = DEFAULT_PARAMS
    tokens = words(text)
    full_hashes = shingle_hashes(tokens, p.shingle_size)
    lead_hashes = shingle_hashes(tokens[: p.lead_words], p.shingle_size)
    sigs = signatures(text)
    assert np.array_equal(sigs.full, _datasketch(full_hashes, p.num_perm))
    assert np.array_equal(sigs.lead, _datasketch(lead_hashes, p.lead_perm))
    # One hash per distinct shingle (a collision of 64-bit hashes is not expected here).
    assert sigs.full_count == len(shingles(tokens, p.shingle_size)) == len(set(full_hashes))
    assert sigs.lead_count == len(shingles(tokens[: p.lead_words], p.shingle_size))
    fp = fingerprint(text)
    assert fp.signature == pack_signature(sigs.full, sigs.lead, sigs.full_count, sigs.lead_count)
    assert fp.band_keys == (index_keys(sigs.full, sigs.lead) if tokens else ())


@pytest.mark.parametrize(("seed", "num_perm"), [(1, 64), (1, 128), (2, 64), (12345, 16)])
def test_permutations_are_datasketchs(seed: int, num_perm: int) -> None:
    """The permutations drawn without datasketch are its "affine32" ones."""
    a, b = _permutations(FingerprintParams(seed=seed, num_perm=num_perm))
    da, db = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    assert a.dtype == da.dtype == np.uint32 and b.dtype == db.dtype == np.uint32
    assert np.array_equal(a, da) and np.array_equal(b, db)


def test_permuted_min_is_datasketch_minhash() -> None:
    rng = np.random.default_rng(7)
    hashes = rng.integers(0, 2**64, size=500, dtype=np.uint64)
    assert np.array_equal(permuted_min(hashes, 64), _datasketch(hashes, 64))
    assert np.array_equal(permuted_min(hashes[:9], 32), _datasketch(hashes[:9], 32))
    assert np.array_equal(permuted(hashes, 64).min(axis=0), permuted_min(hashes, 64))
    assert np.array_equal(permuted_min(hashes[:0], 64), _datasketch(hashes[:0], 64))


def test_a_shingle_hashes_the_same_wherever_it_stands() -> None:
    tokens = words("the cat sat on the mat while the cat sat still")
    hashes = shingle_hashes(tokens, 3).tolist()
    assert len(hashes) == len(tokens) - 2
    assert hashes[0] == hashes[7]  # "the cat sat"
    assert len(set(hashes)) == len(shingles(tokens, 3))
    assert shingle_hashes(tokens[:2], 3).tolist() != shingle_hashes(tokens[:1], 3).tolist()


def test_index_keys_equal_the_matrix_form() -> None:
    rng = np.random.default_rng(3)
    full = rng.integers(0, 2**32, size=(5, DEFAULT_PARAMS.num_perm), dtype=np.uint64)
    lead = rng.integers(0, 2**32, size=(5, DEFAULT_PARAMS.lead_perm), dtype=np.uint64)
    matrix = index_keys_matrix(full.astype(np.uint32), lead.astype(np.uint32))
    for i in range(5):
        assert index_keys(full[i].astype(np.uint32), lead[i].astype(np.uint32)) == tuple(
            matrix[i].tolist()
        )


def test_borderline_estimates_are_settled_on_exact_shingles() -> None:
    from tasks.fingerprint import VERIFY_MARGIN, best_match

    base = " ".join(f"word{i} filler{i % 7} item{i % 11}" for i in range(120))
    tokens = base.split()
    close = " ".join(tokens[:200] + [f"new{i}" for i in range(160)])
    far = " ".join(f"other{i} text{i}" for i in range(200))
    query = fingerprint(base)
    candidates = [(1, fingerprint(close).signature), (2, fingerprint(far).signature)]
    texts = {1: close, 2: far}
    loaded: list[list[int]] = []

    def texts_of(ids: list[int]) -> dict[int, str]:
        loaded.append(ids)
        return {i: texts[i] for i in ids}

    exact = exact_similarity(base, close).score
    for threshold in (exact - VERIFY_MARGIN / 3, exact + VERIFY_MARGIN / 3):
        loaded.clear()
        result = best_match(query.signature, candidates, threshold, text=base, texts_of=texts_of)
        # Within the margin the exact similarity decides, whatever the estimate says.
        assert (result is not None) == (exact >= threshold)
        assert loaded and 2 not in loaded[0]


def test_a_verified_copy_is_not_profiled_again_as_a_later_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tasks.fingerprint as fingerprint_module

    profiled: list[str] = []
    real = fingerprint_module.shingle_profile

    def counting(text: str, params: FingerprintParams = DEFAULT_PARAMS) -> ShingleProfile:
        profiled.append(text)
        return real(text, params)

    monkeypatch.setattr(fingerprint_module, "shingle_profile", counting)
    fingerprint_module._cached_profile.cache_clear()
    original, copy, later = STORY, _edit(STORY, 0.3, 1), _edit(STORY, 0.3, 2)
    texts = {1: original, 2: copy}

    def settle(query: str, candidate: int) -> None:
        # A threshold at the estimate itself: within the margin, so verified exactly.
        signature = fingerprint(query).signature
        other = fingerprint(texts[candidate]).signature
        [estimate] = similarity_scores(signature, [other])
        best_match(
            signature,
            [(candidate, other)],
            estimate,
            text=query,
            texts_of=lambda ids: {i: texts[i] for i in ids},
        )

    settle(copy, 1)
    assert sorted(profiled) == sorted([copy, original])
    settle(later, 2)  # the copy, verified as a query, is now the stored candidate
    assert profiled[2:] == [later]


_texts = st.lists(
    st.sampled_from(
        [
            "troops",
            "cost",
            "sharing",
            "seoul",
            "tokyo",
            "drills",
            "navy",
            "talks",
            "budget",
            "the",
            "a",
            "of",
        ]
    ),
    min_size=0,
    max_size=60,
).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(
    query=_texts,
    others=st.lists(_texts, min_size=1, max_size=6),
    broken_at=st.none() | st.integers(min_value=0, max_value=6),
)
def test_similarities_of_many_candidates_equal_each_alone(
    query: str, others: list[str], broken_at: int | None
) -> None:
    sigs = [fingerprint(t).signature for t in others]
    if broken_at is not None:
        # Another layout, anywhere in the batch: unrelated, and its neighbours unaffected.
        sigs.insert(min(broken_at, len(sigs)), b"\x01\x02")
    signature = fingerprint(query).signature
    expected = [similarity(signature, s) for s in sigs]
    assert similarities(signature, sigs) == expected
    assert all(s == Similarity(0.0, 0.0, 0.0, 0.0) for s in similarities(b"\x01", sigs))
    assert similarity_scores(signature, sigs) == [s.score for s in expected]
    assert similarity_scores(b"\x01", sigs) == [0.0] * len(sigs)


_SIGNATURE_BYTES = st.binary(
    min_size=DEFAULT_PARAMS.signature_size, max_size=DEFAULT_PARAMS.signature_size
)


def _with_counts(signature: bytes, count: int | None, lead: int | None) -> bytes:
    """`signature` with the given shingle counts in its header (None: keep the random one)."""
    if count is not None:
        signature = count.to_bytes(2, "little") + signature[2:]
    if lead is not None:
        signature = signature[:2] + lead.to_bytes(2, "little") + signature[4:]
    return signature


# Empty texts and leads, one-shingle summaries, and both sides of `summary_shingles`.
_COUNTS = st.none() | st.sampled_from(
    [0, 1, 2, DEFAULT_PARAMS.summary_shingles, DEFAULT_PARAMS.summary_shingles + 1]
)


@settings(max_examples=300, deadline=None)
@given(
    query=_SIGNATURE_BYTES,
    others=st.lists(
        st.tuples(_SIGNATURE_BYTES, st.sets(st.integers(0, DEFAULT_PARAMS.signature_size - 1))),
        min_size=1,
        max_size=8,
    ),
    counts=st.lists(st.tuples(_COUNTS, _COUNTS), min_size=9, max_size=9),
)
def test_similarities_and_scores_equal_the_scalar_rule(
    query: bytes, others: list[tuple[bytes, set[int]]], counts: list[tuple[int | None, int | None]]
) -> None:
    """Any bytes of the layout: candidates that are the query but for a few bytes (high
    agreement) or random (none), with empty texts, empty leads and summaries."""
    query = _with_counts(query, *counts[0])
    sigs = [
        _with_counts(
            bytes(
                n if i in changed else q for i, (q, n) in enumerate(zip(query, noise, strict=True))
            ),
            *c,
        )
        for (noise, changed), c in zip(others, counts[1:], strict=False)
    ]
    expected = [_similarity_reference(query, sig) for sig in sigs]
    assert similarities(query, sigs) == expected
    assert similarity_scores(query, sigs) == [s.score for s in expected]


def _similarity_reference(a: bytes, b: bytes) -> Similarity:
    """`similarity` spelled out with the scalar functions it inlines, one pair at a time."""
    p = DEFAULT_PARAMS
    if len(b) != p.signature_size:
        return Similarity(0.0, 0.0, 0.0, 0.0)
    va, vb = np.frombuffer(a, "<u2"), np.frombuffer(b, "<u2")
    full = int((va[2 : 2 + p.num_perm] == vb[2 : 2 + p.num_perm]).sum())
    lead_equal = int((va[2 + p.num_perm :] == vb[2 + p.num_perm :]).sum())
    (count_a, lead_a), (count_b, lead_b) = va[:2].tolist(), vb[:2].tolist()
    jaccard = _agreement(full, p.num_perm)
    containment = containment_from_jaccard(jaccard, count_a, count_b)
    lead = _agreement(lead_equal, p.lead_perm) if lead_a and lead_b else 0.0
    score = decision_score(jaccard, containment, lead, min(count_a, count_b), p)
    return Similarity(jaccard, containment, lead, score)


@settings(max_examples=150, deadline=None)
@given(a=_texts, b=_texts)
def test_hashed_profiles_give_the_shingle_set_similarity(a: str, b: str) -> None:
    from tasks.fingerprint import exact_similarity

    p = DEFAULT_PARAMS
    sa, sb = shingles(words(a), p.shingle_size), shingles(words(b), p.shingle_size)
    shared = len(sa & sb)
    union = len(sa | sb)
    jaccard = shared / union if union else 0.0
    assert exact_similarity(a, b).jaccard == jaccard
    smaller = min(len(sa), len(sb))
    assert exact_similarity(a, b).containment == (shared / smaller if smaller else 0.0)


# `fingerprint_many` must be `fingerprint` text by text, whatever the batch holds: texts
# with no words, fewer words than a shingle or the lead, long ones, and any characters.
_any_text = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from("aZ £é–“”ß_ ΣσςΟΔ\u0130,.\n")),
    st.sampled_from(["", " ", "  ,;  ", "...", "one", "one two", "one two three"]),
    st.lists(st.sampled_from(["troops", "cost", "seoul", "the", "a", "Ünïcödé", "—", "5"])).map(
        " ".join
    ),
    st.integers(0, 600).map(lambda n: " ".join(f"w{i % 97}" for i in range(n))),
)


@given(st.lists(_any_text, max_size=40))
@settings(max_examples=200, deadline=None)
@example([])
@example([""])
@example(["", "one", "one two", " ,; ", "one two three"])
@example([STORY, "", OTHER, "two words"])
def test_fingerprint_many_equals_fingerprint_text_by_text(texts: list[str]) -> None:
    assert fingerprint_many(texts) == [fingerprint(text) for text in texts]


@given(
    st.lists(_any_text, max_size=12),
    st.sampled_from(
        [
            FingerprintParams(shingle_size=1, lead_words=5),
            FingerprintParams(shingle_size=5, lead_words=5),
            FingerprintParams(lead_words=2),  # every lead shorter than a shingle
            FingerprintParams(bands=20, lead_bands=10),  # rows of 3, 4 values in no band
        ]
    ),
)
@settings(max_examples=100, deadline=None)
def test_fingerprint_many_equals_fingerprint_with_other_params(
    texts: list[str], params: FingerprintParams
) -> None:
    assert fingerprint_many(texts, params) == [fingerprint(text, params) for text in texts]


def test_fingerprint_many_of_a_batch_of_articles() -> None:
    summary = " ".join(STORY.split(". ")[:2]) + "."
    opening = f"{OPENING} {STORY}"
    long_text = " ".join([STORY, OTHER] * 40)  # over 32 KB: a group of its own
    seeds = [path.read_text() for path in sorted(SEEDS.glob("0*.txt"))]
    batch = [STORY, summary, OTHER, opening, "", "Headline only", long_text, *seeds] * 3
    many = fingerprint_many(batch)
    assert many == [fingerprint(text) for text in batch]
    assert many[0] == many[len(batch) // 3]  # the same text anywhere in a batch


@pytest.mark.parametrize(
    "smaller", [DEFAULT_PARAMS.summary_shingles, DEFAULT_PARAMS.summary_shingles + 1]
)
def test_a_shared_lead_alone_decides_for_a_summary_only(smaller: int) -> None:
    """Same lead, different bodies: the lead's Jaccard is the score when the shorter text
    is a summary (at most `summary_shingles` shingles), and does not count otherwise."""
    p = DEFAULT_PARAMS
    query = fingerprint(" ".join(f"word{i}" for i in range(400))).signature
    values = np.frombuffer(query, "<u2").copy()
    values[2 : 2 + p.num_perm] ^= 0x5555  # every full-text minimum differs
    values[0] = smaller
    candidate = values.tobytes()
    [score] = similarity_scores(query, [candidate])
    assert [score] == [s.score for s in similarities(query, [candidate])]
    assert score == _similarity_reference(query, candidate).score
    if smaller <= p.summary_shingles:
        assert score > 0.99  # the lead, copied whole
    else:
        assert score == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=60), st.sampled_from([4, 2**64 - 1]))
def test_sorted_distinct_is_numpys_unique(values: list[int], top: int) -> None:
    # Few distinct values (repeats) and the whole uint64 range, empty and single included.
    array = np.array([v % (top + 1) if top < 2**64 - 1 else v for v in values], np.uint64)
    expected = np.unique(array)
    found = sorted_distinct(array)
    assert found.dtype == expected.dtype and found.tolist() == expected.tolist()
