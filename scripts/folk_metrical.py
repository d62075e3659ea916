"""The folk task's metrical position in plain Python: where each token of a tune falls in
its bar, the structure a qd policy of the folk task embeds beside every token (the
`structure` of its config, `folk-metrical-1`). It is `folk/src/metrical.rs` written
again, and gives the same feature ids (`qd export`'s test compares the logits).

    import json, qd_model, folk_metrical
    config = json.load(open("exported/config.json"))
    m = folk_metrical.Metrical(json.load(open("exported/vocab.json")), config["generatable"])
    ids = [[5, 17, config["sep"], 40, 41]]                   # [prompt] <sep> [tune]
    features = m.batch(ids, config["sep"])                   # [B, T, 4], torch.long
    logits, _ = model(torch.tensor(ids), valid, None, features)

Feature ids after each token (0 for the prompt's positions): the onset of the next note
within the bar and what remains of the bar (quarters of an eighth), the beat class with
whether a note waits for its duration token, and bars since the section began.
"""

import math
from fractions import Fraction

import torch

NAME = "folk-metrical-1"
PER_TOKEN = 4
QUANTUM, CAP, MAX_BARS = 4, 64, 15
POSITION = 1
REMAINING = POSITION + 2 + CAP
BEAT = REMAINING + 3 + CAP
BAR = BEAT + 9
IDS = BAR + 2 + MAX_BARS
BARS = {"|": False, "||": True, "|]": True, "[|": True, "|:": True, ":|": True, "::": True}


def meter_of(text):
    """(bar length, beat length) in eighths of an `M:` value."""
    n, d = {"C": (4, 4), "C|": (2, 2)}.get(text) or tuple(int(x) for x in text.split("/"))
    note = Fraction(8, d)
    compound = n % 3 == 0 and n > 3
    return n * note, note * 3 if compound else note


def action(text):
    """What a tune token does to the position: (kind, value)."""
    if text.startswith("M:"):
        return "meter", meter_of(text[2:])
    if text.startswith("K:") or text == "-":
        return "commit", None
    if text in BARS:
        return "bar", BARS[text]
    if text.startswith("("):
        p, q, r = (int(x) for x in text[1:].split(":"))
        return "tuplet", (p, q, r)
    if text.startswith("[") and text[1:].isdigit():
        return "commit", None
    if text[0].isdigit() or text[0] == "/":
        n, _, q = text.partition("/")
        return "dur", Fraction(int(n or 1), int(q) if q else 1)
    return "note", None  # a pitch or `z`


class Cursor:
    def __init__(self, actions):
        self.actions = actions
        self.meter = None
        self.position = Fraction(0)
        self.waiting = None
        self.tuplet = None
        self.bars = 0

    def commit(self):
        if self.waiting is not None:
            self.position += self.waiting
            self.waiting = None

    def read(self, token_id):
        kind, value = self.actions.get(token_id, ("commit", None))
        if kind == "note":
            self.commit()
            scale = Fraction(1)
            if self.tuplet is not None:
                scale, left = self.tuplet
                self.tuplet = (scale, left - 1) if left > 1 else None
            self.waiting = scale
        elif kind == "dur":
            if self.waiting is not None:
                self.position += self.waiting * value
                self.waiting = None
        elif kind == "tuplet":
            self.commit()
            p, q, r = value
            if p > 0 and q > 0 and r > 0:
                self.tuplet = (Fraction(q, p), r)
        elif kind == "bar":
            self.commit()
            if value:
                self.bars = 0
            elif self.position > 0:
                self.bars += 1
            self.position = Fraction(0)
        elif kind == "meter":
            self.commit()
            self.meter = value
        else:
            self.commit()

    def features(self):
        if self.meter is None:
            return [POSITION, REMAINING, BEAT, BAR]
        bar_len, beat = self.meter

        def quanta(d):
            return 0 if d == 0 else max(1, min(CAP, math.floor(d * QUANTUM)))

        remaining = bar_len - self.position
        if self.position == 0:
            beat_class = 0
        elif (self.position / beat).denominator == 1:
            beat_class = 1
        elif (self.position * 2).denominator == 1:
            beat_class = 2
        else:
            beat_class = 3
        return [
            POSITION + 1 + quanta(self.position),
            REMAINING + 1 if remaining < 0 else REMAINING + 2 + quanta(remaining),
            BEAT + 1 + beat_class + (4 if self.waiting is not None else 0),
            BAR + 1 + min(self.bars, MAX_BARS),
        ]


class Metrical:
    """The structure over a vocabulary: `vocab` is every id's text (`vocab.json`),
    `generatable` the ids a sample may hold (`config.json`; `<eos>` among them)."""

    def __init__(self, vocab, generatable):
        self.actions = {i: action(vocab[i]) for i in generatable if not vocab[i].startswith("<")}

    def start(self):
        return Cursor(self.actions)

    def row(self, ids, sep):
        """Features of one row `[pad…] [prompt] <sep> [tune]`: 0 up to `<sep>`."""
        out, cursor = [], None
        for i in ids:
            if cursor is None:
                if i == sep:
                    cursor = self.start()
                    out.append(cursor.features())
                else:
                    out.append([0] * PER_TOKEN)
            else:
                cursor.read(i)
                out.append(cursor.features())
        return out

    def batch(self, rows, sep):
        """`[B, T, 4]` features of equally long id rows (padding before a prompt is 0; the
        features of padding after a tune do not matter)."""
        return torch.tensor([self.row(r, sep) for r in rows], dtype=torch.long)
