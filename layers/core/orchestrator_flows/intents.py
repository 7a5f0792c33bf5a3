"""Intent from the caller's words: an offline classifier over the example utterances a flow file
gives per intent and locale. No model, no download, no network: character n-grams.

Each utterance becomes a vector of its character 2- to 4-grams (within words, with the word's
edges marked, after `escalation.words` folds case, accents and compatibility forms), weighted by
how rare each n-gram is among the locale's examples (smoothed IDF) and normalised. A message's
score for an intent is its best cosine similarity to one of the intent's examples (nearest
neighbour: a handful of examples per intent is enough, and one odd example cannot pull a whole
centroid). Character n-grams survive what callers and speech-to-text do to words: inflections
(`reembolso`/`reembolsar`), typos, missing accents, run-together words.

The classifier abstains — the turn answers `clarify` with the candidates — when the best score
is below the threshold, or when the runner-up is within the margin of it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator_flows.escalation import words

NGRAMS = (2, 3, 4)
MAX_CLASSIFIED = 2000  # characters of a message looked at: a request is said early
Vector = dict[str, float]


def _grams(text: str) -> Counter[str]:
    counted: Counter[str] = Counter()
    for word in words(text[:MAX_CLASSIFIED]).split():
        marked = f"<{word}>"
        for size in NGRAMS:
            counted.update(marked[i:i + size] for i in range(len(marked) - size + 1))
    return counted


def _norm(vector: Vector) -> Vector:
    length = math.sqrt(sum(weight * weight for weight in vector.values()))
    return {gram: weight / length for gram, weight in vector.items()} if length else {}


@dataclass(frozen=True)
class Scored:
    intent: str
    score: float


@dataclass(frozen=True)
class Verdict:
    """What the classifier made of a message: the intent (None: it abstains), its confidence
    (the best score, 0–1), and the intents it weighed, best first."""

    intent: str | None
    confidence: float
    candidates: tuple[Scored, ...]


@dataclass(frozen=True)
class _Locale:
    idf: Mapping[str, float]
    examples: Mapping[str, tuple[Vector, ...]]  # intent -> its examples' vectors

    def vector(self, text: str) -> Vector:
        idf = self.idf
        return _norm({gram: (1 + math.log(count)) * idf[gram]
                      for gram, count in _grams(text).items() if gram in idf})


@dataclass(frozen=True)
class IntentClassifier:
    """`examples`: locale -> intent -> utterances. Its vectors are built on first use, once
    per process (about 10 ms for the default flow's): a deployment whose callers always name
    their intent never pays it, not even at a cold start."""

    examples: Mapping[str, Mapping[str, Sequence[str]]]
    threshold: float = 0.35
    margin: float = 0.04
    _built: dict[str, _Locale] = field(default_factory=dict, init=False, repr=False,
                                       compare=False)

    @property
    def _locales(self) -> Mapping[str, _Locale]:
        if not self._built and self.examples:
            self._built.update(self._build())
        return self._built

    def _build(self) -> dict[str, _Locale]:
        built = {}
        for locale, by_intent in self.examples.items():
            counted = {intent: [_grams(text) for text in texts]
                       for intent, texts in by_intent.items()}
            documents = [grams for listed in counted.values() for grams in listed]
            seen: Counter[str] = Counter(gram for grams in documents for gram in grams)
            idf = {gram: math.log((1 + len(documents)) / (1 + df)) + 1
                   for gram, df in seen.items()}
            built[locale] = _Locale(idf, {
                intent: tuple(_norm({g: (1 + math.log(c)) * idf[g] for g, c in grams.items()})
                              for grams in listed)
                for intent, listed in counted.items()})
        return built

    @property
    def locales(self) -> frozenset[str]:
        return frozenset(self.examples)

    def knows(self, locale: str, intents: Collection[str]) -> bool:
        """Whether it has examples of any of `intents` in `locale`."""
        known = self._locales.get(locale)
        return known is not None and any(intent in known.examples for intent in intents)

    def classify(self, text: str, locale: str, allowed: Collection[str]) -> Verdict:
        """The intent among `allowed` that `text` is most like, in `locale`; or an abstention."""
        known = self._locales.get(locale)
        if known is None:
            return Verdict(None, 0.0, ())
        message = known.vector(text)
        scored = sorted(
            (Scored(intent, round(max(_cosine(message, example)
                                      for example in known.examples[intent]), 4))
             for intent in allowed if known.examples.get(intent)),
            key=lambda found: (-found.score, found.intent))
        if not scored:
            return Verdict(None, 0.0, ())
        best = scored[0]
        runner_up = scored[1].score if len(scored) > 1 else 0.0
        sure = best.score >= self.threshold and best.score - runner_up >= self.margin
        return Verdict(best.intent if sure else None, best.score, tuple(scored))


def _cosine(one: Vector, other: Vector) -> float:
    if len(one) > len(other):
        one, other = other, one
    return sum(weight * other.get(gram, 0.0) for gram, weight in one.items())
