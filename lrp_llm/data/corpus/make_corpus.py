"""Write the shipped corpus (``corpus.txt``): plain-text sentences of varied topics, one per line.

Every sentence comes from a template of this file filled from its word lists with a fixed seed
(``random.Random(SEED)``), so the output is the same on every run and platform. No text is
downloaded or copied. Run ``python -m lrp_llm.data.corpus.make_corpus`` to rewrite it.
"""

from __future__ import annotations

import random
from pathlib import Path

SEED = 16
N_SENTENCES = 6000
OUT = Path(__file__).with_name("corpus.txt")

PLACES = [
    ("Paris", "France", "the Seine"),
    ("Rome", "Italy", "the Tiber"),
    ("Berlin", "Germany", "the Spree"),
    ("Madrid", "Spain", "the Manzanares"),
    ("Vienna", "Austria", "the Danube"),
    ("Cairo", "Egypt", "the Nile"),
    ("London", "England", "the Thames"),
    ("Budapest", "Hungary", "the Danube"),
    ("Lisbon", "Portugal", "the Tagus"),
    ("Warsaw", "Poland", "the Vistula"),
    ("Prague", "Czechia", "the Vltava"),
    ("Baghdad", "Iraq", "the Tigris"),
    ("Bangkok", "Thailand", "the Chao Phraya"),
    ("Ottawa", "Canada", "the Ottawa River"),
    ("Canberra", "Australia", "Lake Burley Griffin"),
    ("Tokyo", "Japan", "the Sumida"),
]
MOUNTAINS = ["the Alps", "the Andes", "the Himalayas", "the Rockies", "the Pyrenees", "the Carpathians", "the Urals"]
DIRECTIONS = ["north", "south", "east", "west", "north-east", "south-west"]
ELEMENTS = [
    ("hydrogen", 1),
    ("helium", 2),
    ("carbon", 6),
    ("nitrogen", 7),
    ("oxygen", 8),
    ("sodium", 11),
    ("iron", 26),
    ("copper", 29),
    ("silver", 47),
    ("gold", 79),
]
PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]
SCIENCE_VERBS = ["measured", "observed", "estimated", "recorded", "calculated", "predicted"]
QUANTITIES = ["temperature", "pressure", "speed", "mass", "brightness", "density", "voltage"]
FOODS = ["bread", "soup", "rice", "pasta", "a cake", "a curry", "pancakes", "a salad", "a stew", "dumplings"]
INGREDIENTS = ["flour", "butter", "garlic", "onions", "tomatoes", "lentils", "sugar", "eggs", "ginger", "lemon"]
COOK_VERBS = ["stir", "fold in", "chop", "whisk", "simmer", "roast", "add", "season with"]
UNITS = ["grams of", "cups of", "spoons of", "pinches of"]
SPORTS = ["football", "tennis", "cricket", "basketball", "rugby", "hockey", "volleyball", "chess"]
TEAMS = ["the Harbour Hawks", "the River Foxes", "the Valley Rangers", "the City Owls", "the Coast Wolves"]
PLAYERS = ["Ana", "Tomas", "Mei", "Kofi", "Lena", "Ravi", "Sofia", "Jonas", "Amara", "Yusuf"]
EVENTS = [
    "the bridge was built",
    "the library opened",
    "the treaty was signed",
    "the railway arrived",
    "the old castle burned",
    "the first school was founded",
    "the market moved",
    "the harbour was dredged",
]
RULERS = ["the queen", "the council", "the old duke", "the governor", "the mayor", "the first king"]
CENTURIES = ["twelfth", "fourteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth"]
ROOMS = ["the kitchen", "the garden", "the hallway", "the attic", "the office", "the bus stop", "the shop"]
CHORES = [
    "washed the dishes",
    "watered the plants",
    "paid the bills",
    "fixed the bike",
    "walked the dog",
    "called her sister",
    "read the paper",
    "made some tea",
    "folded the laundry",
    "missed the train",
]
TIMES = ["this morning", "on Sunday", "after lunch", "last night", "before work", "at noon", "every Friday"]
FEELINGS = ["tired", "happy", "late", "hungry", "curious", "relieved", "busy", "calm"]
ANIMALS = ["cat", "dog", "horse", "owl", "fox", "bee", "whale", "sparrow", "goat", "frog"]
COLOURS = ["red", "blue", "green", "yellow", "grey", "white", "black", "orange"]
NAMES = ["count", "total", "value", "items", "result", "index", "score", "width", "price", "name"]
FUNCS = ["len", "sum", "max", "min", "sorted", "print", "round", "abs"]
OPS = ["+", "-", "*", "//", "%"]
NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty"]


def _geography(r: random.Random) -> str:
    city, country, river = r.choice(PLACES)
    return r.choice(
        [
            f"{city} is the capital of {country}.",
            f"The city of {city} lies on {river}.",
            f"{river[0].upper() + river[1:]} flows through {city} on its way to the sea.",
            f"Travellers reach {city} from the {r.choice(DIRECTIONS)} by train.",
            f"The capital of {country} is {city}, a city of {r.randint(1, 14)} million people.",
            f"From {city} you can see {r.choice(MOUNTAINS)} on a clear day."
            if r.random() < 0.3
            else f"{country} borders the sea to the {r.choice(DIRECTIONS)}.",
        ]
    )


def _science(r: random.Random) -> str:
    name, number = r.choice(ELEMENTS)
    planet = r.choice(PLANETS)
    return r.choice(
        [
            f"The atomic number of {name} is {number}.",
            f"{name.capitalize()} has {number} protons in its nucleus.",
            f"{planet} is the {r.choice(['first', 'second', 'third', 'fourth', 'fifth'])} planet we studied this term.",
            f"The team {r.choice(SCIENCE_VERBS)} the {r.choice(QUANTITIES)} of the sample at {r.randint(2, 90)} degrees.",
            f"Water boils at {r.choice([100, 90, 70])} degrees at this height, and the {r.choice(QUANTITIES)} drops.",
            f"Light from {planet} takes minutes, not seconds, to reach us.",
        ]
    )


def _cooking(r: random.Random) -> str:
    a, b = r.sample(INGREDIENTS, 2)
    return r.choice(
        [
            f"To make {r.choice(FOODS)}, {r.choice(COOK_VERBS)} {r.randint(2, 500)} {r.choice(UNITS)} {a}.",
            f"First {r.choice(COOK_VERBS)} the {a}, then add the {b} and wait {r.randint(2, 40)} minutes.",
            f"My grandmother made {r.choice(FOODS)} with {a} and {b} every {r.choice(['Sunday', 'winter', 'holiday'])}.",
            f"Bake the {r.choice(FOODS)} at {r.choice([160, 180, 200, 220])} degrees until it turns golden.",
            f"If the {a} is too dry, add a little {b}.",
        ]
    )


def _sport(r: random.Random) -> str:
    t1, t2 = r.sample(TEAMS, 2)
    p = r.choice(PLAYERS)
    return r.choice(
        [
            f"{t1.capitalize()} beat {t2} {r.randint(1, 5)} to {r.randint(0, 4)} in the final.",
            f"{p} has played {r.choice(SPORTS)} since she was {r.randint(5, 12)} years old.",
            f"In {r.choice(SPORTS)}, {p} scored the winning point in the last minute.",
            f"The {r.choice(SPORTS)} season starts in {r.choice(['spring', 'autumn', 'May', 'September'])}.",
            f"{p} trains {r.choice(NUMBER_WORDS)} times a week with {t1}.",
        ]
    )


def _history(r: random.Random) -> str:
    return r.choice(
        [
            f"In the {r.choice(CENTURIES)} century, {r.choice(EVENTS)}.",
            f"{r.choice(RULERS).capitalize()} ordered that {r.choice(EVENTS)[4:]} in {r.randint(1100, 1899)}.",
            f"Records from {r.randint(1100, 1899)} say that {r.choice(EVENTS)} after a long winter.",
            f"The town grew quickly once {r.choice(EVENTS)}.",
        ]
    )


def _everyday(r: random.Random) -> str:
    p = r.choice(PLAYERS)
    return r.choice(
        [
            f"{p} {r.choice(CHORES)} {r.choice(TIMES)}.",
            f"I left my keys in {r.choice(ROOMS)} {r.choice(TIMES)}.",
            f"{p} felt {r.choice(FEELINGS)} because she {r.choice(CHORES)}.",
            f"The {r.choice(COLOURS)} {r.choice(ANIMALS)} sat near {r.choice(ROOMS)} {r.choice(TIMES)}.",
            f"We {r.choice(CHORES).replace('her', 'our')} and then went to {r.choice(ROOMS)}.",
        ]
    )


def _numbers(r: random.Random) -> str:
    a, b = r.randint(2, 99), r.randint(2, 99)
    return r.choice(
        [
            f"{a} plus {b} equals {a + b}.",
            f"{a} times {b} is {a * b}.",
            f"The sequence goes {a}, {a + b}, {a + 2 * b}, {a + 3 * b}.",
            f"{r.choice(NUMBER_WORDS).capitalize()} and {r.choice(NUMBER_WORDS)} are both written as words here.",
            f"The bill came to {a}.{b:02d} and we split it {r.choice(['two', 'three', 'four'])} ways.",
            f"There are {r.randint(2, 60)} {r.choice(ANIMALS)}s and {r.randint(2, 60)} {r.choice(ANIMALS)}s on the farm.",
        ]
    )


def _code(r: random.Random) -> str:
    x, y = r.sample(NAMES, 2)
    return r.choice(
        [
            f"{x} = {r.choice(FUNCS)}({y}) {r.choice(OPS)} {r.randint(1, 9)}",
            f"for i in range({r.randint(2, 20)}): {x} += {y}[i]",
            f"if {x} > {r.randint(0, 100)}: return {y}",
            f"def get_{x}({y}): return {y}.{x}",
            f'print(f"{{{x}}} items, {{{y}}} left")',
            f"{x} = [{', '.join(str(r.randint(0, 9)) for _ in range(r.randint(2, 5)))}]",
        ]
    )


TOPICS = (_geography, _science, _cooking, _sport, _history, _everyday, _numbers, _code)


def sentences(n: int = N_SENTENCES, seed: int = SEED) -> list[str]:
    """``n`` sentences, the topics in turn (each one in eight), each filled from ``random.Random(seed)``."""
    r = random.Random(seed)
    return [TOPICS[i % len(TOPICS)](r) for i in range(n)]


def main() -> None:
    OUT.write_text("\n".join(sentences()) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
