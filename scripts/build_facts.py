"""Chapter 19 data: build ``src/groundwork/edit/smollm2_facts.json``, CounterFact-style edit
records on facts SmolLM2-135M actually knows.

CounterFact (Meng et al. 2022, section 3 and appendix) starts from known facts
(subject, relation, object) and writes, for each, a counterfactual rewrite and the prompts that
measure it. We follow its protocol on hand-written candidates:

1. **Candidates.** The tables below: countries (capital, official language, continent,
   currency), cities (country) and books (author). Ambiguous cases are left out (countries
   with several capitals or official languages, transcontinental countries). Each relation
   has a main prompt template that ends where the object begins, paraphrase templates and
   generation templates, all with the subject inside. Company -> headquarters was tried and
   dropped: SmolLM2 knew 1-3 of 44 (it answers "New York City" for most companies).
2. **Keep what the model knows.** SmolLM2's greedy continuation of each main prompt
   (:data:`ANSWER_TOKENS` new tokens) is compared with the object and its accepted spellings
   (:data:`ALIASES`). Match rule: both are NFKD-normalised with accents dropped and
   case-folded, the answer is stripped of leading whitespace, and it must *start with the
   whole object* followed by a non-alphanumeric character or the end of the text
   (``" Paris, the"`` matches Paris; ``" Parisian"`` and ``" the capital"`` do not). So a
   multi-word object must come out whole, not just its first word or token. The record's
   ``target_true`` is the spelling the model used, with its leading space.
3. **Counterfactual target.** ``target_new`` is another object of the same relation, drawn
   among the objects of the *kept* facts with a random generator seeded by
   (:data:`SEED`, relation, subject), so adding candidates does not reshuffle other records.
4. **Prompts.** Paraphrase prompts are the paraphrase templates about the subject.
   Neighbourhood prompts (up to :data:`N_NEIGHBOURS`) are the main template about other kept
   subjects of the same relation: first those with the same true object (CounterFact's
   choice), then, as a capital or author is rarely shared, other subjects of the relation in a
   seeded order, each stored with its own true object. A neighbour whose true object is the
   new target, or whose name contains (or is contained in) the subject's, is never used.
   Generation prompts are the generation templates about the subject.
5. **Reference texts** (for the consistency score of :mod:`groundwork.edit.metrics`): CounterFact
   compares generated text with Wikipedia text about subjects that truly have the new object;
   offline we use the unedited model's greedy continuations (:data:`REFERENCE_TOKENS` tokens,
   repetition penalty :data:`REFERENCE_PENALTY`) of the generation prompts of up to
   :data:`REFERENCE_SUBJECTS` kept subjects whose true object is the new target.

Records are shuffled across relations (seeded), so the first ``n`` are a mix. The file records
the script version, the model, the date and per-relation counts. Rebuilding is deterministic
(greedy decoding, seeded choices); the date changes only when the content does. Run::

    python scripts/build_facts.py            # a few minutes on a CPU
"""

import argparse
import datetime
import json
import random
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
from groundwork import pretrained  # noqa: E402
from groundwork.edit.facts import FORMAT, parse_facts  # noqa: E402
from groundwork.generate.config import GenerationConfig  # noqa: E402
from groundwork.generate.decode import generate  # noqa: E402

SCRIPT_VERSION = 1
MODEL = "smollm2-135m-instruct"
OUT = ROOT / "src" / "groundwork" / "edit" / "smollm2_facts.json"
SEED = 0
ANSWER_TOKENS = 10
N_NEIGHBOURS = 10
REFERENCE_SUBJECTS = 2
REFERENCE_TOKENS = 48
REFERENCE_PENALTY = 1.3

# ---- candidates --------------------------------------------------------------------------------

# country, capital, official language, continent, currency (None: left out of that relation, as
# ambiguous or disputed)
COUNTRIES: list[tuple[str, str | None, str | None, str | None, str | None]] = [
    ("France", "Paris", "French", "Europe", "euro"),
    ("Germany", "Berlin", "German", "Europe", "euro"),
    ("Italy", "Rome", "Italian", "Europe", "euro"),
    ("Spain", "Madrid", "Spanish", "Europe", "euro"),
    ("Portugal", "Lisbon", "Portuguese", "Europe", "euro"),
    ("the United Kingdom", "London", "English", "Europe", "pound"),
    ("Ireland", "Dublin", None, "Europe", "euro"),
    ("the Netherlands", "Amsterdam", "Dutch", "Europe", "euro"),
    ("Belgium", "Brussels", None, "Europe", "euro"),
    ("Switzerland", "Bern", None, "Europe", "franc"),
    ("Austria", "Vienna", "German", "Europe", "euro"),
    ("Poland", "Warsaw", "Polish", "Europe", "zloty"),
    ("the Czech Republic", "Prague", "Czech", "Europe", "koruna"),
    ("Hungary", "Budapest", "Hungarian", "Europe", "forint"),
    ("Greece", "Athens", "Greek", "Europe", "euro"),
    ("Sweden", "Stockholm", "Swedish", "Europe", "krona"),
    ("Norway", "Oslo", "Norwegian", "Europe", "krone"),
    ("Denmark", "Copenhagen", "Danish", "Europe", "krone"),
    ("Finland", "Helsinki", "Finnish", "Europe", "euro"),
    ("Iceland", "Reykjavik", "Icelandic", "Europe", "krona"),
    ("Russia", "Moscow", "Russian", None, "ruble"),
    ("Ukraine", "Kyiv", "Ukrainian", "Europe", "hryvnia"),
    ("Romania", "Bucharest", "Romanian", "Europe", "leu"),
    ("Bulgaria", "Sofia", "Bulgarian", "Europe", "lev"),
    ("Serbia", "Belgrade", "Serbian", "Europe", "dinar"),
    ("Croatia", "Zagreb", "Croatian", "Europe", "euro"),
    ("Slovakia", "Bratislava", "Slovak", "Europe", "euro"),
    ("Slovenia", "Ljubljana", "Slovenian", "Europe", "euro"),
    ("Estonia", "Tallinn", "Estonian", "Europe", "euro"),
    ("Latvia", "Riga", "Latvian", "Europe", "euro"),
    ("Lithuania", "Vilnius", "Lithuanian", "Europe", "euro"),
    ("Belarus", "Minsk", None, "Europe", "ruble"),
    ("Albania", "Tirana", "Albanian", "Europe", "lek"),
    ("Malta", "Valletta", None, "Europe", "euro"),
    ("Cyprus", "Nicosia", None, None, "euro"),
    ("Turkey", "Ankara", "Turkish", None, "lira"),
    ("Egypt", "Cairo", "Arabic", "Africa", "pound"),
    ("Morocco", "Rabat", "Arabic", "Africa", "dirham"),
    ("Algeria", "Algiers", "Arabic", "Africa", "dinar"),
    ("Tunisia", "Tunis", "Arabic", "Africa", "dinar"),
    ("Libya", "Tripoli", "Arabic", "Africa", "dinar"),
    ("Sudan", "Khartoum", "Arabic", "Africa", "pound"),
    ("Kenya", "Nairobi", None, "Africa", "shilling"),
    ("Nigeria", "Abuja", "English", "Africa", "naira"),
    ("Ethiopia", "Addis Ababa", "Amharic", "Africa", "birr"),
    ("Ghana", "Accra", "English", "Africa", "cedi"),
    ("Senegal", "Dakar", "French", "Africa", "franc"),
    ("Uganda", "Kampala", None, "Africa", "shilling"),
    ("Tanzania", "Dodoma", "Swahili", "Africa", "shilling"),
    ("Zimbabwe", "Harare", None, "Africa", None),
    ("Zambia", "Lusaka", "English", "Africa", "kwacha"),
    ("Angola", "Luanda", "Portuguese", "Africa", "kwanza"),
    ("Mozambique", "Maputo", "Portuguese", "Africa", "metical"),
    ("Namibia", "Windhoek", "English", "Africa", "dollar"),
    ("Botswana", "Gaborone", None, "Africa", "pula"),
    ("Rwanda", "Kigali", None, "Africa", "franc"),
    ("Mali", "Bamako", None, "Africa", "franc"),
    ("Cameroon", "Yaounde", None, "Africa", "franc"),
    ("South Africa", None, None, "Africa", "rand"),
    ("Japan", "Tokyo", "Japanese", "Asia", "yen"),
    ("China", "Beijing", "Chinese", "Asia", "yuan"),
    ("South Korea", "Seoul", "Korean", "Asia", "won"),
    ("North Korea", "Pyongyang", "Korean", "Asia", "won"),
    ("India", "New Delhi", "Hindi", "Asia", "rupee"),
    ("Pakistan", "Islamabad", "Urdu", "Asia", "rupee"),
    ("Bangladesh", "Dhaka", "Bengali", "Asia", "taka"),
    ("Nepal", "Kathmandu", "Nepali", "Asia", "rupee"),
    ("Sri Lanka", None, None, "Asia", "rupee"),
    ("Thailand", "Bangkok", "Thai", "Asia", "baht"),
    ("Vietnam", "Hanoi", "Vietnamese", "Asia", "dong"),
    ("Cambodia", "Phnom Penh", "Khmer", "Asia", "riel"),
    ("Laos", "Vientiane", "Lao", "Asia", "kip"),
    ("Myanmar", None, "Burmese", "Asia", "kyat"),
    ("Malaysia", "Kuala Lumpur", "Malay", "Asia", "ringgit"),
    ("Indonesia", "Jakarta", "Indonesian", "Asia", "rupiah"),
    ("the Philippines", "Manila", "Filipino", "Asia", "peso"),
    ("Mongolia", "Ulaanbaatar", "Mongolian", "Asia", "tugrik"),
    ("Iran", "Tehran", "Persian", "Asia", "rial"),
    ("Iraq", "Baghdad", "Arabic", "Asia", "dinar"),
    ("Saudi Arabia", "Riyadh", "Arabic", "Asia", "riyal"),
    ("Syria", "Damascus", "Arabic", "Asia", "pound"),
    ("Jordan", "Amman", "Arabic", "Asia", "dinar"),
    ("Lebanon", "Beirut", "Arabic", "Asia", "pound"),
    ("Israel", None, "Hebrew", "Asia", "shekel"),
    ("Qatar", "Doha", "Arabic", "Asia", "riyal"),
    ("Oman", "Muscat", "Arabic", "Asia", "rial"),
    ("Kuwait", None, "Arabic", "Asia", "dinar"),
    ("the United Arab Emirates", "Abu Dhabi", "Arabic", "Asia", "dirham"),
    ("Yemen", None, "Arabic", "Asia", "rial"),
    ("Afghanistan", "Kabul", None, "Asia", "afghani"),
    ("Kazakhstan", "Astana", "Kazakh", "Asia", "tenge"),
    ("Uzbekistan", "Tashkent", "Uzbek", "Asia", "som"),
    ("Georgia", "Tbilisi", "Georgian", None, "lari"),
    ("Armenia", "Yerevan", "Armenian", None, "dram"),
    ("Azerbaijan", "Baku", "Azerbaijani", None, "manat"),
    ("Australia", "Canberra", "English", "Oceania", "dollar"),
    ("New Zealand", "Wellington", "English", "Oceania", "dollar"),
    ("Fiji", "Suva", None, "Oceania", "dollar"),
    ("Papua New Guinea", "Port Moresby", None, "Oceania", "kina"),
    ("Canada", "Ottawa", None, "North America", "dollar"),
    ("the United States", "Washington", "English", "North America", "dollar"),
    ("Mexico", "Mexico City", "Spanish", "North America", "peso"),
    ("Cuba", "Havana", "Spanish", "North America", "peso"),
    ("Jamaica", "Kingston", "English", "North America", "dollar"),
    ("Haiti", "Port-au-Prince", None, "North America", "gourde"),
    ("the Dominican Republic", "Santo Domingo", "Spanish", "North America", "peso"),
    ("Guatemala", None, "Spanish", "North America", "quetzal"),
    ("Honduras", "Tegucigalpa", "Spanish", "North America", "lempira"),
    ("Nicaragua", "Managua", "Spanish", "North America", "cordoba"),
    ("El Salvador", "San Salvador", "Spanish", "North America", None),
    ("Costa Rica", "San Jose", "Spanish", "North America", "colon"),
    ("Panama", None, "Spanish", "North America", "balboa"),
    ("Brazil", "Brasilia", "Portuguese", "South America", "real"),
    ("Argentina", "Buenos Aires", "Spanish", "South America", "peso"),
    ("Chile", "Santiago", "Spanish", "South America", "peso"),
    ("Peru", "Lima", "Spanish", "South America", "sol"),
    ("Colombia", "Bogota", "Spanish", "South America", "peso"),
    ("Venezuela", "Caracas", "Spanish", "South America", "bolivar"),
    ("Ecuador", "Quito", "Spanish", "South America", "dollar"),
    ("Uruguay", "Montevideo", "Spanish", "South America", "peso"),
    ("Paraguay", "Asuncion", None, "South America", "guarani"),
    ("Bolivia", None, None, "South America", "boliviano"),
]

# city -> country
CITIES: list[tuple[str, str]] = [
    ("Lyon", "France"), ("Marseille", "France"), ("Toulouse", "France"), ("Nice", "France"),
    ("Munich", "Germany"), ("Hamburg", "Germany"), ("Frankfurt", "Germany"),
    ("Cologne", "Germany"), ("Stuttgart", "Germany"), ("Dresden", "Germany"),
    ("Milan", "Italy"), ("Naples", "Italy"), ("Venice", "Italy"), ("Florence", "Italy"),
    ("Turin", "Italy"), ("Barcelona", "Spain"), ("Seville", "Spain"), ("Valencia", "Spain"),
    ("Porto", "Portugal"), ("Manchester", "England"), ("Liverpool", "England"),
    ("Birmingham", "England"), ("Edinburgh", "Scotland"), ("Glasgow", "Scotland"),
    ("Rotterdam", "the Netherlands"), ("Antwerp", "Belgium"), ("Zurich", "Switzerland"),
    ("Geneva", "Switzerland"), ("Salzburg", "Austria"), ("Krakow", "Poland"),
    ("Saint Petersburg", "Russia"), ("Istanbul", "Turkey"), ("Gothenburg", "Sweden"),
    ("Bergen", "Norway"), ("Thessaloniki", "Greece"), ("Odessa", "Ukraine"),
    ("Osaka", "Japan"), ("Kyoto", "Japan"), ("Yokohama", "Japan"), ("Shanghai", "China"),
    ("Shenzhen", "China"), ("Guangzhou", "China"), ("Mumbai", "India"), ("Kolkata", "India"),
    ("Bangalore", "India"), ("Chennai", "India"), ("Karachi", "Pakistan"),
    ("Lahore", "Pakistan"), ("Busan", "South Korea"), ("Ho Chi Minh City", "Vietnam"),
    ("Sydney", "Australia"), ("Melbourne", "Australia"), ("Brisbane", "Australia"),
    ("Perth", "Australia"), ("Auckland", "New Zealand"), ("Toronto", "Canada"),
    ("Vancouver", "Canada"), ("Montreal", "Canada"), ("Chicago", "the United States"),
    ("Los Angeles", "the United States"), ("Houston", "the United States"),
    ("Guadalajara", "Mexico"), ("Rio de Janeiro", "Brazil"), ("Sao Paulo", "Brazil"),
    ("Medellin", "Colombia"), ("Johannesburg", "South Africa"), ("Cape Town", "South Africa"),
    ("Durban", "South Africa"), ("Lagos", "Nigeria"), ("Alexandria", "Egypt"),
    ("Casablanca", "Morocco"), ("Marrakesh", "Morocco"), ("Dubai", "the United Arab Emirates"),
    ("Jeddah", "Saudi Arabia"), ("Mecca", "Saudi Arabia"), ("Tel Aviv", "Israel"),
]  # fmt: skip

# book (or play, poem) -> author
BOOKS: list[tuple[str, str]] = [
    ("Pride and Prejudice", "Jane Austen"), ("Sense and Sensibility", "Jane Austen"),
    ("Emma", "Jane Austen"), ("War and Peace", "Leo Tolstoy"), ("Anna Karenina", "Leo Tolstoy"),
    ("Crime and Punishment", "Fyodor Dostoevsky"),
    ("The Brothers Karamazov", "Fyodor Dostoevsky"), ("Animal Farm", "George Orwell"),
    ("Nineteen Eighty-Four", "George Orwell"), ("Hamlet", "William Shakespeare"),
    ("Macbeth", "William Shakespeare"), ("Romeo and Juliet", "William Shakespeare"),
    ("Othello", "William Shakespeare"), ("King Lear", "William Shakespeare"),
    ("Moby-Dick", "Herman Melville"), ("The Great Gatsby", "F. Scott Fitzgerald"),
    ("To Kill a Mockingbird", "Harper Lee"), ("The Catcher in the Rye", "J.D. Salinger"),
    ("Don Quixote", "Miguel de Cervantes"), ("The Divine Comedy", "Dante Alighieri"),
    ("The Odyssey", "Homer"), ("The Iliad", "Homer"), ("Ulysses", "James Joyce"),
    ("Dubliners", "James Joyce"), ("Oliver Twist", "Charles Dickens"),
    ("Great Expectations", "Charles Dickens"), ("A Tale of Two Cities", "Charles Dickens"),
    ("David Copperfield", "Charles Dickens"), ("A Christmas Carol", "Charles Dickens"),
    ("Jane Eyre", "Charlotte Bronte"), ("Wuthering Heights", "Emily Bronte"),
    ("Frankenstein", "Mary Shelley"), ("Dracula", "Bram Stoker"),
    ("The Adventures of Tom Sawyer", "Mark Twain"),
    ("Adventures of Huckleberry Finn", "Mark Twain"), ("Les Miserables", "Victor Hugo"),
    ("The Hunchback of Notre-Dame", "Victor Hugo"),
    ("The Count of Monte Cristo", "Alexandre Dumas"),
    ("The Three Musketeers", "Alexandre Dumas"), ("Madame Bovary", "Gustave Flaubert"),
    ("The Old Man and the Sea", "Ernest Hemingway"), ("A Farewell to Arms", "Ernest Hemingway"),
    ("For Whom the Bell Tolls", "Ernest Hemingway"), ("The Sun Also Rises", "Ernest Hemingway"),
    ("The Grapes of Wrath", "John Steinbeck"), ("Of Mice and Men", "John Steinbeck"),
    ("East of Eden", "John Steinbeck"), ("Brave New World", "Aldous Huxley"),
    ("Fahrenheit 451", "Ray Bradbury"), ("Lord of the Flies", "William Golding"),
    ("The Hobbit", "J.R.R. Tolkien"), ("The Lord of the Rings", "J.R.R. Tolkien"),
    ("The Da Vinci Code", "Dan Brown"), ("The Metamorphosis", "Franz Kafka"),
    ("The Trial", "Franz Kafka"), ("One Hundred Years of Solitude", "Gabriel Garcia Marquez"),
    ("The Little Prince", "Antoine de Saint-Exupery"), ("Robinson Crusoe", "Daniel Defoe"),
    ("Gulliver's Travels", "Jonathan Swift"), ("Treasure Island", "Robert Louis Stevenson"),
    ("The Picture of Dorian Gray", "Oscar Wilde"),
    ("The Importance of Being Earnest", "Oscar Wilde"),
    ("Alice's Adventures in Wonderland", "Lewis Carroll"), ("The Jungle Book", "Rudyard Kipling"),
    ("The Time Machine", "H.G. Wells"), ("The War of the Worlds", "H.G. Wells"),
    ("Twenty Thousand Leagues Under the Sea", "Jules Verne"),
    ("Around the World in Eighty Days", "Jules Verne"),
    ("The Scarlet Letter", "Nathaniel Hawthorne"), ("Little Women", "Louisa May Alcott"),
    ("Uncle Tom's Cabin", "Harriet Beecher Stowe"), ("The Call of the Wild", "Jack London"),
    ("Heart of Darkness", "Joseph Conrad"), ("Mrs Dalloway", "Virginia Woolf"),
    ("To the Lighthouse", "Virginia Woolf"), ("Catch-22", "Joseph Heller"),
    ("Slaughterhouse-Five", "Kurt Vonnegut"), ("Lolita", "Vladimir Nabokov"),
    ("The Stranger", "Albert Camus"), ("The Prince", "Niccolo Machiavelli"),
    ("The Republic", "Plato"), ("On the Origin of Species", "Charles Darwin"),
    ("A Brief History of Time", "Stephen Hawking"), ("The Wealth of Nations", "Adam Smith"),
    ("Das Kapital", "Karl Marx"), ("Faust", "Johann Wolfgang von Goethe"),
    ("The Canterbury Tales", "Geoffrey Chaucer"), ("Paradise Lost", "John Milton"),
    ("Leaves of Grass", "Walt Whitman"), ("The Art of War", "Sun Tzu"),
    ("Siddhartha", "Hermann Hesse"), ("Doctor Zhivago", "Boris Pasternak"),
    ("The Master and Margarita", "Mikhail Bulgakov"), ("The Road", "Cormac McCarthy"),
    ("Beloved", "Toni Morrison"), ("The Handmaid's Tale", "Margaret Atwood"),
    ("Gone with the Wind", "Margaret Mitchell"), ("Dune", "Frank Herbert"),
    ("The Shining", "Stephen King"), ("Carrie", "Stephen King"),
    ("Murder on the Orient Express", "Agatha Christie"),
    ("The Hound of the Baskervilles", "Arthur Conan Doyle"),
    ("A Study in Scarlet", "Arthur Conan Doyle"),
    ("Charlie and the Chocolate Factory", "Roald Dahl"), ("Matilda", "Roald Dahl"),
    ("The Cat in the Hat", "Dr. Seuss"), ("Winnie-the-Pooh", "A.A. Milne"),
    ("Peter Pan", "J.M. Barrie"), ("The Chronicles of Narnia", "C.S. Lewis"),
    ("Atlas Shrugged", "Ayn Rand"), ("On the Road", "Jack Kerouac"),
    ("Invisible Man", "Ralph Ellison"), ("The Color Purple", "Alice Walker"),
    ("Things Fall Apart", "Chinua Achebe"), ("Midnight's Children", "Salman Rushdie"),
    ("The Alchemist", "Paulo Coelho"), ("The Kite Runner", "Khaled Hosseini"),
    ("Life of Pi", "Yann Martel"), ("The Name of the Rose", "Umberto Eco"),
    ("The Tale of Peter Rabbit", "Beatrix Potter"), ("Anne of Green Gables", "L.M. Montgomery"),
    ("Black Beauty", "Anna Sewell"), ("The Wind in the Willows", "Kenneth Grahame"),
    ("Candide", "Voltaire"), ("The Social Contract", "Jean-Jacques Rousseau"),
    ("Leviathan", "Thomas Hobbes"), ("Ivanhoe", "Walter Scott"),
    ("Middlemarch", "George Eliot"), ("Tess of the d'Urbervilles", "Thomas Hardy"),
    ("Pygmalion", "George Bernard Shaw"), ("Waiting for Godot", "Samuel Beckett"),
    ("Death of a Salesman", "Arthur Miller"), ("A Streetcar Named Desire", "Tennessee Williams"),
    ("The Bell Jar", "Sylvia Plath"), ("Walden", "Henry David Thoreau"),
    ("Rebecca", "Daphne du Maurier"), ("Harry Potter and the Philosopher's Stone", "J.K. Rowling"),
    ("The Hunger Games", "Suzanne Collins"), ("Twilight", "Stephenie Meyer"),
]  # fmt: skip

ALIASES: dict[str, tuple[str, ...]] = {
    "Kyiv": ("Kiev",),
    "J.R.R. Tolkien": ("J. R. R. Tolkien", "JRR Tolkien"),
    "J.D. Salinger": ("J. D. Salinger",),
    "J.K. Rowling": ("J. K. Rowling",),
    "H.G. Wells": ("H. G. Wells",),
    "C.S. Lewis": ("C. S. Lewis",),
    "A.A. Milne": ("A. A. Milne",),
    "J.M. Barrie": ("J. M. Barrie",),
    "L.M. Montgomery": ("L. M. Montgomery",),
    "Fyodor Dostoevsky": ("Fyodor Dostoyevsky",),
    "Leo Tolstoy": ("Lev Tolstoy",),
    "Oceania": ("Australia",),
    "the United States": ("the USA", "the United States of America"),
}
"""Other spellings accepted for an object (the model's own spelling becomes ``target_true``)."""


@dataclass(frozen=True)
class Relation:
    """A relation's templates (``{}`` is the subject) and its candidate (subject, object)s."""

    name: str
    description: str
    prompt: str
    paraphrases: tuple[str, ...]
    generation: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]


def _column(index: int) -> tuple[tuple[str, str], ...]:
    return tuple((row[0], obj) for row in COUNTRIES if (obj := row[index]) is not None)


RELATIONS = (
    Relation(
        "capital",
        "country -> capital city",
        "The capital of {} is",
        ("The capital city of {} is", "The seat of the government of {} is in"),
        ("Visitors to {} usually arrive in its capital city,", "The largest cities of {} are"),
        _column(1),
    ),
    Relation(
        "language",
        "country -> official language",
        "The official language of {} is",
        ("In {}, the official language is", "Most people in {} speak"),
        ("In {}, most people grow up speaking", "Schools in {} teach children to read and write"),
        _column(2),
    ),
    Relation(
        "continent",
        "country -> continent",
        "{} is a country located in the continent of",
        ("{} is located in the continent of", "The continent where {} lies is"),
        ("{} is a country that lies in", "The geography of {} is typical of"),
        _column(3),
    ),
    Relation(
        "currency",
        "country -> currency",
        "The currency of {} is the",
        ("The official currency of {} is the", "In {}, people pay for things in the"),
        ("Shops in {} price their goods in", "The economy of {} runs on the"),
        _column(4),
    ),
    Relation(
        "city_country",
        "city -> country",
        "{} is a city in the country of",
        ("{} is located in the country of", "The city of {} is part of the country of"),
        ("{} is one of the largest cities of", "The history of {} is tied to the history of"),
        tuple(CITIES),
    ),
    Relation(
        "author",
        "book -> author",
        "{} is a novel by",
        ("{} was written by", "The book {} was written by"),
        ("{} is a famous book written by", "Readers of {} remember its author,"),
        tuple(BOOKS),
    ),
)


# ---- matching ----------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """NFKD with accents dropped, case-folded, leading whitespace stripped."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return plain.lstrip().casefold()


def matched_spelling(answer: str, obj: str) -> str | None:
    """The spelling of ``obj`` (itself or an alias) that ``answer`` starts with, as a whole
    word or words, or None. The answer's own characters are returned (its case and accents)."""
    text = normalise(answer)
    for spelling in (obj, *ALIASES.get(obj, ())):
        target = normalise(spelling)
        if text.startswith(target) and (
            len(text) == len(target) or not text[len(target)].isalnum()
        ):
            return spelling
    return None


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


# ---- the model ---------------------------------------------------------------------------------


def continue_greedy(
    pre: Any,
    prompts: list[str],
    n_tokens: int,
    batch_size: int,
    repetition_penalty: float | None = None,
) -> list[str]:
    """Greedy continuations of ``prompts`` (batched, left-padded), as text; a row ends at any
    special token (``<|im_end|>``, ``<|endoftext|>``, ...), which is left out."""
    tok = pre.tokenizer
    config = GenerationConfig(
        max_new_tokens=n_tokens, temperature=0.0, repetition_penalty=repetition_penalty
    )
    stops = sorted(set(tok.special_tokens.values()))
    pad = tok.eot_id if tok.eot_id is not None else 0
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths
    texts = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        out = generate(
            pre.model, [tok.encode(prompts[i]) for i in rows], config, pad_id=pad, eos_ids=stops
        )
        for i, ids in zip(rows, out.sequences, strict=True):
            texts[i] = tok.decode([t for t in ids if t not in stops])
    return texts


@dataclass(frozen=True)
class Known:
    subject: str
    obj: str  # the candidate's object (canonical spelling)
    spelling: str  # how the model wrote it
    answer: str  # the model's greedy continuation (first line)


def known_facts(pre: Any, batch_size: int) -> dict[str, list[Known]]:
    """Per relation, the candidates whose greedy answer starts with the object."""
    prompts = [(r, s, o, r.prompt.format(s)) for r in RELATIONS for s, o in r.facts]
    answers = continue_greedy(pre, [p for *_, p in prompts], ANSWER_TOKENS, batch_size)
    kept: dict[str, list[Known]] = {r.name: [] for r in RELATIONS}
    for (relation, subject, obj, _), answer in zip(prompts, answers, strict=True):
        spelling = matched_spelling(answer, obj)
        if spelling is not None:
            own = answer.lstrip()[: len(spelling)]  # the model's case and accents
            if normalise(own) != normalise(spelling):
                own = spelling
            kept[relation.name].append(Known(subject, obj, own, first_line(answer)))
    return kept


# ---- records -----------------------------------------------------------------------------------


def overlaps(a: str, b: str) -> bool:
    return a in b or b in a


def choose_target(relation: str, fact: Known, objects: list[str]) -> str:
    rng = random.Random(f"{SEED}:{relation}:{fact.subject}:target")
    return rng.choice([o for o in objects if o != fact.obj])


def choose_neighbours(relation: Relation, fact: Known, new: str, kept: list[Known]) -> list[Known]:
    rng = random.Random(f"{SEED}:{relation.name}:{fact.subject}:neighbours")
    usable = [k for k in kept if not overlaps(k.subject, fact.subject) and k.obj != new]
    same = [k for k in usable if k.obj == fact.obj]
    other = [k for k in usable if k.obj != fact.obj]
    rng.shuffle(same)
    rng.shuffle(other)
    return (same + other)[:N_NEIGHBOURS]


def build(pre: Any, batch_size: int) -> dict[str, Any]:
    start = time.time()
    kept = known_facts(pre, batch_size)
    n_candidates = sum(len(r.facts) for r in RELATIONS)
    print(f"checked {n_candidates} candidates in {time.time() - start:.0f}s")
    records: list[dict[str, Any]] = []
    wanted: dict[tuple[str, str], list[Known]] = {}  # (relation, new object) -> its subjects
    for relation in RELATIONS:
        facts = kept[relation.name]
        objects = sorted({k.obj for k in facts})
        print(f"{relation.name}: kept {len(facts)}/{len(relation.facts)}, {len(objects)} objects")
        if len(objects) < 2:
            continue  # no counterfactual object to move to
        for fact in facts:
            new = choose_target(relation.name, fact, objects)
            neighbours = choose_neighbours(relation, fact, new, facts)
            wanted[(relation.name, new)] = [k for k in facts if k.obj == new]
            records.append(
                {
                    "relation": relation.name,
                    "subject": fact.subject,
                    "prompt": relation.prompt.format(fact.subject),
                    "target_new": " " + new,
                    "target_true": " " + fact.spelling,
                    "model_answer": fact.answer,
                    "paraphrase_prompts": [t.format(fact.subject) for t in relation.paraphrases],
                    "neighbourhood": [
                        {
                            "subject": k.subject,
                            "prompt": relation.prompt.format(k.subject),
                            "target_true": " " + k.spelling,
                        }
                        for k in neighbours
                    ],
                    "generation_prompts": [t.format(fact.subject) for t in relation.generation],
                }
            )
    random.Random(f"{SEED}:order").shuffle(records)
    records = [{"case_id": i, **r} for i, r in enumerate(records)]

    # reference texts: the unedited model on subjects that truly have each new target
    by_name = {r.name: r for r in RELATIONS}
    jobs: list[tuple[str, str, str]] = []  # (relation, new target, prompt)
    for (name, new), subjects in sorted(wanted.items()):
        rng = random.Random(f"{SEED}:{name}:{new}:references")
        chosen = rng.sample(subjects, min(REFERENCE_SUBJECTS, len(subjects)))
        chosen.sort(key=lambda k: k.subject)
        for k in chosen:
            jobs += [(name, " " + new, t.format(k.subject)) for t in by_name[name].generation]
    start = time.time()
    texts = continue_greedy(
        pre, [p for *_, p in jobs], REFERENCE_TOKENS, batch_size, REFERENCE_PENALTY
    )
    print(f"generated {len(jobs)} reference texts in {time.time() - start:.0f}s")
    references: dict[str, dict[str, list[str]]] = {}
    for (name, new, prompt), text in zip(jobs, texts, strict=True):
        references.setdefault(name, {}).setdefault(new, []).append(prompt + text)

    return {
        "format": FORMAT,
        "name": "smollm2-facts",
        "description": "CounterFact-style edit records on facts SmolLM2-135M knows "
        "(Meng et al. 2022); docs chapter 19",
        "script": "scripts/build_facts.py",
        "script_version": SCRIPT_VERSION,
        "model": MODEL,
        "date": datetime.date.today().isoformat(),
        "seed": SEED,
        "match_rule": "keep a fact when the greedy continuation of the main prompt "
        f"({ANSWER_TOKENS} new tokens), NFKD-normalised without accents, case-folded and "
        "left-stripped, starts with the whole object (or an accepted spelling) followed by a "
        "non-alphanumeric character or the end",
        "neighbourhood_rule": f"up to {N_NEIGHBOURS} other kept subjects of the relation, in "
        "the main template: those sharing the true object first, then others (seeded order); "
        "never one whose true object is the new target; each neighbour keeps its own true "
        "object",
        "reference_rule": "greedy continuations (repetition penalty "
        f"{REFERENCE_PENALTY}, {REFERENCE_TOKENS} tokens) of the generation templates about up "
        f"to {REFERENCE_SUBJECTS} kept subjects whose true object is the new target, prompt "
        "included",
        "relations": {
            r.name: {
                "description": r.description,
                "prompt": r.prompt,
                "paraphrases": list(r.paraphrases),
                "generation": list(r.generation),
                "candidates": len(r.facts),
                "kept": len(kept[r.name]),
            }
            for r in RELATIONS
        },
        "n_records": len(records),
        "records": records,
        "references": references,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the JSON file")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per forward pass")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    pre = pretrained.load(MODEL)
    data = build(pre, args.batch_size)
    parse_facts(data, str(args.out))  # validate before writing
    if args.out.exists():  # keep the old date when nothing else changed
        old = json.loads(args.out.read_text(encoding="utf-8"))
        if {**old, "date": None} == {**data, "date": None}:
            data["date"] = old["date"]
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {data['n_records']} records to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
