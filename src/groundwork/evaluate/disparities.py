r"""Performance disparities: does a model work as well for everyone's text?

A model can be accurate on average and still fail one group of users more than another:
speech recognisers make almost twice as many errors for Black speakers (Koenecke et al. 2020),
parsers and language identifiers do worse on African-American English (Blodgett et al. 2016),
and language models are less accurate on text in dialects other than the standard one
(Ziems et al. 2022, "VALUE"). *Quality-of-service harm* is the name for this (Weidinger et al.
2021; Bommasani et al. 2021 §5.1). Measuring it needs text from each group, which benchmarks
rarely label; the common stand-in (CheckList, Ribeiro et al. 2020; langtest's robustness and
bias tests) is to **perturb** a labelled test set so that it reads as if written by, or about,
another group, and compare accuracy on the *same* examples:

* :func:`to_british` rewrites American spellings (and, with ``vocabulary=True``, a few words)
  as British ones: a stand-in for a dialect of English, not for a group of people;
* :func:`swap_names` replaces the people's names in a text, e.g. with names typical of one
  ethnic group (:func:`exclusive_names` keeps the names a list gives only to that group);
* :func:`add_typos` swaps adjacent letters inside words: a stand-in for users who type on a
  phone, write in a second language or have dyslexia.

Because the original and perturbed sets hold the same examples, their accuracies are *paired*:
:func:`paired_accuracy_gap` gives the gap with a paired percentile-bootstrap interval (resample
examples, keep both outcomes of each) and McNemar's exact test, which looks only at the
discordant examples (right on one version, wrong on the other): with $b$ and $c$ of them, under
"no difference" $b \sim \text{Binomial}(b + c, \tfrac12)$ (McNemar 1947).

Every perturbation is deterministic (a seeded generator per text, never a global one).
Chapter 21 (Harms).
"""

import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from groundwork.errors import ConfigError

__all__ = [
    "US_TO_UK",
    "AccuracyGap",
    "add_typos",
    "exclusive_names",
    "mcnemar_exact",
    "paired_accuracy_gap",
    "replace_words",
    "swap_names",
    "to_british",
]

_IZE_STEMS = (  # noqa: SIM905 (a word list reads best as words)
    "organ real recogn apolog special minim maxim optim prior categor summar memor emphas "
    "critic util steril sanit standard custom personal moistur caramel pulver stabil "
    "neutral fertil vapor harmon visual symbol sympath final equal energ author character "
    "civil familiar item legal modern normal public random synchron tender winter weather "
    "deodor alphabet crystall jeopard scrutin terror hospital revolution immobil mobil "
    "capital colon computer digit fossil glamor idol industrial local magnet material "
    "miniatur monopol national patron polar popular pressur special stigmat subsid symmetr "
    "trivial urban victim vandal"
).split()
_IZE_SUFFIXES = ("ize", "izes", "ized", "izing", "izer", "izers", "ization", "izations")
_OUR_STEMS = (  # noqa: SIM905 (a word list reads best as words)
    "col flav fav behavi neighb lab hon hum od vap rum arm harb sav parl endeav rig vig clam"
).split()
_OUR_SUFFIXES = (
    "or",
    "ors",
    "ored",
    "oring",
    "orful",
    "orless",
    "orite",
    "orites",
    "orable",
    "orhood",
)
_OTHER = {
    # -er -> -re
    "center": "centre",
    "centers": "centres",
    "centered": "centred",
    "centering": "centring",
    "theater": "theatre",
    "theaters": "theatres",
    "fiber": "fibre",
    "fibers": "fibres",
    "liter": "litre",
    "liters": "litres",
    "centimeter": "centimetre",
    "centimeters": "centimetres",
    "millimeter": "millimetre",
    "millimeters": "millimetres",
    "kilometer": "kilometre",
    "kilometers": "kilometres",
    "caliber": "calibre",
    "somber": "sombre",
    "luster": "lustre",
    "saber": "sabre",
    # -se, -yse
    "defense": "defence",
    "offense": "offence",
    "analyze": "analyse",
    "analyzed": "analysed",
    "analyzing": "analysing",
    "paralyze": "paralyse",
    "paralyzed": "paralysed",
    "catalyze": "catalyse",
    # doubled l
    "traveled": "travelled",
    "traveling": "travelling",
    "traveler": "traveller",
    "travelers": "travellers",
    "canceled": "cancelled",
    "canceling": "cancelling",
    "labeled": "labelled",
    "labeling": "labelling",
    "modeled": "modelled",
    "modeling": "modelling",
    "fueled": "fuelled",
    "fueling": "fuelling",
    "leveled": "levelled",
    "leveling": "levelling",
    "signaled": "signalled",
    "totaled": "totalled",
    "tunneled": "tunnelled",
    "channeled": "channelled",
    "counselor": "counsellor",
    "jewelry": "jewellery",
    "woolen": "woollen",
    "marvelous": "marvellous",
    # single words
    "gray": "grey",
    "grayish": "greyish",
    "aluminum": "aluminium",
    "mold": "mould",
    "molds": "moulds",
    "moldy": "mouldy",
    "plow": "plough",
    "pajamas": "pyjamas",
    "cozy": "cosy",
    "catalog": "catalogue",
    "dialog": "dialogue",
    "donut": "doughnut",
    "donuts": "doughnuts",
    "skeptical": "sceptical",
    "aging": "ageing",
    "artifact": "artefact",
    "mustache": "moustache",
    "yogurt": "yoghurt",
    "sulfur": "sulphur",
    "ax": "axe",
    "airplane": "aeroplane",
    "airplanes": "aeroplanes",
}

US_TO_UK: dict[str, str] = {
    **{stem + s: stem + s.replace("iz", "is") for stem in _IZE_STEMS for s in _IZE_SUFFIXES},
    **{stem + s: stem + "our" + s[2:] for stem in _OUR_STEMS for s in _OUR_SUFFIXES},
    **_OTHER,
}
"""American -> British spellings, lowercase, with their inflections (-ize/-ise, -or/-our,
-er/-re, doubled l, and single words); words that are also spelled the American way in Britain
in another sense ("tire", "check") are left out."""

US_TO_UK_WORDS: dict[str, str] = {
    "trash": "rubbish",
    "garbage": "rubbish",
    "trash can": "bin",
    "garbage can": "bin",
    "apartment": "flat",
    "apartments": "flats",
    "faucet": "tap",
    "faucets": "taps",
    "flashlight": "torch",
    "flashlights": "torches",
    "sidewalk": "pavement",
    "gasoline": "petrol",
    "gas station": "petrol station",
    "diaper": "nappy",
    "diapers": "nappies",
    "stroller": "pushchair",
    "zucchini": "courgette",
    "eggplant": "aubergine",
    "cilantro": "coriander",
    "candy": "sweets",
    "cookie": "biscuit",
    "cookies": "biscuits",
    "vacation": "holiday",
    "elevator": "lift",
    "truck": "lorry",
    "trucks": "lorries",
    "parking lot": "car park",
    "cell phone": "mobile phone",
    "plastic wrap": "cling film",
    "aluminum foil": "tin foil",
    "band-aid": "plaster",
    "closet": "wardrobe",
    "stove": "cooker",
    "dish soap": "washing-up liquid",
    "paper towel": "kitchen roll",
    "paper towels": "kitchen roll",
}
"""A few American words with a different British word ("cookie" -> "biscuit"): dialect
vocabulary, applied by :func:`to_british` with ``vocabulary=True``."""


def _match_case(template: str, word: str) -> str:
    """``word`` in the case pattern of ``template``: UPPER, Title or as given."""
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def replace_words(text: str, mapping: Mapping[str, str]) -> str:
    """Replace whole words or phrases of ``text`` by ``mapping`` (keys lowercase, matched
    case-insensitively on word boundaries, longest key first; the replacement takes the case
    pattern of what it replaces: "Color" -> "Colour", "COLOR" -> "COLOUR").

    >>> replace_words("My favorite Color is gray.", {"favorite": "favourite", "color": "colour"})
    'My favourite Colour is gray.'

    Raises:
        ConfigError: a key that is empty or not lowercase.
    """
    if not mapping:
        return text
    for key in mapping:
        if not key.strip() or key != key.lower():
            raise ConfigError(f"mapping keys must be non-empty and lowercase, got {key!r}")
    keys = sorted(mapping, key=len, reverse=True)
    pattern = re.compile(
        r"(?<![\w-])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w-])", re.IGNORECASE
    )
    return pattern.sub(lambda m: _match_case(m.group(0), mapping[m.group(0).lower()]), text)


def to_british(text: str, *, vocabulary: bool = False) -> str:
    """``text`` with American spellings made British (:data:`US_TO_UK`) and, with
    ``vocabulary``, American words replaced by British ones (:data:`US_TO_UK_WORDS`, applied
    first so "aluminum foil" becomes "tin foil", not "aluminium foil").

    >>> to_british("Organize the colorful center.")
    'Organise the colourful centre.'
    >>> to_british("Put the cookies in the trash can.", vocabulary=True)
    'Put the biscuits in the bin.'
    """
    if vocabulary:
        text = replace_words(text, US_TO_UK_WORDS)
    return replace_words(text, US_TO_UK)


def swap_names(text: str, mapping: Mapping[str, str]) -> str:
    """Replace each name of ``mapping`` (case-sensitive keys, e.g. ``{"Tracy": "Jamal"}``) where
    it stands as a whole word, possessives included ("Tracy's" -> "Jamal's"); all names are
    replaced at once, so a mapping that swaps two names works.

    >>> swap_names("Tracy met Riley at Riley's.", {"Tracy": "Riley", "Riley": "Tracy"})
    "Riley met Tracy at Tracy's."

    Raises:
        ConfigError: an empty name.
    """
    if not mapping:
        return text
    if any(not k.strip() for k in mapping):
        raise ConfigError("names to swap may not be empty")
    keys = sorted(mapping, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in keys) + r")\b")
    return pattern.sub(lambda m: mapping[m.group(0)], text)


def exclusive_names(groups: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """For each group, its names that no other group lists (sorted, duplicates dropped, only
    single capitalised words: "Izzah (Izzat)" or "MOHAMED" are left out). Name lists made per
    group share many names ("Isabella" is in several); what distinguishes a group is what only
    it has.

    >>> exclusive_names({"a": ["Ann", "Bo", "Cy"], "b": ["Bo", "Di"]})
    {'a': ['Ann', 'Cy'], 'b': ['Di']}

    Raises:
        ConfigError: fewer than two groups, or a group left with no name.
    """
    if len(groups) < 2:
        raise ConfigError(f"need at least two groups of names, got {len(groups)}")
    clean = {
        g: {n for n in names if re.fullmatch(r"[A-Z][a-z]+", n)} for g, names in groups.items()
    }
    out = {}
    for g, names in clean.items():
        others = set().union(*(v for h, v in clean.items() if h != g))
        out[g] = sorted(names - others)
        if not out[g]:
            raise ConfigError(f"group {g!r} has no name that the other groups do not list")
    return out


def add_typos(text: str, *, rate: float = 0.1, seed: int = 0, min_len: int = 4) -> str:
    """Swap two adjacent letters inside a word (first and last letters stay) in a share
    ``rate`` of the words of at least ``min_len`` letters, chosen by a generator seeded with
    ``seed`` and the text itself: the same text always gets the same typos.

    Raises:
        ConfigError: ``rate`` outside [0, 1] or ``min_len`` < 4 (a shorter word has no two
            interior letters).
    """
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"rate must be in [0, 1], got {rate}")
    if min_len < 4:
        raise ConfigError(f"min_len must be at least 4, got {min_len}")
    rng = random.Random(f"{seed}\0{text}")

    def typo(m: re.Match[str]) -> str:
        word = m.group(0)
        if len(word) < min_len or rng.random() >= rate:
            return word
        inner = [i for i in range(1, len(word) - 2) if word[i] != word[i + 1]]
        if not inner:
            return word
        i = rng.choice(inner)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]

    return re.sub(r"[A-Za-z]+", typo, text)


# --8<-- [start:paired]
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: $\\min(1, 2 P[X \\le \\min(b, c)])$ with
    $X \\sim \\text{Binomial}(b + c, \\tfrac12)$; 1.0 when there is no discordant pair.

    >>> round(mcnemar_exact(1, 9), 4)  # 2 * (1 + 10) / 1024
    0.0215

    Raises:
        ConfigError: a negative count.
    """
    if b < 0 or c < 0:
        raise ConfigError(f"discordant counts must be non-negative, got {b} and {c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class AccuracyGap:
    """Accuracy on a perturbed version of a test set against the original, paired."""

    n: int
    base_accuracy: float
    perturbed_accuracy: float
    gap: float
    """``perturbed_accuracy - base_accuracy`` (negative: the perturbation hurts)."""
    low: float
    high: float
    """Paired percentile-bootstrap interval of ``gap``."""
    only_base: int
    """Examples right in the original only (McNemar's $b$)."""
    only_perturbed: int
    """Examples right in the perturbed version only ($c$)."""
    p_value: float
    """Exact McNemar p-value."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_accuracy_gap(
    base: Sequence[bool | int],
    perturbed: Sequence[bool | int],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> AccuracyGap:
    """The accuracy gap between two outcome lists of the same examples (``base[i]`` and
    ``perturbed[i]`` say whether example ``i`` was answered correctly), with a paired
    bootstrap interval (``n_boot`` resamples of the examples, percentiles at
    $(1 \\pm \\text{level})/2$) and the exact McNemar test.

    >>> g = paired_accuracy_gap([1, 1, 1, 0], [1, 0, 0, 0], n_boot=10)
    >>> g.gap, g.only_base, g.only_perturbed
    (-0.5, 2, 0)

    Raises:
        ConfigError: different lengths, no examples, an outcome other than 0/1, ``n_boot < 1``
            or ``level`` outside (0, 1).
    """
    if len(base) != len(perturbed):
        raise ConfigError(f"{len(base)} original outcomes but {len(perturbed)} perturbed ones")
    if not base:
        raise ConfigError("no examples")
    if any(v not in (0, 1) for v in [*base, *perturbed]):
        raise ConfigError("outcomes must be 0/1 or booleans")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be a positive integer, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(perturbed, dtype=np.float64)
    diff = b - a  # (n,) in {-1, 0, 1}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))  # (n_boot, n)
    reps = diff[idx].mean(axis=1)
    tail = (1.0 - level) / 2
    only_base = int(((a == 1) & (b == 0)).sum())
    only_perturbed = int(((a == 0) & (b == 1)).sum())
    return AccuracyGap(
        n=len(diff),
        base_accuracy=float(a.mean()),
        perturbed_accuracy=float(b.mean()),
        gap=float(diff.mean()),
        low=float(np.quantile(reps, tail)),
        high=float(np.quantile(reps, 1.0 - tail)),
        only_base=only_base,
        only_perturbed=only_perturbed,
        p_value=mcnemar_exact(only_base, only_perturbed),
    )


# --8<-- [end:paired]
