"""The recipe axis of an experiment (`recipes: [basic, strong]`): every setting, selection and
claim once per training recipe (lipkit.config_layers.with_recipe: `recipe: strong` lays the
strong-recipe layer under the run's settings).

The first recipe keeps the names as written. For each further recipe R, a setting S becomes also
`S@R` (label "S [R]", overrides `recipe=R` first), a selection its `@R` twin over the twins of its
candidates, and a claim that names no `@` setting its twin `ID@R` over the twins, on the datasets
that train under R (a dataset's `recipes:`, default all; one that trains under no other recipe
keeps its claims single). A claim that names `@` settings itself (the strong recipe against the
basic one) is left as written.
"""
from __future__ import annotations

import dataclasses

from lipkit.typed_config import ConfigError

SEP = "@"


def twin(name: str, recipe: str) -> str:
    return f"{name}{SEP}{recipe}"


def recipe_of(name: str) -> str | None:
    """The further recipe a setting or selection twin trains under (None: the first recipe)."""
    return name.rpartition(SEP)[2] if SEP in name else None


def expand_recipes(spec) -> None:
    """Add the twins of every further recipe to `spec` (an ExperimentSpec), in place."""
    if not spec.recipes:
        return
    if len(set(spec.recipes)) != len(spec.recipes):
        raise ConfigError(f"recipes: each recipe once, got {spec.recipes}")
    for d in spec.datasets:
        unknown = [r for r in d.recipes if r not in spec.recipes]
        if unknown:
            raise ConfigError(f"datasets.{d.name}.recipes: not among the experiment's recipes {spec.recipes}: {unknown}")
        for rb in d.recipe_batch_sizes:
            if rb.recipe not in spec.recipes[1:] or rb.recipe not in (d.recipes or spec.recipes):
                raise ConfigError(f"datasets.{d.name}.recipe_batch_sizes: '{rb.recipe}' is not a further recipe "
                                  f"this dataset trains under ({[r for r in (d.recipes or spec.recipes)][1:]})")
            if not rb.batch_sizes or min(rb.batch_sizes) < 1:
                raise ConfigError(f"datasets.{d.name}.recipe_batch_sizes.{rb.recipe}: list positive batch sizes, "
                                  f"got {rb.batch_sizes}")
    first, further = spec.recipes[0], spec.recipes[1:]
    base_settings = list(spec.settings)
    for recipe in further:
        for s in base_settings:
            spec.settings.append(dataclasses.replace(
                s, name=twin(s.name, recipe), label=f"{s.title} [{recipe}]", set=[f"recipe={recipe}", *s.set]))
        for sel in list(spec.selections):
            if SEP not in sel.name:
                spec.selections.append(dataclasses.replace(
                    sel, name=twin(sel.name, recipe), label=f"{sel.title} [{recipe}]",
                    candidates=[twin(c, recipe) for c in sel.candidates]))
    for d in spec.datasets:
        trains_under = d.recipes or spec.recipes
        names = d.settings or [s.name for s in base_settings]
        d.settings = [n for n in names if first in trains_under] + [
            twin(n, r) for r in further if r in trains_under for n in names]
    claims = []
    for c in spec.claims:
        if any(SEP in n for n in (*c.a, *c.b)):
            claims.append(c)
            continue
        claims.append(dataclasses.replace(c, text=f"{c.text} (under the {first} recipe)"))
        for recipe in further:
            datasets = [d.name for d in spec.datasets
                        if (not c.datasets or d.name in c.datasets) and recipe in (d.recipes or spec.recipes)
                        and (c.kind != "gap_grows_as_batch_shrinks"
                             or len(spec.batch_sizes_of(d, twin("", recipe))) > 1)]
            if datasets:
                claims.append(dataclasses.replace(
                    c, id=twin(c.id, recipe), text=f"{c.text} (under the {recipe} recipe)",
                    a=[twin(n, recipe) for n in c.a], b=[twin(n, recipe) for n in c.b], datasets=datasets))
    spec.claims = claims
