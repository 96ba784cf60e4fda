"""Any prompt in the pocket world: text -> the attributes it states, over the words the world's captions use.

`parse_prompt(text)` reads a prompt's target attributes off its words; `resolve(text)` gives the catalogue entry
of a catalogue prompt and otherwise a `Prompt` built from the parse (kind by `kind_of`), so prompt accuracy,
attribute preservation and the ground-truth reference set work for every prompt the world can render.

The rule (docs/pocket.md, "Any prompt"): a prompt is accepted when every word is one of
  - an attribute word, with the synonyms `world.caption` uses: shape (circle, square, triangle, star), colour
    (red, green, blue, yellow, purple), pattern (plain/solid, striped, outlined/hollow), size (small/tiny,
    large/big);
  - a background phrase: a background colour (white, black, gray) directly before "background" or "backdrop",
    as in `world.BG_FORMS` ("on / against / with a gray backdrop", ", black background");
  - a filler (`FILLER_WORDS`, fixed: the caption words that state no attribute: articles, the prefixes "a
    picture / an image / a drawing / a photo / an illustration of", the style fillers of `world.FILLERS`, the
    background prepositions, "that is" and the generic nouns "shape" / "object"). Style-filler phrases are
    removed before the words are read, so "plain style" is style, not the plain pattern.
Punctuation is ignored. Every other word is refused, with the closest accepted word as a hint: pocket-SD's
text encoder and pocket-CLIP were trained on these captions only and keep zero embedding rows for every other
token (plural "circles", "the", "grey" among them), so they could not read such a prompt either. Position is
no prompt attribute (captions never state it; "centered" is a style filler). A prompt must state at least one
attribute and give each attribute one value.
"""
from __future__ import annotations

import difflib
import re

from . import world as W

# ---- the vocabulary, derived from the world's caption wording ----------------------------------------------
ATTR_WORDS: dict[str, tuple[str, str]] = {}          # word -> (attribute, value name)
for _s in W.SHAPES:
    ATTR_WORDS[_s] = ("shape", _s)
for _c in W.COLOURS:
    ATTR_WORDS[_c] = ("colour", _c)
for _i, _words in W.PATTERN_WORDS.items():
    for _w in _words:
        ATTR_WORDS[_w] = ("pattern", W.PATTERNS[_i])
for _i, _words in W.SIZE_WORDS.items():
    for _w in _words:
        ATTR_WORDS[_w] = ("size", W.SIZES[_i])

BG_NOUNS = sorted({form.split("{}")[1].split()[0] for form in W.BG_FORMS})          # background, backdrop
BG_PREPOSITIONS = sorted({w for form in W.BG_FORMS for w in form.split("{}")[0].replace(",", " ").split()
                          if w not in ("a", "an")})                              # against, on, with
GENERIC_NOUNS = ["shape", "object"]                  # what captions say when they omit the shape
STYLE_PHRASES = sorted(W.FILLERS, key=lambda f: -len(f.split()))               # longest first
FILLER_WORDS = sorted(({w for p in W.PREFIXES for w in p.split()}
                       | {w for f in W.FILLERS for w in f.split()}
                       | {"a", "an", "that", "is"} | set(BG_PREPOSITIONS) | set(GENERIC_NOUNS)) - set(ATTR_WORDS))
KNOWN_WORDS = sorted(set(ATTR_WORDS) | set(W.BACKGROUNDS) | set(BG_NOUNS) | set(FILLER_WORDS))

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


class PromptError(ValueError):
    """A prompt the pocket world cannot render; `words` are the offending words, the message says why."""

    def __init__(self, prompt: str, problems: list[str], words: list[str]):
        self.prompt, self.problems, self.words = prompt, problems, words
        super().__init__(f"{prompt!r}: " + "; ".join(problems))


def vocabulary_text() -> str:
    """One line: the accepted words grouped by attribute (what a refusal lists)."""
    def syn(attr: str, values: list[str]) -> str:
        return ", ".join(v + "".join(f"/{w}" for w, (a, x) in ATTR_WORDS.items() if a == attr and x == v and w != v)
                         for v in values)

    return (f"shape: {syn('shape', W.SHAPES)} (or no shape: {', '.join(GENERIC_NOUNS)}); "
            f"colour: {syn('colour', W.COLOURS)}; "
            f"background: {', '.join(W.BACKGROUNDS)}, written before {'/'.join(BG_NOUNS)} "
            f"(e.g. 'on a black background', 'against a gray backdrop'); "
            f"pattern: {syn('pattern', W.PATTERNS)}; size: {syn('size', W.SIZES)}; "
            f"ignored fillers: {', '.join(FILLER_WORDS)}; punctuation is ignored")


def _words(text: str) -> list[str]:
    """Lower-case words; style-filler phrases ("plain style", "simple flat illustration") are dropped first."""
    text = " " + " ".join(_WORD.findall(text.lower())) + " "
    for phrase in STYLE_PHRASES:
        text = text.replace(f" {phrase} ", " ")
    return text.split()


def _hint(word: str) -> str:
    close = difflib.get_close_matches(word, KNOWN_WORDS, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_prompt(text: str) -> dict[str, str]:
    """Prompt text -> {attribute: value name} for every attribute it states (in world.ATTRS order).

    Raises PromptError naming each word the world cannot render (see the module docstring for the rule).
    """
    words = _words(text)
    found: dict[str, dict[str, str]] = {}             # attribute -> value -> the word that said it
    problems: list[str] = []
    bad: list[str] = []
    skip = set()
    for i, w in enumerate(words):                     # background phrases: <background colour> <background noun>
        if w not in BG_NOUNS:
            continue
        prev = words[i - 1] if i > 0 else None
        if prev in W.BACKGROUNDS:
            found.setdefault("background", {}).setdefault(prev, f"{prev} {w}")
            skip.update((i - 1, i))
        elif prev in ATTR_WORDS and ATTR_WORDS[prev][0] == "colour":     # "a red background"
            problems.append(f"{prev!r} is an object colour, not a background colour: backgrounds are "
                            f"{', '.join(W.BACKGROUNDS)}")
            bad.append(prev)
            skip.update((i - 1, i))
        elif prev is None or prev in KNOWN_WORDS:     # an unknown word before it is reported as unknown
            problems.append(f"{w!r} without a background colour right before it ({', '.join(W.BACKGROUNDS)})")
            bad.append(w)
            skip.add(i)
        else:
            skip.add(i)
    for i, w in enumerate(words):
        if i in skip or w in FILLER_WORDS:
            continue
        if w in ATTR_WORDS:
            attr, value = ATTR_WORDS[w]
            found.setdefault(attr, {}).setdefault(value, w)
        elif w in W.BACKGROUNDS:
            problems.append(f"{w!r} is a background colour, not an object colour: write 'on a {w} background' "
                            f"(object colours: {', '.join(W.COLOURS)})")
            bad.append(w)
        else:
            problems.append(f"unknown word {w!r}{_hint(w)}")
            bad.append(w)
    for attr, values in found.items():
        if len(values) > 1:
            problems.append(f"{attr} stated twice: {' vs '.join(repr(v) for v in values.values())}")
            bad.extend(values.values())
    if not found and not problems:
        problems.append("states no attribute (name a shape, colour, pattern, size or background)")
    if problems:
        raise PromptError(text, problems, bad)
    return {attr: next(iter(found[attr])) for attr in W.ATTRS if attr in found}


def kind_of(spec: dict[str, str]) -> str:
    """A prompt's kind from the attributes it changes, as the catalogue's kinds are drawn: 'source' changes
    none, 'short' one or two (the catalogue's short prompts change one), 'long' three or more (3-5 there)."""
    changed = W.Prompt("", spec, "").changed
    return "source" if not changed else "short" if len(changed) <= 2 else "long"


def resolve(prompt: str | W.Prompt) -> W.Prompt:
    """The catalogue entry of a catalogue prompt (case and spacing ignored), else a Prompt from the parse."""
    if isinstance(prompt, W.Prompt):
        return prompt
    try:
        return W.lookup(prompt)
    except KeyError:
        spec = parse_prompt(prompt)
        return W.Prompt(prompt, spec, kind_of(spec))


def spec_slug(spec: dict[str, str]) -> str:
    """A file-name-safe name of an attribute spec ('shape-square_colour-red'), in world.ATTRS order."""
    return "_".join(f"{attr}-{spec[attr]}" for attr in W.ATTRS if attr in spec)
