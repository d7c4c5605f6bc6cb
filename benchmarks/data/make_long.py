"""Write benchmarks/data/long_candidates.jsonl: long-context QA items for the long-range analysis.

    .venv/bin/python benchmarks/data/make_long.py

Each item hides one fact (the "needle") among filler paragraphs written for this
project, at a chosen depth, and asks about it at the end; ``evidence`` is the answer
word inside the needle, so the distance between the evidence and the explained answer
token is known. Deterministic (no randomness): the same file every run. The shipped
``long.jsonl`` keeps the items SmolLM2-135M-Instruct answers
(``python -m benchmarks.check_data benchmarks/data/long_candidates.jsonl --write-answered ...``).
"""

from __future__ import annotations

import json
from pathlib import Path

FILLER = (
    "The town of Alderby sits in a wide valley where the morning fog lingers until almost noon. Most of its "
    "houses are built from grey brick, and the main street runs from the old mill at one end to the railway "
    "station at the other. On market days the square fills with stalls selling cheese, honey and woollen "
    "blankets, and the cafés put their chairs out on the pavement even when the weather is cool.",
    "Making a good loaf of bread takes patience more than skill. The dough needs flour, water, salt and a little "
    "yeast, and it must rest for several hours so that the gluten can develop. Bakers fold the dough a few "
    "times during the first rise, shape it gently, and bake it in a very hot oven with some steam so that the "
    "crust turns brown and crisp while the inside stays soft.",
    "The night train leaves the capital a little after ten and reaches the coast early in the morning. Its "
    "sleeping cars have narrow bunks, a small washbasin and a window blind that never quite closes. Travellers "
    "who cannot sleep often walk to the dining car, where an attendant serves tea in thick glasses and the "
    "lights of small stations flash past in the dark.",
    "A vegetable garden rewards those who plan it in winter. Beans and peas climb best along a fence that gets "
    "the afternoon sun, while lettuce prefers a cooler corner. Gardeners who rotate their crops each year keep "
    "the soil healthy, and a thick layer of straw between the rows holds moisture during dry weeks and keeps "
    "the weeds from spreading.",
    "The city museum occupies a former customs house near the harbour. Its ground floor shows tools and boats "
    "from the fishing villages along the coast, and the upper galleries hold paintings of storms, ships and "
    "crowded quays. School groups visit on weekday mornings, and on the first Sunday of each month the doors "
    "open without charge until late in the evening.",
    "Every autumn the river that runs through the valley rises after the first heavy rains. The farmers move "
    "their sheep to higher fields, and the ferry that crosses near the church stops running for a few weeks. "
    "When the water falls again it leaves a layer of dark silt on the meadows, which is why the grass there "
    "grows so thick in the spring.",
    "The public library was rebuilt twenty years ago after a fire destroyed the old reading room. The new "
    "building has tall windows, long wooden tables and a quiet room for students preparing for exams. Its "
    "most popular service is the weekly story hour for young children, when a librarian reads aloud while "
    "parents browse the shelves of novels and travel guides.",
    "Repairing a bicycle is easier than most people expect. A flat tyre needs only two levers, a patch and a "
    "small pump; a loose chain can usually be fixed by moving the rear wheel back a little. Riders who clean "
    "and oil the chain every few weeks find that the gears shift more smoothly and that the parts last for "
    "many more years.",
    "The local football club plays its home games on a field behind the secondary school. The stands are "
    "small, but on a Saturday afternoon several hundred people gather along the fence, many of them parents "
    "and grandparents of the players. After the match both teams share soup and sandwiches in the clubhouse, "
    "whatever the score has been.",
    "Soup is the simplest meal to cook for a large family. Onions and carrots are softened in a little oil, "
    "then potatoes, lentils or beans are added with enough water to cover them. After half an hour of gentle "
    "simmering the soup is seasoned with salt, pepper and a few herbs, and it tastes even better when it is "
    "heated again the next day.",
    "The lighthouse on the northern cape has guided ships for more than a century. Its keeper once climbed the "
    "spiral stairs every evening to light the lamp, but today the light switches on by itself at dusk. Walkers "
    "who follow the cliff path can still visit the small room at the bottom of the tower, where old logbooks "
    "record the storms of past winters.",
    "Winter evenings in the mountains are long and quiet. After the ski lifts close, families gather around "
    "wood stoves, play cards and listen to the wind against the shutters. The village shop stays open until "
    "seven, selling candles, warm socks and chocolate, and the only sound on the snowy street is the crunch of "
    "boots on the way home.",
)

NEEDLES = (
    ("The password for the blue safe is marigold.", "What is the password for the blue safe?", "marigold"),
    ("Captain Reyes hid the old map inside a hollow violin.", "Where did Captain Reyes hide the old map?", "violin"),
    ("Professor Okafor's cat is named Pickles.", "What is the name of Professor Okafor's cat?", "Pickles"),
    ("The treasure is buried under the third olive tree.", "Under which tree is the treasure buried?", "olive"),
    ("The spare key is taped beneath the red mailbox.", "Where is the spare key taped?", "mailbox"),
    ("The secret meeting will take place in the boathouse.", "Where will the secret meeting take place?", "boathouse"),
)

# (number of filler paragraphs, depth of the needle 0..1); 24 paragraphs repeat the filler once
LAYOUTS = ((2, 1.0), (4, 0.5), (8, 0.0), (8, 1.0), (12, 0.5), (12, 0.0), (24, 0.0), (24, 0.5))


def items() -> list[dict[str, str]]:
    out = []
    for n_needle, (needle, question, answer) in enumerate(NEEDLES):
        for n_layout, (n_paragraphs, depth) in enumerate(LAYOUTS):
            start = (3 * n_needle + n_layout) % len(FILLER)
            paragraphs = [FILLER[(start + k) % len(FILLER)] for k in range(n_paragraphs)]
            at = round(depth * n_paragraphs)
            paragraphs.insert(at, needle)
            out.append(
                {
                    "id": f"long-{n_needle + 1}{'abcdefgh'[n_layout]}",
                    "context": "\n\n".join(paragraphs),
                    "question": question,
                    "answer": answer,
                    "evidence": answer,
                    "paragraphs": n_paragraphs,
                    "depth": depth,
                }
            )
    return out


def main() -> None:
    path = Path(__file__).with_name("long_candidates.jsonl")
    path.write_text("".join(json.dumps(item) + "\n" for item in items()), encoding="utf-8")
    print(f"wrote {len(items())} items to {path}")


if __name__ == "__main__":
    main()
