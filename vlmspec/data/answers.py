"""Varied natural-language answers about synthetic scenes, used as VLM training targets.

:mod:`vlmspec.data.synthetic` produces scenes whose content is known exactly (a spec).
This module turns a scene into chat-style training data for a small demo VLM:

* :data:`TRAIN_PROMPTS` / :data:`HELDOUT_PROMPTS`: user prompt wordings per answer style
  (:data:`PROMPT_STYLES`); the held-out wordings never occur in training.
  :data:`TRAIN_PROMPTS_WIDE` adds ~36 composed wordings per style (a small grammar; none
  shares a word 4-gram with a held-out prompt): what :func:`sample_dialogue` trains on.
* :func:`answer` writes an answer of one style (describe, list, count, compare, locate,
  read, chart, story, short). Every fact in it comes from the spec, so it is true by
  construction; only the wording, order and length are random (from the ``random.Random``
  passed in, so the output is deterministic for a seeded generator).
* :func:`follow_ups` and :func:`sample_dialogue` build short multi-turn chats.
* :func:`fact_check` is a light parser that counts "<colour> <kind>" style mentions and
  whether they exist in the scene; :func:`distinct_ngram_ratio` measures wording variety.

Rules the answers keep: the aspect ratio of the image is never stated (the model sees a
square resize); photographs (``scene.kind == "photo"``, with ``photo_colours`` and
``brightness``) are described honestly as photographs, by dominant colours and brightness
only, with no digits, no text read out and no objects counted.
"""

from __future__ import annotations

import math
import random
import re
import string
import zlib
from typing import Sequence

from vlmspec.data.synthetic import CELL_NAMES, COLORS, SHAPE_KINDS, SIZES, Scene, ShapeSpec

PROMPT_STYLES = ("describe", "list", "count", "compare", "locate", "read", "chart", "story", "short")

TRAIN_PROMPTS: dict[str, tuple[str, ...]] = {
    "describe": (
        "Describe the image in detail.",
        "What do you see in this picture?",
        "Can you describe this image?",
        "Tell me what is in this image.",
        "Give me a detailed description of the picture.",
        "Please describe everything you can see.",
        "What does this image show?",
        "Describe this picture for someone who cannot see it.",
        "Explain what this image contains.",
        "Write a description of the image.",
    ),
    "list": (
        "List the objects in the image.",
        "Make a list of everything in the picture.",
        "Give me a bulleted list of what you see.",
        "What items are in this image? Answer as a list.",
        "List each thing in the picture with its colour.",
        "Enumerate the objects you can see.",
        "Please list what this image contains.",
        "Write a numbered list of the things in the image.",
    ),
    "count": (
        "How many shapes are in the image?",
        "Count the objects in the picture.",
        "How many things can you see?",
        "Count the shapes for me.",
        "What is the number of objects in this image?",
        "How many items are drawn here?",
        "Can you count what is in the picture?",
        "Tell me how many shapes there are.",
    ),
    "compare": (
        "Which shape is the largest?",
        "Compare the shapes in the image.",
        "Which object is the biggest and which is the smallest?",
        "How do the shapes differ in size?",
        "Which shape is furthest to the left?",
        "Compare the sizes and positions of the objects.",
        "Which item is the highest in the picture?",
        "What are the differences between the objects?",
    ),
    "locate": (
        "Where is each shape located?",
        "Describe where the objects are in the image.",
        "What are the positions of the shapes?",
        "Where are things placed in this picture?",
        "Tell me the location of every object.",
        "Where in the image is each item?",
        "Explain the layout of the picture.",
        "Which part of the image is each object in?",
    ),
    "read": (
        "What does the text say?",
        "Read the text in the image.",
        "Is there any writing in this picture?",
        "What is written in the image?",
        "Can you read what it says?",
        "Transcribe any text you see.",
        "What word or number is shown?",
        "Read out anything written here.",
    ),
    "chart": (
        "Explain the chart.",
        "What does this chart show?",
        "Describe the chart and its values.",
        "Summarize the data in the chart.",
        "What are the values in this graph?",
        "Which bar or point is highest?",
        "Interpret the graph for me.",
        "Tell me about the chart in the image.",
    ),
    "story": (
        "Write a short story about this image.",
        "Tell me a little story based on the picture.",
        "Make up a short tale about what you see.",
        "Invent a brief story inspired by this image.",
        "Write a few sentences of fiction about the picture.",
        "Tell a children's story about this image.",
        "Create a tiny story using the things in the picture.",
        "Narrate a short story set in this image.",
    ),
}

HELDOUT_PROMPTS: dict[str, tuple[str, ...]] = {
    "describe": (
        "What do you see in this picture? Tell me about every object.",
        "Paint me a picture with words: what is shown here?",
        "Walk me through the contents of this image.",
        "Give a thorough account of this picture.",
        "I can't see the image; what's in it?",
    ),
    "list": (
        "List the objects in the image, one per line, with their colours.",
        "Itemize the picture's contents.",
        "Jot down every element of the image as a list.",
        "Break the picture down into a list of its parts.",
    ),
    "count": (
        "How many objects does the picture contain?",
        "Give me a count of the things drawn.",
        "What's the total number of items visible?",
        "Tally up the shapes in this image.",
    ),
    "compare": (
        "Which is bigger, and which is smaller, among the objects?",
        "Rank the objects by size.",
        "Contrast the items in the picture.",
        "Which object sits closest to the top?",
    ),
    "locate": (
        "Where does each object sit in the frame?",
        "Map out the positions of everything shown.",
        "In which region of the picture is each item found?",
        "Point out where each thing is.",
    ),
    "read": (
        "Does the image contain any words or numbers? Read them.",
        "What text appears in this picture?",
        "Spell out whatever is written.",
        "Is anything printed on the image?",
    ),
    "chart": (
        "Walk me through this graph's data.",
        "What trend does the chart show?",
        "Break down the numbers in the plot.",
        "Describe the plot's highest and lowest values.",
    ),
    "story": (
        "Spin a quick yarn about this picture.",
        "Compose a very short fairy tale about the image.",
        "Tell me a bedtime story featuring what is shown.",
        "Imagine a story that happens in this picture.",
    ),
}


# Composed training wordings: a small grammar per style (lead-in x request x focus), so the model
# learns the *kind* of request rather than ten memorised sentences. Written from generic VLM
# instruction styles, not from the held-out set; any composed wording that shares a word 4-gram
# with a held-out prompt is dropped (see ``_compose``), so held-out wordings stay unseen.
_LEADS = ("", "Please ", "Could you ", "Can you ", "I'd like you to ", "Quick question: ")
_GRAMMAR: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "describe": (("describe", "give a description of", "tell me about", "explain", "talk me through", "summarise"),
                 ("this image", "the picture", "what is shown", "the scene", "everything here", "the image, in detail",
                  "the picture in a few sentences", "the whole image")),
    "list": (("list", "name", "write down", "enumerate", "give me a list of", "make a bullet list of"),
             ("the shapes", "the things you see", "all the objects", "each item and its colour",
              "what is in the picture", "the elements of the scene")),
    "count": (("count", "tell me the number of", "work out how many there are of", "give the number of"),
              ("the shapes", "the objects", "the items in the picture", "the things drawn here")),
    "compare": (("compare", "contrast the sizes of", "say which is largest among", "order by size"),
                ("the shapes", "the objects", "the items shown", "the things in the picture")),
    "locate": (("say where to find", "describe the position of", "locate", "tell me where I can see"),
               ("each shape", "every object", "the items", "each thing in the picture")),
    "read": (("read", "transcribe", "tell me", "write out"),
             ("the writing", "any text in the image", "what the text says", "the word or number shown")),
    "chart": (("explain", "summarise", "describe", "read off the values of"),
              ("the chart", "the graph", "the plot", "the data in the figure")),
    "story": (("write", "tell", "make up", "invent"),
              ("a short story about this picture", "a tiny tale about the image", "a little story set in this scene",
               "a few lines of fiction about what you see")),
}


def _words(p: str) -> list[str]:
    return re.findall(r"[a-z']+", p.lower())


def _compose(style: str, heldout: dict[str, tuple[str, ...]], base: tuple[str, ...], n: int = 36) -> tuple[str, ...]:
    """``base`` plus up to ``n`` composed wordings for ``style`` (deterministic; held-out 4-grams excluded)."""
    held4 = {tuple(w[i:i + 4]) for ps in heldout.values() for p in ps for w in [_words(p)] for i in range(len(w) - 3)}
    verbs, objects = _GRAMMAR[style]
    rng = random.Random(f"compose|{style}")
    seen = {normalize_prompt(p) for p in base}
    out = list(base)
    combos = [(lead, v, o) for lead in _LEADS for v in verbs for o in objects]
    rng.shuffle(combos)
    for lead, v, o in combos:
        if len(out) >= len(base) + n:
            break
        text = f"{lead}{v} {o}".strip()
        text = text[0].upper() + text[1:] + ("?" if lead.strip() in ("Could you", "Can you") else ".")
        w = _words(text)
        if normalize_prompt(text) in seen or any(tuple(w[i:i + 4]) in held4 for i in range(len(w) - 3)):
            continue
        seen.add(normalize_prompt(text))
        out.append(text)
    return tuple(out)


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Colour words the fact checker recognises (shape colours plus common others, to catch errors).
CHECK_COLOURS = tuple(COLORS) + ("white", "gray", "grey", "brown", "pink", "cyan", "silver", "gold")

# Position phrases per grid cell (all say the same cell, differently).
_WHERE: dict[str, tuple[str, ...]] = {
    "top left": ("in the top left corner", "at the top left", "in the upper left", "up in the top-left corner"),
    "top": ("at the top", "at the top middle", "along the top edge, in the middle", "in the upper middle"),
    "top right": ("in the top right corner", "at the top right", "in the upper right", "up in the top-right corner"),
    "left": ("on the left", "on the left side", "at the middle of the left edge", "in the middle left"),
    "center": ("in the center", "right in the middle", "in the middle of the image", "at the center"),
    "right": ("on the right", "on the right side", "at the middle of the right edge", "in the middle right"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the lower left", "down in the bottom-left corner"),
    "bottom": ("at the bottom", "at the bottom middle", "along the bottom edge, in the middle", "in the lower middle"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the lower right", "down in the bottom-right corner"),
}
_COL_NAMES = ("left", "middle", "right")
_ROW_NAMES = ("top", "middle", "bottom")
_SIZE_RANK = {s: i for i, s in enumerate(SIZES)}  # small < medium < large


# --------------------------------------------------------------------------- helpers
def _join(items: Sequence[str], conj: str = "and") -> str:
    items = list(items)
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _num(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def _keyed(rng: random.Random, options: Sequence[str], key: object, p: float = 0.8) -> str:
    """Pick a phrasing: with probability ``p`` the one tied to ``key`` (something the image shows,
    e.g. a shape's colour), else any. Uniform choices teach a model one modal template that greedy
    decoding repeats for every image; choices tied to visible content make its wording vary with
    the scene, as a real VLM's does."""
    if rng.random() < p:
        return options[zlib.crc32(repr(key).encode()) % len(options)]
    return rng.choice(options)


def _in_turn(rng: random.Random, options: Sequence[str], slot: int, p: float = 0.85) -> str:
    """Pick ``options[slot % len]`` with probability ``p``, else any: ``slot`` = an offset the
    answer's opening fixed plus the sentence's index, so every sentence after the opening follows
    what the model has already written, and consecutive sentences take different templates."""
    return options[slot % len(options)] if rng.random() < p else rng.choice(options)


def _colour_word(rng: random.Random) -> str:
    return rng.choice(("colour", "color"))


def _np(sh: ShapeSpec, rng: random.Random, size: bool | None = None) -> str:
    """Noun phrase without article: "small red circle" / "red circle" (adjacent colour+kind)."""
    if size is None:
        size = rng.random() < 0.35
    return f"{sh.size} {sh.color} {sh.kind}" if size else f"{sh.color} {sh.kind}"


def _where(sh_or_cell, rng: random.Random) -> str:
    cell = sh_or_cell.cell if hasattr(sh_or_cell, "cell") else sh_or_cell
    return rng.choice(_WHERE[CELL_NAMES[tuple(cell)]])


def _is_photo(scene: Scene) -> bool:
    return scene.kind == "photo"


def _photo_colours(scene: Scene) -> tuple[str, ...]:
    return tuple(getattr(scene, "photo_colours", ()) or ())


def _brightness(scene: Scene) -> str:
    b = getattr(scene, "brightness", None) or "medium"
    return b if b in ("bright", "dark", "medium") else "medium"


def _background(scene: Scene, rng: random.Random) -> str:
    """A phrase for what the content sits on ("a plain white background" / "a photograph")."""
    bg = scene.background
    if bg == "photo":
        return rng.choice(("a photograph", "a photographic background", "a real photo used as the backdrop"))
    texture = getattr(scene, "texture", "flat")
    if texture == "gradient":
        return _keyed(rng, (f"a {bg} background with a soft gradient", f"a shaded {bg} background"), bg)
    if texture == "noise":
        return _keyed(rng, (f"a grainy {bg} background", f"a slightly noisy {bg} backdrop"), bg)
    return _keyed(rng, (f"a plain {bg} background", f"a {bg} background", f"a flat {bg} backdrop"), bg)


def _pair_distances(scene: Scene) -> list[tuple[float, ShapeSpec, ShapeSpec]]:
    """(centre distance / sum of radii, a, b) for each pair of shapes, in pixels."""
    m = min(scene.width, scene.height)
    out = []
    for i, a in enumerate(scene.shapes):
        for b in scene.shapes[i + 1:]:
            d = math.hypot((a.cx - b.cx) * scene.width, (a.cy - b.cy) * scene.height)
            ra = getattr(a, "r", None) or SIZES[a.size]
            rb = getattr(b, "r", None) or SIZES[b.size]
            out.append((d / ((ra + rb) * m), a, b))
    return out


def _thing(scene: Scene) -> str:
    """What the text of a text scene is: 'the word "x"' / 'the number "7"' (always quoted)."""
    t = scene.text
    return f'the {"number" if t.is_number else "word"} "{t.text}"'


def _summary(scene: Scene, rng: random.Random) -> str:
    """A short clause saying what the image shows (used when a style does not apply)."""
    if scene.kind == "shapes":
        n = len(scene.shapes)
        return f"{_num(n)} shape{'s' if n != 1 else ''}: " + _join([_a(_np(s, rng, False)) for s in scene.shapes])
    if scene.kind == "text":
        return f'{_thing(scene)} written in {scene.text.color}'
    if scene.kind == "chart":
        return f"a {scene.chart.chart} chart drawn in {scene.chart.color}"
    return "a photograph"


# --------------------------------------------------------------------------- photos
def _photo_facts(scene: Scene, rng: random.Random) -> list[str]:
    cols = _photo_colours(scene)
    b = _brightness(scene)
    light = {
        "bright": ("bright and well lit", "quite bright", "light and airy"),
        "dark": ("dark and dimly lit", "rather dark", "dark, low on light"),
        "medium": ("neither very bright nor very dark", "moderately lit", "of medium brightness"),
    }[b]
    s = [rng.choice((
        "This is a photograph rather than a drawing.",
        "The image is a real photograph.",
        "What I see is a photo, not a simple drawing.",
        "It looks like a natural photograph.",
    ))]
    if cols:
        s.append(rng.choice((
            f"Its dominant {_colour_word(rng)}{'s are' if len(cols) > 1 else ' is'} {_join(cols)}.",
            f"The main {_colour_word(rng)}{'s' if len(cols) > 1 else ''} in it: {_join(cols)}" + (
                f", with {cols[0]} the most common." if len(cols) > 1 else "."),
            f"Mostly {_join(cols)} tones fill the frame.",
        )))
    s.append(f"Overall the picture is {rng.choice(light)}.")
    s.append(rng.choice((
        "Finer details, and any writing, cannot be made out reliably.",
        "I can't reliably make out the finer details or read any writing in it.",
        "Beyond the colours and the lighting, I cannot identify details or text with confidence.",
    )))
    return s


def _photo_answer(scene: Scene, style: str, rng: random.Random) -> str:
    facts = _photo_facts(scene, rng)
    cols = _photo_colours(scene)
    if style == "short":
        return facts[0] + (f" It is mostly {_join(cols)}." if cols else "")
    if style == "list":
        bullet = rng.choice(("-", "*", "•"))
        lines = [rng.choice(("It is a photograph; the main colours are:", "Main colours in this photo:"))]
        lines += [f"{bullet} {c}" + (" (dominant)" if i == 0 and len(cols) > 1 else "") for i, c in enumerate(cols)]
        lines.append(f"{bullet} brightness: {_brightness(scene)}")
        lines.append("Individual objects and any text cannot be listed reliably.")
        return "\n".join(lines)
    if style == "count":
        return rng.choice((
            "This is a photograph, so I cannot count the objects in it reliably. ",
            "I can't give a reliable count of objects in a photo like this. ",
        )) + " ".join(facts[1:-1])
    if style == "read":
        return rng.choice((
            "I can't read any writing reliably in this photograph.",
            "No text can be made out reliably; this is a photo.",
        )) + " " + " ".join(facts[1:-1])
    if style == "chart":
        return "There is no chart here; the image is a photograph. " + " ".join(facts[1:-1])
    if style in ("compare", "locate"):
        return rng.choice((
            "It is a photograph, so I cannot pick out and place individual objects reliably. ",
            "This photo doesn't let me compare or locate separate objects with confidence. ",
        )) + " ".join(facts[1:])
    if style == "story":
        cols_txt = _join(cols) if cols else "soft"
        mood = {"bright": "a sunny day", "dark": "a quiet night", "medium": "a calm afternoon"}[_brightness(scene)]
        return (f"Someone took this photograph on what feels like {mood}. The frame is washed in {cols_txt} tones. "
                "The small details are too blurry to name, so the rest of the tale is left to the imagination.")
    # describe
    middle = facts[1:-1]
    rng.shuffle(middle)
    return " ".join([facts[0]] + middle + [facts[-1]])


# --------------------------------------------------------------------------- shapes
def _shape_sentence(sh: ShapeSpec, rng: random.Random, first: bool, slot: int) -> str:
    """One shape's sentence; ``slot`` (the sentence's index plus an offset the opening sets) picks
    the template in turn, so consecutive sentences differ."""
    what, where = _np(sh, rng), _where(sh, rng)
    t = [
        f"{_cap(_a(what))} is {where}.",
        f"{_cap(where)} there is {_a(what)}.",
        f"{_cap(_a(what))} sits {where}.",
        f"You can see {_a(what)} {where}.",
        f"{_cap(where)}, {_a(what)} stands out.",
        f"There is {_a(what)} placed {where}.",
    ]
    if not first:
        t += [f"Next, {_a(what)} appears {where}.", f"Also, {_a(what)} is {where}.", f"Then comes {_a(what)}, {where}."]
    return _in_turn(rng, t, slot)


def _relation(a: ShapeSpec, b: ShapeSpec, rng: random.Random) -> str:
    """Where shape ``a`` is relative to ``b``, from their grid cells (distinct within a scene)."""
    (ra, ca), (rb, cb) = a.cell, b.cell
    parts = ([("above" if ra < rb else "below")] if ra != rb else []) + (
        [("to the left of" if ca < cb else "to the right of")] if ca != cb else [])
    rel = " and ".join(parts) if len(parts) < 2 or rng.random() < 0.5 else rng.choice(parts)
    return rng.choice((f"The {a.color} {a.kind} is {rel} the {b.color} {b.kind}.",
                       f"Compared with the {b.color} {b.kind}, the {a.color} {a.kind} sits {rel} it.",
                       f"Seen from the {b.kind}, the {a.color} {a.kind} lies {rel} the {b.color} one."))


_KIND_NOTES = {  # true of every shape of the kind; no other kind is named (fact_check counts kinds)
    "circle": ("It is perfectly round, with no corners or straight edges.", "Its edge is one smooth curve, with no corners.",
               "Being round, it has no sides or points."),
    "square": ("It has four equal straight sides and four right-angled corners.", "Its four sides are the same length, meeting at right angles.",
               "It has four corners and four straight edges of equal length."),
    "triangle": ("It has three straight sides and three pointed corners.", "Its three edges meet in three sharp points.",
                 "With three sides, it is the simplest of the polygons."),
    "star": ("It has five points sticking out around its centre.", "Its five pointed arms are spaced evenly around the middle.",
             "It has five sharp tips with notches between them."),
    "hexagon": ("It has six straight sides and six corners.", "Its six edges are all the same length, like a honeycomb cell.",
                "It is a six-sided shape, so it looks almost round from a distance."),
}


def _kind_note(sh: ShapeSpec, rng: random.Random) -> str:
    return _keyed(rng, _KIND_NOTES[sh.kind], sh.color)


def _background_note(scene: Scene, rng: random.Random) -> str:
    """A sentence about what the shapes sit on (true for every background and texture)."""
    if scene.background == "photo":
        return ""
    texture = getattr(scene, "texture", "flat")
    feel = {"gradient": "shades softly from one tone to another", "noise": "has a fine, grainy texture"}.get(
        texture, "is a single even colour")
    return _keyed(rng, (f"The {scene.background} background {feel}.", f"Behind everything, the background {feel}.",
                        f"The backdrop, {scene.background}, {feel}."), scene.shapes[0].color)


_SYMMETRY = {"square": 90.0, "triangle": 120.0, "hexagon": 60.0, "star": 72.0}


def _pose(sh: ShapeSpec, rng: random.Random) -> str:
    """A true remark on the shape's orientation ("" for circles and unclear cases)."""
    sym = _SYMMETRY.get(sh.kind)
    if sym is None:
        return ""
    off = (getattr(sh, "rotation", 0.0) or 0.0) % sym
    off = min(off, sym - off)
    if off < 2.0:
        return rng.choice((f"The {sh.kind} stands upright, not tilted.", "It is drawn straight, with no tilt.",
                           f"The {sh.kind} is upright."))
    if off > 10.0:
        return rng.choice((f"The {sh.kind} is drawn at an angle.", "It is tilted a little to one side.",
                           f"The {sh.kind} is rotated rather than upright."))
    return ""


def _order(shapes: Sequence[ShapeSpec], rng: random.Random) -> tuple[list[ShapeSpec], str]:
    mode = _keyed(rng, ("position", "size", "colour", "random", "column"), len(shapes))
    if mode == "position":
        return sorted(shapes, key=lambda s: s.cell), "going from top to bottom"
    if mode == "column":
        return sorted(shapes, key=lambda s: (s.cell[1], s.cell[0])), "from left to right"
    if mode == "size":
        return sorted(shapes, key=lambda s: -_SIZE_RANK[s.size]), "from the biggest to the smallest"
    if mode == "colour":
        return sorted(shapes, key=lambda s: s.color), "by colour"
    out = list(shapes)
    rng.shuffle(out)
    return out, ""


def _describe_shapes(scene: Scene, rng: random.Random) -> str:
    shapes = scene.shapes
    n = len(shapes)
    noun = "shape" if n == 1 else "shapes"
    bg = _background(scene, rng)
    openings = (
        f"The image shows {_num(n)} {noun} on {bg}.",
        f"This picture contains {_num(n)} flat, coloured {noun} drawn on {bg}.",
        f"In this image there {'is' if n == 1 else 'are'} {_num(n)} {noun} against {bg}.",
        f"I can see {_num(n)} {noun} here, set on {bg}.",
        f"{_cap(_num(n))} simple {noun} {'is' if n == 1 else 'are'} drawn on {bg}.",
        f"Here we have {bg} with {_num(n)} {noun} on it.",
        f"{_cap(bg)} holds {_num(n)} {noun}.",
        f"There {'is' if n == 1 else 'are'} {_num(n)} {noun} in this picture, all on {bg}.",
        f"What I see is {bg} and {_num(n)} {noun} drawn over it.",
        f"The picture is made of {bg} and {_num(n)} coloured {noun}.",
    )
    # keyed on the background and the count (what the model reads best), so the mapping is learnable and
    # the opening (and every sentence that follows it in turn) varies across scenes
    opening = _keyed(rng, openings, (scene.background, n), p=0.9)
    ordered, how = _order(shapes, rng)
    offset = openings.index(opening)
    body = [_shape_sentence(s, rng, i == 0, slot=offset + i) for i, s in enumerate(ordered)]
    for i, s in enumerate(ordered[:3]):  # what the shapes look like, as a real describer adds
        if rng.random() < (0.2 if n == 1 else 0.08):  # rare: the same note for every shape of a kind
            body[i] += " " + _kind_note(s, rng)
    if how and n > 2 and rng.random() < 0.5:
        body[0] = rng.choice((f"Listing them {how}: ", f"Going {how}, ", f"Taking them {how}: ")) + body[0][0].lower() + body[0][1:]
    extra = []
    if n == 1:
        sh = shapes[0]
        pose = _pose(sh, rng) if rng.random() < 0.4 else ""
        if pose:
            extra.append(pose)
        extra.append(_in_turn(rng, (
            f"It is {'quite big' if sh.size == 'large' else 'fairly small' if sh.size == 'small' else 'of medium size'}"
            f" and filled with a single {_colour_word(rng)}.",
            f"The {sh.kind} is the only thing drawn, all in {sh.color}.",
            f"Its {_colour_word(rng)} is {sh.color}, and it is {sh.size} compared with the frame.",
            f"This {sh.color} {sh.kind} is the one and only object.",
            f"Being {sh.size}, the {sh.kind} takes up {'much' if sh.size == 'large' else 'little' if sh.size == 'small' else 'a fair part'} of the frame.",
        ), offset + 2))
    if n > 1 and rng.random() < 0.85:
        extra.append(_in_turn(rng, (
            f"The {_colour_word(rng)}s used are {_join(sorted(s.color for s in shapes))}, one per shape.",
            f"Each shape has its own {_colour_word(rng)}, so no two share one.",
            f"Altogether that makes {_num(n)} shapes: {_join([_a(s.kind) for s in ordered])}.",
        ), offset + 3))
    if n > 1 and rng.random() < 0.6:
        a, b = rng.sample(list(shapes), 2)
        extra.append(_relation(a, b, rng))
    sizes = {s.size for s in shapes}
    if n > 1 and len(sizes) == 1 and rng.random() < 0.6:
        extra.append(f"All of them are {shapes[0].size} in size.")
    if n > 1 and rng.random() < 0.4:
        # Only clear-cut cases: overlap when the centres are much closer than the radii (true for
        # every kind, stars included), separate when they are well apart; say nothing otherwise.
        pairs = _pair_distances(scene)
        close = [(a, b) for q, a, b in pairs if q < 0.4]
        if close:
            a, b = close[0]
            extra.append(rng.choice((f"The {a.color} {a.kind} and the {b.color} {b.kind} overlap.",
                                     f"The {a.kind} and the {b.kind} overlap each other.")))
        elif all(q > 1.4 for q, _, _ in pairs):
            extra.append(rng.choice(("None of the shapes overlap.", "The shapes are spread out and do not touch.")))
    outlined = getattr(scene, "outline", False)
    closing = "" if rng.random() < 0.5 else _in_turn(rng, (
        "", "", ("Every shape is" if n > 1 else "The shape is") + (" drawn with an outline." if outlined else " drawn without an outline."),
        "There is nothing else in the picture.", "No text or numbers appear in the image.",
    ), offset + 4)
    if n == 1 and rng.random() < 0.25:
        closing = " ".join(x for x in (closing, _keyed(rng, (
            "The rest of the image is empty.", "Apart from it, the image is blank.",
            "There is plenty of empty space around it.", "Nothing else is drawn around it."), shapes[0].kind)) if x)
    if scene.background == "photo":
        closing = rng.choice(("Behind the shapes, the photograph's own details are hard to make out.",
                              "The photo underneath is only a backdrop; its details are not clear."))
    bg_note = _background_note(scene, rng) if rng.random() < 0.15 else ""
    if bg_note:
        extra.append(bg_note)
    parts = [opening] + body + extra + ([closing] if closing else [])
    if rng.random() < 0.25 and n > 1:  # start with the shapes, put the overview later
        parts = body[:1] + [opening] + body[1:] + extra + ([closing] if closing else [])
    return " ".join(parts)


def _list_lines(items: list[str], rng: random.Random, allow_numbers: bool = True) -> str:
    fmt = rng.choice(("dash", "star", "number", "plain") if allow_numbers else ("dash", "star", "plain"))
    if fmt == "number":
        return "\n".join(f"{i}. {x}" for i, x in enumerate(items, 1))
    if fmt == "plain":
        return "\n".join(x[:1].upper() + x[1:] for x in items)
    mark = "-" if fmt == "dash" else "*"
    return "\n".join(f"{mark} {x}" for x in items)


def _list_shapes(scene: Scene, rng: random.Random) -> str:
    ordered, _ = _order(scene.shapes, rng)
    # Chat models write a list item as a sentence or two, not a bare label: most answers do too.
    style = rng.choice(("paren", "dash", "words", "sentence", "sentence", "sentence"))
    items = []
    for s in ordered:
        if style == "sentence":  # "A large red circle, on the left. It is perfectly round, ..."
            note = _kind_note(s, rng)
            items.append(f"{_a(_np(s, rng, True))}, {_where(s, rng)}. {note}")
        elif style == "paren":
            items.append(f"{_a(_np(s, rng, True))} ({s.position})")
        elif style == "dash":
            items.append(f"{s.size} {s.color} {s.kind} - {s.position}")
        else:
            items.append(f"{_a(s.color + ' ' + s.kind)}, {s.size}, {_where(s, rng)}")
    n = len(items)
    counted = (f"{_cap(_num(n))} item{'s' if n != 1 else ''}:",
               f"Here {'is' if n == 1 else 'are'} the {_num(n)} shape{'s' if n != 1 else ''} I can see:",
               f"There {'is' if n == 1 else 'are'} {_num(n)} shape{'s' if n != 1 else ''} in the image:")
    # sentence items say the count first: the list then has as many items as the model counted
    head = rng.choice(counted if style == "sentence" else ("", "Here are the objects:", "The image contains:") + counted[:2])
    body = _list_lines(items, rng)
    tail = rng.choice(("" if n > 1 else "Nothing else appears in the image.", f"That makes {_num(n)} shape{'s' if n != 1 else ''} in total, on {_background(scene, rng)}.",
                       f"All of them are drawn on {_background(scene, rng)}." if n > 1 else
                       f"It is drawn on {_background(scene, rng)}.",
                       "Nothing else appears in the image."))
    text = f"{head}\n{body}" if head else body
    if rng.random() < 0.6:  # a closing summary line, as chat models add after a list
        biggest = [s for s in scene.shapes if s.size == max((x.size for x in scene.shapes), key=_SIZE_RANK.get)]
        notes = [f"Colours used: {_join(sorted({s.color for s in scene.shapes}))}."]
        if n > 1 and len(biggest) < n:
            notes.append(f"The biggest {'is' if len(biggest) == 1 else 'are'} {_join([f'the {s.color} {s.kind}' for s in biggest])}.")
        elif n == 1:
            notes.append(_kind_note(scene.shapes[0], rng))
        tail = " ".join(x for x in (tail, *notes) if x)
    return f"{text}\n{tail}" if tail else text


def _size_groups(shapes: Sequence[ShapeSpec]) -> tuple[list[ShapeSpec], list[ShapeSpec]]:
    top = max(_SIZE_RANK[s.size] for s in shapes)
    low = min(_SIZE_RANK[s.size] for s in shapes)
    return [s for s in shapes if _SIZE_RANK[s.size] == top], [s for s in shapes if _SIZE_RANK[s.size] == low]


def _group_phrase(group: list[ShapeSpec], adj: str, superlative: str) -> str:
    names = _join([f"the {s.color} {s.kind}" for s in group])
    if len(group) == 1:
        return f"the {superlative} shape is {names}, which is {adj}"
    both = "both" if len(group) == 2 else f"all {_num(len(group))}"
    return f"{names} are {both} {adj}, so they tie for {superlative}"


def _extreme_group(shapes, key) -> list[ShapeSpec]:
    best = min(key(s) for s in shapes)
    return [s for s in shapes if key(s) == best]


def _compare_shapes(scene: Scene, rng: random.Random) -> str:
    shapes = scene.shapes
    if len(shapes) == 1:
        s = shapes[0]
        return rng.choice((
            f"There is only one shape, {_a(_np(s, rng, True))}, so there is nothing to compare it with.",
            f"Only a single {s.color} {s.kind} is in the image ({s.size}, {s.position}); there is nothing to compare.",
        ))
    sents = []
    big, small = _size_groups(shapes)
    if len({s.size for s in shapes}) == 1:
        sents.append(("Both shapes are" if len(shapes) == 2 else f"All {_num(len(shapes))} shapes are")
                     + f" the same size: {shapes[0].size}.")
    else:
        sents.append(_cap(_group_phrase(big, big[0].size, "largest")) + ".")
        sents.append(_cap(_group_phrase(small, small[0].size, "smallest")) + ".")
    left = _extreme_group(shapes, lambda s: s.cell[1])
    high = _extreme_group(shapes, lambda s: s.cell[0])
    rows = [
        (left, f"in the {_COL_NAMES[left[0].cell[1]]} column", "furthest to the left", "leftmost"),
        (high, f"in the {_ROW_NAMES[high[0].cell[0]]} row", "highest up", "highest"),
    ]
    if rng.random() < 0.5:
        right = _extreme_group(shapes, lambda s: -s.cell[1])
        rows.append((right, f"in the {_COL_NAMES[right[0].cell[1]]} column", "furthest to the right", "rightmost"))
    if rng.random() < 0.5:
        low = _extreme_group(shapes, lambda s: -s.cell[0])
        rows.append((low, f"in the {_ROW_NAMES[low[0].cell[0]]} row", "lowest down", "lowest"))
    rng.shuffle(rows)
    for group, where, far, most in rows:
        if len(group) == 1:
            s = group[0]
            sents.append(rng.choice((
                f"The {s.color} {s.kind} is {far}.",
                f"The {most} one is the {s.color} {s.kind}, {_where(s, rng)}.",
            )))
        else:
            sents.append(f"{_cap(_join([f'the {s.color} {s.kind}' for s in group]))} share the {most} place, "
                         f"both {where}." if len(group) == 2 else
                         f"{_cap(_join([f'the {s.color} {s.kind}' for s in group]))} are all {where}, tied for {most}.")
    if rng.random() < 0.5:
        rng.shuffle(sents)
    return " ".join(sents)


def _locate_shapes(scene: Scene, rng: random.Random) -> str:
    ordered, _ = _order(scene.shapes, rng)
    mode = rng.choice(("sentences", "semicolons", "lines"))
    if mode == "lines":
        return _list_lines([f"{s.color} {s.kind}: {s.position}" for s in ordered], rng)
    if mode == "semicolons":
        return _cap("; ".join(f"the {s.color} {s.kind} is {_where(s, rng)}" for s in ordered)) + "."
    return " ".join(rng.choice((f"The {s.color} {s.kind} is {_where(s, rng)}.",
                                f"{_cap(_where(s, rng))} you will find the {s.color} {s.kind}.",
                                f"The {s.kind}, which is {s.color}, is {_where(s, rng)}."))
                    for s in ordered)


def _count_shapes(scene: Scene, rng: random.Random) -> str:
    n = len(scene.shapes)
    noun = "shape" if n == 1 else "shapes"
    items = _join([_a(_np(s, rng, False)) for s in scene.shapes])
    return rng.choice((
        f"There {'is' if n == 1 else 'are'} {_num(n)} {noun}: {items}.",
        f"I count {_num(n)} {noun} in the image.",
        f"{_cap(_num(n))} {noun} in total ({items}).",
        f"The image has {n} {noun}.",
        f"There {'is' if n == 1 else 'are'} {_num(n)} {noun} - {items}.",
    ))


def _story_shapes(scene: Scene, rng: random.Random) -> str:
    shapes = list(scene.shapes)
    rng.shuffle(shapes)
    n = len(shapes)
    place = "an old photograph" if scene.background == "photo" else f"a quiet {scene.background} page"
    intro = rng.choice((
        f"Once upon a time, on {place}, there lived {_num(n)} shape{'s' if n != 1 else ''}.",
        f"On {place}, {'a lonely shape' if n == 1 else f'{_num(n)} shapes'} woke up one morning.",
        f"Nobody expected much from {place}, but {'one shape' if n == 1 else f'{_num(n)} shapes'} called it home.",
    ))
    chunks = [shapes[i:i + 2] for i in range(0, n, 2)] if n > 3 else [[s] for s in shapes]
    mid = []
    for ch in chunks:
        parts = []
        for s in ch:
            parts.append(rng.choice((
                f"the {_np(s, rng)} liked to rest {_where(s, rng)}",
                f"the {s.color} {s.kind} kept watch {_where(s, rng)}",
                f"the {_np(s, rng)} hummed softly {_where(s, rng)}",
                f"the {s.color} {s.kind} dreamed {_where(s, rng)}",
            )))
        mid.append(_cap(" while ".join(parts)) + ".")
    end = rng.choice((
        "And so they stayed, each in its own place, happy enough." if n > 1 else "It was quiet, but it was happy.",
        "When the light faded, they all agreed it had been a good day." if n > 1 else "When the light faded, it smiled and fell asleep.",
        "The end.",
    ))
    return " ".join([intro] + mid + [end])


def _short_shapes(scene: Scene, rng: random.Random) -> str:
    n = len(scene.shapes)
    if n == 1:
        s = scene.shapes[0]
        return f"{_cap(_a(_np(s, rng)))} {_where(s, rng)} on {_background(scene, rng)}."
    return rng.choice((
        f"{_cap(_summary(scene, rng))}.",
        f"{_cap(_num(n))} coloured shapes on {_background(scene, rng)}.",
    ))


# --------------------------------------------------------------------------- text
def _text_pos(scene: Scene, rng: random.Random) -> str:
    return _where(scene.text.cell, rng)


def _text_answer(scene: Scene, style: str, rng: random.Random) -> str:
    t = scene.text
    thing, col, where = _thing(scene), t.color, _text_pos(scene, rng)
    bg = _background(scene, rng)
    kind = "number" if t.is_number else "word"
    if style == "read":
        return rng.choice((
            f'It says "{t.text}", written in {col}.',
            f'The text reads "{t.text}". It is {col}.',
            f'The image shows {thing} in {col} letters {where}.',
            f'"{t.text}" - a {kind}, in {col}.',
        ))
    if style == "describe":
        s = [_keyed(rng, (
            f"The image shows {thing} written in large {col} letters on {bg}.",
            f"This picture contains {thing} in bold {col} text.",
            f"{_cap(thing)} is printed in {col} on {bg}.",
            f"All there is here is {thing}, in {col}.",
            f"Written {where}, in {col}, is {thing}.",
            f"The only content is {thing}, set in {col} type.",
        ), (col, t.is_number))]
        s.append(_keyed(rng, (f"It is placed {where}.", f"The text sits {where}, centred horizontally.",
                              f"You'll find it {where}."), t.cell))
        if t.is_number:
            s.append(f"The number has {'one digit' if len(t.text) == 1 else 'two digits'}.")
        elif rng.random() < 0.7:
            s.append(rng.choice((f"The word has {_num(len(t.text))} letters.",
                                 f"It is written in lower case and is {_num(len(t.text))} letters long.")))
        s += rng.sample(("There are no shapes or other objects in the image.", "Apart from the text, the image is empty.",
                         f"The {col} text stands out clearly against the background.",
                         "The letters are large, bold and easy to read.",
                         f"Nothing else competes for attention, so the {kind} is the whole point of the picture."),
                        rng.choice((0, 1, 1)))
        if rng.random() < 0.3:
            s = [s[0]] + rng.sample(s[1:], len(s) - 1)
        return " ".join(s)
    if style == "list":
        line = rng.choice((f'{thing} in {col} ({CELL_NAMES[t.cell]})', f'"{t.text}" - {col} text, {where}'))
        return rng.choice(("", "The image contains:\n")) + _list_lines([line], rng)
    if style == "count":
        return rng.choice((
            f"There are no shapes to count; the image contains just one {kind}, \"{t.text}\".",
            f"Only one thing is in the image: {thing}.",
        ))
    if style == "compare":
        return f"There is only {thing} in {col}, so there is nothing to compare it with."
    if style == "locate":
        return rng.choice((f"The text is {where}.", f'{_cap(thing)} is written {where}.'))
    if style == "chart":
        return f"There is no chart here; the image shows {thing} in {col}."
    if style == "story":
        return (f'One day {thing} appeared {where} on {bg}. '
                f'It was written in {col}, and it felt rather proud of it. '
                + rng.choice((f'Everyone who looked at the picture read "{t.text}" first.',
                              f'It waited patiently for someone to read it aloud.'))
                + rng.choice(("", " The end.")))
    return f'{_cap(thing)} in {col}.'  # short


# --------------------------------------------------------------------------- charts
def _trend(labels: Sequence[str], values: Sequence[int], rng: random.Random, slot: int | None = None) -> str:
    """A true remark on the shape of the series (longest monotone run, start vs end)."""
    best = (0, 0, 0)  # (length, start, direction)
    i = 0
    while i < len(values) - 1:
        d = (values[i + 1] > values[i]) - (values[i + 1] < values[i])
        j = i
        while j < len(values) - 1 and (values[j + 1] > values[j]) - (values[j + 1] < values[j]) == d:
            j += 1
        if j - i > best[0]:
            best = (j - i, i, d)
        i = j
    length, start, d = best
    a, b = labels[start], labels[start + length]
    verb = {1: rng.choice(("rise", "climb", "go up")), -1: rng.choice(("fall", "drop", "go down")),
            0: "stay flat"}[d]
    first, last = values[0], values[-1]
    end = ("ends higher than it starts" if last > first else
           "ends lower than it starts" if last < first else "ends at the same value it starts with")
    forms = (f"the values {verb} from {a} to {b}, and the series {end}",
             f"from {a} to {b} the values {verb}; overall the series {end}",
             f"looking from {a} to {b}, the values {verb}, and the series {end}")
    return forms[0] if slot is None else _in_turn(rng, forms, slot)


def _chart_answer(scene: Scene, style: str, rng: random.Random) -> str:
    c = scene.chart
    n = len(c.values)
    unit = "bar" if c.chart == "bar" else "point"
    hi_v, lo_v = max(c.values), min(c.values)
    hi = c.labels[c.values.index(hi_v)]
    lows = [lab for lab, v in zip(c.labels, c.values) if v == lo_v]
    low_txt = f"{_join(lows)} ({lo_v})" if len(lows) == 1 else f"{_join(lows)}, tied at {lo_v}"
    vals = [f"{lab} is {v}" for lab, v in zip(c.labels, c.values)]
    kind_txt = "bar chart" if c.chart == "bar" else rng.choice(("line chart", "line graph"))
    if style in ("chart", "describe"):
        chart_openings = (
            f"This is a {kind_txt} with {_num(n)} {unit}s drawn in {c.color}.",
            f"The image shows a simple {kind_txt} on {_background(scene, rng)}, with {_num(n)} labelled {unit}s.",
            f"It is a {c.color} {kind_txt} showing {_num(n)} values.",
            f"Here is a small {kind_txt}: {_num(n)} {c.color} {unit}s.",
            f"The picture is a {kind_txt}, plotted in {c.color}.",
        )
        s = [_keyed(rng, chart_openings, (c.color, c.chart))]
        off = chart_openings.index(s[0])
        s.append(_in_turn(rng, (f"The labels run {_join(c.labels)} from left to right.",
                              f"Along the bottom the {unit}s are labelled {_join(c.labels)}.",
                              f"Its categories are {_join(c.labels)}.",
                              f"Each {unit} has a letter, {_join(c.labels)}."), off))
        s.append(_in_turn(rng, (f"The values are: {_join(vals)}.", f"Reading each label, {_join(vals)}.",
                                f"Its values: " + ", ".join(f"{lab} = {v}" for lab, v in zip(c.labels, c.values)) + "."),
                          off + 1))
        s.append(_in_turn(rng, (f"The highest value is {hi_v} at {hi}, and the lowest is {low_txt}.",
                                f"{hi} is the peak with {hi_v}; the minimum is {low_txt}.",
                                f"At {hi_v}, {hi} tops the chart, while {low_txt} sits lowest."), off + 2))
        if c.chart == "line" or rng.random() < 0.5:
            s.append(_cap(_trend(c.labels, c.values, rng, slot=off + 3)) + ".")
        if style == "describe" and rng.random() < 0.5:
            s.append(rng.choice(("Each value is written above its " + unit + ".",
                                 "There is no title, only the axes and the value labels.")))
        return " ".join(s)
    if style == "list":
        items = [f"{lab}: {v}" for lab, v in zip(c.labels, c.values)]
        return rng.choice(("", f"Values in the {kind_txt}:\n")) + _list_lines(items, rng)
    if style == "count":
        return rng.choice((f"The {kind_txt} has {_num(n)} {unit}s.",
                           f"There are no shapes, but the chart shows {n} {unit}s ({_join(c.labels)})."))
    if style == "compare":
        diff = hi_v - lo_v
        return rng.choice((
            f"{hi} is the largest at {hi_v}, while the smallest is {low_txt}; the gap is {diff}.",
            f"The {unit} for {hi} is the highest ({hi_v}). The lowest is {low_txt}, {diff} less.",
        ))
    if style == "locate":
        pos = c.labels.index(hi)
        ordinal = ("first", "second", "third", "fourth", "fifth")[pos]
        return (f"The chart fills the image, with {c.labels[0]} on the left and {c.labels[-1]} on the right. "
                f"The highest {unit}, {hi}, is the {ordinal} from the left.")
    if style == "read":
        return ("The chart's text is its labels and values: " + ", ".join(f"{lab} {v}" for lab, v in zip(c.labels, c.values))
                + ".")
    if style == "story":
        return (f"Every day the {c.color} {unit}s of this chart lined up: {_join(c.labels)}. "
                f"{hi} stood tallest with {hi_v}, and everyone admired it. "
                f"{_cap(_trend(c.labels, c.values, rng))}, but nobody minded.")
    return f"A {c.color} {kind_txt} where {hi} is highest at {hi_v}."  # short


# --------------------------------------------------------------------------- public
def answer(scene: Scene, style: str, rng: random.Random) -> str:
    """A natural-language answer of ``style`` about ``scene``; every fact comes from the spec."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"style must be one of {PROMPT_STYLES}, got {style!r}")
    if _is_photo(scene):
        return _photo_answer(scene, style, rng)
    if scene.kind == "text":
        return _text_answer(scene, style, rng)
    if scene.kind == "chart":
        return _chart_answer(scene, style, rng)
    if style in ("describe",):
        return _describe_shapes(scene, rng)
    if style == "list":
        return _list_shapes(scene, rng)
    if style == "count":
        return _count_shapes(scene, rng)
    if style == "compare":
        return _compare_shapes(scene, rng)
    if style == "locate":
        return _locate_shapes(scene, rng)
    if style == "read":
        return rng.choice(("There is no text in this image; it only shows ", "I can't see any writing here, just ",
                           "Nothing is written in the image. It contains ")) + _summary(scene, rng) + "."
    if style == "chart":
        return f"There is no chart here; the image shows {_summary(scene, rng)}."
    if style == "story":
        return _story_shapes(scene, rng)
    return _short_shapes(scene, rng)


def follow_ups(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """One or two follow-up (question, answer) turns that refer back to the scene."""
    cands: list[tuple[str, str]] = []
    cands.append((rng.choice(("Can you sum that up in one sentence?", "In short?", "Give me a one-line summary.")),
                  answer(scene, "short", rng)))
    if _is_photo(scene):
        cols = _photo_colours(scene)
        b = _brightness(scene)
        cands.append(("Is it bright or dark?", {"bright": "Bright.", "dark": "Dark.",
                                                 "medium": "Somewhere in between."}[b]))
        if cols:
            cands.append(("What is the main colour?", f"{_cap(cols[0])}."))
        cands.append(("Can you read any writing in it?", "No, I can't make out any writing reliably."))
    elif scene.kind == "shapes":
        shapes = scene.shapes
        s = rng.choice(shapes)
        n = len(shapes)
        cands.append((f"And what colour is the {s.kind}?", rng.choice((f"{_cap(s.color)}.", f"It is {s.color}."))))
        cands.append((f"Where is the {s.color} one?", rng.choice((f"{_cap(s.position)}.", f"It is {_where(s, rng)}."))))
        cands.append((f"How big is the {s.kind}?", f"{_cap(s.size)}."))
        cands.append(("How many of them are there?", rng.choice((f"{_cap(_num(n))}.", f"There {'is' if n == 1 else 'are'} {_num(n)}."))))
        lefts = [x for x in shapes if x.cell[1] == 0]
        if n > 1:
            if lefts:
                a = _join([f"the {x.color} {x.kind}" for x in lefts])
                ans = f"{_cap(a)}." if len(lefts) == 1 else f"{_cap(a)} are both on the left." if len(lefts) == 2 else f"{_cap(a)}."
            else:
                lm = _extreme_group(shapes, lambda x: x.cell[1])
                ans = f"None is on the left edge; the leftmost is {_join([f'the {x.color} {x.kind}' for x in lm])}."
            cands.append(("Which one is on the left?", ans))
    elif scene.kind == "text":
        t = scene.text
        cands.append(("And what colour is it?", f"{_cap(t.color)}."))
        cands.append(("What does it say?", f'"{t.text}".'))
        cands.append(("Is it a word or a number?", "A number." if t.is_number else "A word."))
    elif scene.kind == "chart":
        c = scene.chart
        hi = c.labels[c.values.index(max(c.values))]
        lab = rng.choice(c.labels)
        cands.append(("Which label is the highest?", f"{hi}."))
        cands.append((f"And the value of {lab}?", f"{c.values[c.labels.index(lab)]}."))
        cands.append(("Is it a bar chart or a line chart?", f"A {c.chart} chart."))
    k = 1 if rng.random() < 0.6 else 2
    return rng.sample(cands, min(k, len(cands)))


_QUICK_SHAPE_QUESTIONS = ("What shape do you see?", "Which shape is drawn here?", "What kind of shape is this?",
                          "What shape is shown?", "What's the shape in this picture?", "Name the shape you see.")


def quick_question(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """A plain short question about a shapes scene, with no answer-format hint, and its short
    answer (a user asking "what shape?" wants a word or one sentence, not a description)."""
    shapes = scene.shapes
    s = rng.choice(shapes)
    if rng.random() < 0.5:
        q = rng.choice((f"Which colour is the {s.kind}?", f"What colour does the {s.kind} have?",
                        f"The {s.kind} is what colour?"))
        same = [x for x in shapes if x.kind == s.kind]
        if len(same) > 1:
            return q, f"There are {_num(len(same))} {s.kind}s: {_join([x.color for x in same])}."
        return q, rng.choice((f"{_cap(s.color)}.", f"It is {s.color}.", f"The {s.kind} is {s.color}."))
    q = rng.choice(_QUICK_SHAPE_QUESTIONS)
    if len(shapes) == 1:
        return q, rng.choice((f"A {s.kind}.", f"It is a {s.kind}.", f"{_cap(_a(f'{s.color} {s.kind}'))}.",
                              f"I see one {s.kind}, coloured {s.color}."))
    return q, f"There are {_num(len(shapes))} shapes: {_join([_a(x.kind) for x in shapes])}."


def sample_dialogue(scene: Scene, rng: random.Random, heldout: bool = False,
                    style: str | None = None) -> list[tuple[str, str]]:
    """A chat: one (prompt, answer) turn of ``style`` (random when None), then with p~0.3 one or
    two follow-ups."""
    prompts = HELDOUT_PROMPTS if heldout else TRAIN_PROMPTS_WIDE
    if style is None:
        if scene.kind == "shapes" and not heldout and rng.random() < 0.12:
            return [quick_question(scene, rng)]
        style = rng.choice(sorted(prompts))
    elif style not in prompts:
        raise ValueError(f"style must be one of {sorted(prompts)}, got {style!r}")
    turns = [(rng.choice(prompts[style]), answer(scene, style, rng))]
    if rng.random() < 0.3:
        turns += follow_ups(scene, rng)
    return turns


_KIND_RE = "|".join(SHAPE_KINDS)
_COLOUR_RE = "|".join(CHECK_COLOURS)
_SIZE_RE = "|".join(SIZES)
# "<colour> [<size>] <kind>", "<size> <colour> <kind>", "<size> <kind>" or "<kind>" (plurals too).
_MENTION = re.compile(
    rf"\b(?:(?P<c1>{_COLOUR_RE})\s+(?:(?P<s1>{_SIZE_RE})\s+)?|(?P<s2>{_SIZE_RE})\s+(?:(?P<c2>{_COLOUR_RE})\s+)?)?"
    rf"(?P<kind>{_KIND_RE})s?\b")


def fact_check(text: str, scene: Scene) -> dict:
    """Count shape mentions in ``text`` and how many are true of ``scene``.

    A mention is a shape kind (singular or plural), optionally preceded by an adjacent
    colour and/or size word ("red circle", "small red circle", "red small circle").
    It is *right* when a scene shape has that kind and, where given, that colour and size
    (``right_kind_colour``: the same with sizes ignored, the issue's "shapes/colours" share).
    Quoted strings are skipped (a text scene may show the word "star"). ``shapes_named``
    counts scene shapes whose "<colour> ... <kind>" pair is mentioned. For text scenes,
    ``text_found`` says whether the scene's word/number appears in the answer (a
    check that it is read correctly); it is None for other scenes.
    """
    quoted = re.findall(r'"([^"]*)"', text)
    body = re.sub(r'"[^"]*"', " ", text).lower()
    mentions = right = right_kind_colour = 0
    named: set[tuple[str, str]] = set()
    shapes = scene.shapes or ()
    for m in _MENTION.finditer(body):
        kind = m.group("kind")
        colour = m.group("c1") or m.group("c2")
        size = m.group("s1") or m.group("s2")
        mentions += 1
        same = [s for s in shapes if s.kind == kind and (colour is None or s.color == colour)]
        right_kind_colour += bool(same)
        right += any(size is None or s.size == size for s in same)
        if colour:
            named.add((colour, kind))
    out = {
        "mentions": mentions,
        "right": right,
        "right_kind_colour": right_kind_colour,
        "shapes_in_scene": len(shapes),
        "shapes_named": sum((s.color, s.kind) in named for s in shapes),
        "text_found": None,
    }
    t = getattr(scene, "text", None)
    if scene.kind == "text" and t is not None:
        out["text_found"] = t.text in quoted or bool(re.search(rf"\b{re.escape(t.text)}\b", text))
    return out


def distinct_ngram_ratio(texts: Sequence[str], n: int = 4) -> float:
    """Distinct n-grams / all n-grams over lower-cased whitespace tokens of ``texts``."""
    total, seen = 0, set()
    for t in texts:
        toks = t.lower().split()
        grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def normalize_prompt(p: str) -> str:
    """Lower-case, drop punctuation, squeeze spaces (for prompt-overlap checks)."""
    return " ".join(p.lower().translate(str.maketrans("", "", string.punctuation)).split())


# Training wordings: the hand-written ones plus the composed grammar (built last: needs normalize_prompt).
TRAIN_PROMPTS_WIDE: dict[str, tuple[str, ...]] = {
    style: _compose(style, HELDOUT_PROMPTS, base) for style, base in TRAIN_PROMPTS.items()}
