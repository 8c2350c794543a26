"""The studies beside the main one: the profile's methods on another CLIP (``backbones:``) and
under another protocol (``protocols:``).

A variant is a profile derived from the main one (:meth:`~vptlib.study.profile.Profile.variant`):
the same data, seeds, tuning seed and reference, its own model or its own protocol, and its
runs under ``<runs>/<profile>-<kind>-<name>/``. Its methods run exactly as an experiment page
runs them (:func:`vptlib.study.tuning.run_method`: the grid tuned on validation under the
"validated" protocol, none under "fixed", then every seed), so its runs are ordinary runs,
reused when finished by the same code and resumed when interrupted, and the Results page's
tables and paired comparisons read them as they read the main ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from vptlib.methods import METHODS
from vptlib.models.hub import is_hub_id

from .profile import Profile
from .protocols import PROTOCOLS, VARIANT_KINDS
from .tuning import MethodRuns, run_method


@dataclass(frozen=True)
class Variant:
    kind: str  # "backbone" or "protocol"
    name: str  # the backbone's name in the profile, or the protocol
    profile: Profile  # the derived profile its runs follow
    methods: tuple[str, ...]  # in the registry's order

    @property
    def label(self) -> str:
        """How tables name it: the backbone's name and model, or the protocol."""
        if self.kind == "protocol":
            return f"{self.name} protocol"
        return f"{self.name} ({model_label(self.profile.model)})"


def model_label(model: str) -> str:
    """A model as a column header: a hub id whole, a local folder by its last part."""
    return model if is_hub_id(model) else model.rstrip("/").rsplit("/", 1)[-1]


def main_label(profile: Profile, kind: str) -> str:
    """The main study's column beside a variant of ``kind``: its model, or its protocol."""
    return f"{profile.protocol} protocol" if kind == "protocol" else f"main ({model_label(profile.model)})"


def variants(profile: Profile, kind: str | None = None) -> list[Variant]:
    """The profile's variants (of one ``kind``, or all: backbones first), in the profile's order."""
    out = []
    for k in VARIANT_KINDS if kind is None else (kind,):
        found = profile.backbones if k == "backbone" else profile.protocols
        for name, spec in found.items():
            methods = tuple(m for m in METHODS if m in spec["methods"])
            out.append(Variant(k, name, profile.variant(k, name), methods))
    return out


def describe(profile: Profile) -> str:
    """Markdown: what each variant is, generated from the profile and :data:`PROTOCOLS`."""
    lines = [f"- **Main study**: {profile.model}, {profile.protocol} protocol ({PROTOCOLS[profile.protocol]})."]
    for v in variants(profile):
        what = (
            f"the {v.profile.model} CLIP{' at ' + v.profile.revision[:12] if v.profile.revision else ''}, "
            f"{v.profile.protocol} protocol"
            if v.kind == "backbone"
            else f"{v.profile.model}, {PROTOCOLS[v.name]}"
        )
        names = ", ".join(METHODS[m].title for m in v.methods)
        lines.append(f"- **{v.label}**: {what}; methods: {names}. Runs: `{v.profile.runs}/{v.profile.profile}/`.")
    return "\n".join(lines)


def run_variants(profile: Profile, progress: bool = True) -> dict[str, dict[str, MethodRuns]]:
    """Run (or reuse) every variant's methods; returns variant label -> method -> its runs."""
    done: dict[str, dict[str, MethodRuns]] = {}
    for v in variants(profile):
        if progress:
            print(f"{v.kind} {v.name}: {', '.join(v.methods)} under {v.profile.profile}", flush=True)
        done[v.label] = {m: run_method(v.profile, m, progress=progress) for m in v.methods}
    return done
