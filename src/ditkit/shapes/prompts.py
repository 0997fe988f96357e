"""The words of the shapes captions, and what a prompt asks that those captions never had.

A word encoder (`ditkit.models.text_encoder.WordTextEncoder`) reads a fixed vocabulary; the shapes
models are trained with every word of their captions, `shapes_vocabulary` for the images ("a small
red triangle on a green background") and `video_vocabulary` for the moving-shape clips ("a red
circle moving left on a blue background"). The vocabulary is saved with the encoder
(``vocab.json``), so a trained model reads exactly the words it was trained with.

`prompt_notes` lists what a user's prompt has that no training caption had (unknown words, a
missing size word); the command line prints these notes before it generates.
"""

from __future__ import annotations

import re

from .data import CLASSES, COLOR_NAMES, SIZE_WORDS

MOTION_WORDS = ("an", "moving", "left", "right", "up", "down", "bouncing", "rotating", "turning")


def shapes_vocabulary() -> tuple[str, ...]:
    """Every word the shapes dataset's captions use ("a small red triangle on a green background")."""
    return ("a", "on", "background", *(w for _, w in SIZE_WORDS), *COLOR_NAMES, *CLASSES)


def video_vocabulary() -> tuple[str, ...]:
    """Every word of the moving-shapes captions (`ditkit.shapes.moving`): the image words plus motions."""
    return (*shapes_vocabulary(), *MOTION_WORDS)


def prompt_notes(prompt: str, vocab: tuple[str, ...] | None = None, size_word: bool = True) -> list[str]:
    """What a prompt asks of a model trained on these captions that its captions never had: words outside
    ``vocab`` (the word encoder reads them as <unk>) and, with ``size_word`` and a vocabulary that has the
    size words, a missing size word (every image caption names one; without it the bundled text-to-image
    model draws off-caption shapes and backgrounds). One line per finding, empty when the prompt reads
    like a training caption."""
    words = re.findall(r"[a-z0-9]+", prompt.lower())
    sizes = tuple(w for _, w in SIZE_WORDS)
    notes = []
    if vocab is not None:
        unknown = sorted({w for w in words if w not in vocab})
        if unknown:
            notes.append(f"words the model's text encoder does not know (read as <unk>): {', '.join(unknown)}")
    if size_word and (vocab is None or set(sizes) <= set(vocab)) and not set(sizes) & set(words):
        notes.append(f"no size word ({', '.join(sizes)}): the model's captions always carry one, "
                     f"e.g. \"a small red circle on a blue background\"")
    return notes
