"""Text-only chat instructions for keeping the language model's chat behaviour.

When the demo VLM is retrained on image data, its language model can drift away from
ordinary assistant behaviour. To counter that, the base model's *own* answers to the
instructions in :data:`TRAIN_INSTRUCTIONS` are mixed into training (a light form of
self-distillation), and :data:`HELDOUT_INSTRUCTIONS` measures how well that behaviour
is kept on requests the training never saw.

The two sets are built separately: the held-out strings use different instruction
templates *and* different topics (:data:`HELDOUT_TOPICS` shares no content word with
:data:`TRAIN_TOPICS` or with any other subject used in training). Everything here is
deterministic: the train set is a fixed template x topic product plus a few families
of generated items (comparisons, arithmetic word problems, "how do I" questions,
factual questions) whose numbers come from a fixed-seed :class:`random.Random`.

Public API::

    TRAIN_INSTRUCTIONS      # tuple[str, ...], ~1.8k distinct instructions
    HELDOUT_INSTRUCTIONS    # tuple[str, ...], 64 distinct instructions
    TRAIN_TOPICS, HELDOUT_TOPICS
    sample_instructions(n, seed) -> list[str]   # from TRAIN_INSTRUCTIONS
"""

from __future__ import annotations

import random

__all__ = [
    "TRAIN_TOPICS", "HELDOUT_TOPICS", "TRAIN_INSTRUCTIONS", "HELDOUT_INSTRUCTIONS",
    "sample_instructions",
]

# --------------------------------------------------------------------------- train

#: Noun-phrase topics combined with every template in ``_TRAIN_TEMPLATES``.
TRAIN_TOPICS: tuple[str, ...] = (
    "volcanoes", "honeybees", "the printing press", "rainforests", "chess", "coffee",
    "bicycles", "glaciers", "lighthouses", "the human heart", "photosynthesis",
    "recycling", "electric cars", "the Roman Empire", "jazz music", "deserts",
    "octopuses", "the internet", "friendship", "city parks", "origami",
    "thunderstorms", "bread baking", "the solar system", "kindness", "mountains",
    "trains", "gardening", "libraries", "dinosaurs", "coral reefs", "vaccines",
    "robots", "the piano", "winter mornings", "marathon running", "tea ceremonies",
    "bridges", "owls", "fireflies", "rivers", "ancient Egypt", "magnets", "clouds",
    "penguins", "money", "soap bubbles", "video games", "earthquakes", "sunflowers",
    "the violin", "camping", "wolves", "maps", "birthdays", "cheese", "kites",
    "spiders", "the Olympic Games", "windmills", "snowflakes", "democracy",
)

_TRAIN_TEMPLATES: tuple[str, ...] = (
    "Compose a haiku on the subject of {t}.",
    "Write a four-line rhyming verse celebrating {t}.",
    "Tell a very short story (under 100 words) in which {t} plays a key role.",
    "Give a beginner-friendly explanation of {t}.",
    "List five practical tips related to {t}.",
    "Give me a one-sentence definition of {t}.",
    "Summarise the most important facts about {t} in three bullet points.",
    "Give a concrete everyday example that involves {t}.",
    "Draft a short, polite email inviting a colleague to a talk about {t}.",
    "What is one surprising fact about {t}?",
    "Write a limerick about {t}.",
    "Describe {t} to a ten-year-old.",
    "Name three common misconceptions about {t}.",
    "Suggest three creative names for a blog about {t}.",
    "Write a catchy tagline for a documentary on {t}.",
    "Explain {t} using an analogy.",
    "Write a two-sentence spooky story featuring {t}.",
    "Give three quiz questions, with answers, about {t}.",
    "Write a tweet-length fun fact about {t}.",
    "List four questions a curious child might ask about {t}.",
    "Write the opening paragraph of an encyclopedia entry on {t}.",
    "Describe {t} in vivid, sensory language.",
    "Write a short dialogue between two friends discussing {t}.",
    "In one paragraph, say why someone might find {t} fascinating.",
    "Recommend three ways a student could learn more about {t}.",
)

_COMPARE_TEMPLATES: tuple[str, ...] = (
    "Compare {a} and {b}: how are they similar and how do they differ?",
    "Which would make a better theme for a school project, {a} or {b}? Argue briefly.",
)

#: Countable things for the arithmetic word problems.
_MATH_ITEMS: tuple[str, ...] = (
    "marbles", "pencils", "cupcakes", "stickers", "oranges", "books", "seashells",
    "crayons", "cookies", "balloons",
)

_MATH_TEMPLATES: tuple[str, ...] = (
    "A box holds {a} {item}. How many {item} are in {b} boxes? Show your working.",
    "Sam had {c} {item} and gave away {a}. How many {item} does Sam have left?",
    "{c} {item} are shared equally among {b} children. How many does each child get, "
    "and how many are left over?",
    "A shop sells {item} at {a} cents each. How much do {b} of them cost in cents?",
    "Mia buys {a} packs of {item} with {b} in each pack, then loses {d}. "
    "How many {item} does she have now?",
    "Solve step by step: what is {a} times {b}, plus {c}?",
)

_HOWTO_TASKS: tuple[str, ...] = (
    "fix a flat bicycle tyre", "brew a good cup of coffee", "start a vegetable garden",
    "write a good cover letter", "learn to touch type", "make a budget spreadsheet",
    "tie a bow tie", "keep houseplants alive", "remove a coffee stain from a shirt",
    "prepare for an interview", "back up my phone", "stop procrastinating",
    "make sourdough starter", "choose a running shoe", "fold an origami crane",
    "reverse a string in Python", "improve my handwriting", "pack for a weekend trip",
    "clean a cast iron pan", "memorise a speech", "sharpen a kitchen knife",
    "plan a birthday party on a budget", "train a puppy to sit", "write a wedding toast",
    "make cold brew tea", "set up a home aquarium", "learn a foreign language faster",
    "take better photos with my phone", "organise my email inbox",
    "change a car tyre",
)

_HOWTO_TEMPLATES: tuple[str, ...] = (
    "How do I {task}?",
    "What are the steps to {task}? Keep it short.",
)

_COUNTRIES: tuple[str, ...] = (
    "Kenya", "Canada", "Peru", "Norway", "Vietnam", "Morocco", "Chile", "Portugal",
    "Mongolia", "Ireland", "Argentina", "Thailand", "Hungary", "Ghana", "Finland",
)

_FACT_TEMPLATES: tuple[str, ...] = (
    "What is the capital of {c}?",
    "Name the official language or languages of {c}.",
    "Which continent is {c} on, and what countries border it?",
)


def _math_problems() -> list[str]:
    rng = random.Random(20240601)
    out = []
    for item in _MATH_ITEMS:
        for tpl in _MATH_TEMPLATES:
            a, b = rng.randint(2, 12), rng.randint(2, 9)
            c, d = rng.randint(a + 5, 60), rng.randint(1, a)
            out.append(tpl.format(item=item, a=a, b=b, c=c, d=d))
    return out


def _build_train() -> tuple[str, ...]:
    out = [tpl.format(t=t) for t in TRAIN_TOPICS for tpl in _TRAIN_TEMPLATES]
    n = len(TRAIN_TOPICS)
    for i, a in enumerate(TRAIN_TOPICS):
        for k, tpl in enumerate(_COMPARE_TEMPLATES):
            out.append(tpl.format(a=a, b=TRAIN_TOPICS[(i + 7 + 11 * k) % n]))
    out += _math_problems()
    out += [tpl.format(task=task) for task in _HOWTO_TASKS for tpl in _HOWTO_TEMPLATES]
    out += [tpl.format(c=c) for c in _COUNTRIES for tpl in _FACT_TEMPLATES]
    out = [s[0].upper() + s[1:] for s in out]
    return tuple(dict.fromkeys(out))  # de-duplicate, keep order


TRAIN_INSTRUCTIONS: tuple[str, ...] = _build_train()

# ------------------------------------------------------------------------- held-out
# Written by hand, one (instruction, topic) pair per line. Neither the wording nor
# the topics reuse the train templates / subjects above.

_HELDOUT: tuple[tuple[str, str], ...] = (
    ("Write a haiku about autumn.", "autumn"),
    ("Explain what a prime number is.", "prime numbers"),
    ("Explain why the sky is blue in simple words.", "the sky"),
    ("Write a short poem about the sea.", "the sea"),
    ("Write a haiku about a frozen pond.", "ponds"),
    ("Write a short poem about grandmothers.", "grandmothers"),
    ("Tell me a bedtime story about a brave little turtle.", "turtles"),
    ("Explain what gravity is.", "gravity"),
    ("Explain what a black hole is.", "black holes"),
    ("Why do leaves change colour? Answer in simple words.", "leaves"),
    ("What causes tides?", "tides"),
    ("Give me three tips for sleeping better.", "sleep"),
    ("How can I become a better listener?", "listening"),
    ("What is the difference between weather and climate?", "weather and climate"),
    ("Compare cats and dogs as pets.", "cats and dogs"),
    ("What is the boiling point of water at sea level?", "boiling water"),
    ("Who painted the Mona Lisa?", "the Mona Lisa"),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet"),
    ("What is the largest planet we know of?", "planets"),
    ("How many legs does an insect have?", "insects"),
    ("Explain how a rainbow forms.", "rainbows"),
    ("What does DNA stand for, and what does it do?", "DNA"),
    ("Summarise the plot of Cinderella in three sentences.", "Cinderella"),
    ("Write an email to my landlord asking to fix a leaking tap.", "a leaking tap"),
    ("Write a thank-you note to a teacher.", "teachers"),
    ("Write a short poem about the first day of spring.", "spring"),
    ("Write a haiku about city traffic at night.", "traffic"),
    ("Describe a sunset over a lake.", "sunsets"),
    ("Explain what inflation means for ordinary people.", "inflation"),
    ("What is a noun? Give two examples.", "nouns"),
    ("Explain the water cycle.", "the water cycle"),
    ("Why do we have seasons?", "seasons"),
    ("What is the speed of light?", "the speed of light"),
    ("Give an example of a metaphor.", "metaphors"),
    ("Tom has 3 apples and buys 5 more. How many apples does he have?", "apples"),
    ("A train travels 60 km in one hour. How far does it go in 4 hours?", "distance and speed"),
    ("What is 15 percent of 200?", "percentages"),
    ("If a pizza is cut into 8 slices and I eat 3, what fraction is left?", "pizza fractions"),
    ("What is the easiest way to boil an egg?", "eggs"),
    ("Can you teach me to make a paper airplane?", "paper airplanes"),
    ("Suggest a name for a pet goldfish.", "goldfish"),
    ("Tell me a joke about elephants.", "elephants"),
    ("What are the main causes of the French Revolution?", "the French Revolution"),
    ("Explain what an atom is.", "atoms"),
    ("What is the tallest animal in the world?", "giraffes"),
    ("Write a two-line poem about a lost umbrella.", "umbrellas"),
    ("Why is exercise good for you?", "exercise"),
    ("Describe the taste of chocolate to someone who has never had it.", "chocolate"),
    ("What is the difference between a virus and a bacterium?", "viruses and bacteria"),
    ("Explain what a shadow is.", "shadows"),
    ("What should I pack for a day at the beach?", "the beach"),
    ("Write a short motivational message for someone starting a new job.", "new jobs"),
    ("What is the opposite of 'generous'?", "antonyms"),
    ("Translate 'good morning' into Spanish.", "Spanish"),
    ("How does a compass work?", "compasses"),
    ("Why do cats purr?", "purring"),
    ("Name three famous composers of classical music.", "composers"),
    ("What is the freezing point of water in Fahrenheit?", "Fahrenheit"),
    ("Explain what a fraction is to a child.", "fractions"),
    ("Write a riddle whose answer is 'a candle'.", "candles"),
    ("What is photography? Answer in two sentences.", "photography"),
    ("Give me a recipe idea using rice and beans.", "rice and beans"),
    ("What is the main job of the lungs?", "lungs"),
    ("Explain what a calendar leap year is.", "the calendar"),
)

HELDOUT_INSTRUCTIONS: tuple[str, ...] = tuple(s for s, _ in _HELDOUT)
HELDOUT_TOPICS: tuple[str, ...] = tuple(t for _, t in _HELDOUT)


def sample_instructions(n: int, seed: int) -> list[str]:
    """``n`` train instructions drawn with a ``random.Random(seed)``.

    Without replacement while ``n <= len(TRAIN_INSTRUCTIONS)``; beyond that the
    whole set is repeated in fresh shuffles.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        out += rng.sample(TRAIN_INSTRUCTIONS, min(n - len(out), len(TRAIN_INSTRUCTIONS)))
    return out
