"""Parametric facts, written for this project: well-known capitals, languages and chemical symbols
asked without any context. Choices: the right answer and three others of the same category (drawn
with a fixed seed), so the prompt never contains the answer. Only the items the unmodified model
ranks right count in the experiments (they say how many)."""

from __future__ import annotations

import random

from mvjax.data.tasks import world
from mvjax.data.tasks.base import Item, Task

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Russia": "Moscow", "England": "London", "China": "Beijing", "Egypt": "Cairo",
    "Greece": "Athens", "Portugal": "Lisbon", "Austria": "Vienna", "Ireland": "Dublin",
    "Norway": "Oslo", "Sweden": "Stockholm", "Poland": "Warsaw", "Hungary": "Budapest",
    "Thailand": "Bangkok", "Kenya": "Nairobi", "Argentina": "Buenos Aires", "Peru": "Lima",
    "Canada": "Ottawa", "Australia": "Canberra", "India": "New Delhi", "Turkey": "Ankara",
    "South Korea": "Seoul", "Denmark": "Copenhagen", "Finland": "Helsinki", "Cuba": "Havana",
    "Belgium": "Brussels",
}
LANGUAGES = {
    "France": "French", "Germany": "German", "Italy": "Italian", "Spain": "Spanish",
    "Japan": "Japanese", "Russia": "Russian", "Brazil": "Portuguese", "China": "Chinese",
    "Greece": "Greek", "Poland": "Polish", "Turkey": "Turkish", "Sweden": "Swedish",
    "Mexico": "Spanish", "Netherlands": "Dutch", "Korea": "Korean",
}
SYMBOLS = {
    "gold": "Au", "silver": "Ag", "iron": "Fe", "oxygen": "O", "hydrogen": "H", "carbon": "C",
    "sodium": "Na", "helium": "He", "copper": "Cu", "lead": "Pb", "nitrogen": "N",
    "potassium": "K", "calcium": "Ca", "mercury": "Hg", "zinc": "Zn",
}
CATEGORIES = {
    "capital": (CAPITALS, "The capital of {} is"),
    "language": (LANGUAGES, "The official language of {} is"),
    "symbol": (SYMBOLS, "The chemical symbol of {} is"),
}


def table_task(name: str, categories: dict, description: str, seed: int = 0) -> Task:
    """A parametric task from {category: ({subject: answer}, prompt template)}: per item the
    answer and three other answers of the same category (seeded), so the prompt never holds it."""
    rng = random.Random(seed)
    items = []
    for table, template in categories.values():
        answers = sorted(set(table.values()))
        for subject, answer in table.items():
            others = rng.sample([a for a in answers if a != answer], 3)
            choices = [" " + a for a in [answer, *others]]
            rng.shuffle(choices)
            items.append(Item(template.format(subject), tuple(choices), " " + answer, " " + answer))
    return Task(name, "parametric", tuple(items), f"{len(items)} {description}, no context; 4 choices")


def facts_task(seed: int = 0) -> Task:
    return table_task("facts", CATEGORIES, "capitals / languages / chemical symbols", seed)


def world_task(seed: int = 0) -> Task:
    """Capitals, countries of cities, languages and continents (``world``): 224 items."""
    return table_task("world", world.CATEGORIES, "capitals / countries of cities / languages / "
                      "continents", seed)
