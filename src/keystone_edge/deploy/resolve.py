"""Deployment resolution: which version of which component, started in what order.

Sans-IO and synchronous: :func:`resolve` takes a parsed :class:`DeploymentDocument`, the
recipes that are available and what is installed on the device, and returns a
:class:`Plan` or raises :class:`ResolutionError`. No file, socket or clock is touched here;
the CLI and the deployment engine do the loading.

Rules
-----
1. **Ranges.** Versions are SemVer. Ranges use npm syntax (``semantic_version.NpmSpec``):
   ``>=1.0.0 <2.0.0``, ``^1.2``, ``~1.2.3``, ``1.x``, ``*``, ``a || b`` or an exact
   ``1.2.3``. A prerelease matches only a range that names a prerelease of the same
   ``major.minor.patch``; since every constraint must hold, a prerelease is chosen only
   when *every* range on that component lets it in.
2. **Desired state.** It holds the components the deployment lists; the installed
   components it neither lists nor removes (*kept*: they stay at their installed version,
   a deployment that names only some components never removes or changes the others);
   and, transitively, the hard dependencies of all of these (*pulled in*). Soft
   dependencies are never pulled in.
3. **Constraints.** A component in the desired state must satisfy the deployment's range
   (when listed) and the range of every dependency on it, hard *or* soft, declared by any
   other component in the desired state, kept ones included. A soft dependency whose
   target is not in the desired state constrains nothing.
4. **Choice.** Kept components are decided first (each has one candidate), then the others
   in name order; each takes the highest version that satisfies the constraints in force
   and whose own dependency ranges accept the versions already chosen. When a component
   has no such version, the search returns to the most recent decision that contributed to
   the conflict (conflict-directed backjumping) and tries its next lower version. Facts
   that hold whatever else is chosen (this component can never be satisfied, this version
   can never be used) are remembered, so the search never proves them twice; that is what
   keeps long chains from exploding.
5. **Removal.** A removed component must not also be listed under ``components``, and
   nothing in the desired state may hard-depend on it.
6. **Cycles.** Hard and soft dependencies among the desired state must not form a cycle
   (self-dependencies included), even if other versions would avoid it: a cycle is a
   recipe bug, not a version choice.
7. **Plan.** It covers the components the deployment lists plus the pulled-in ones; kept
   components only constrain (and are reported in ``kept``). ``layers`` are topological
   layers over hard and soft edges (a path through a kept component counts as an edge):
   every component's dependencies are in earlier layers, so one layer can start in
   parallel. ``removals`` lists removed components in the same start order (a removed
   component after the removed components it depends on), so that stopping walks it in
   reverse, like ``reverse_layers()``.

Every failure is a :class:`ResolutionError` whose ``chain`` shows how the failing
component entered the desired state (``("deployment", "com.app@1.0.0", "com.b")``; for a
cycle, the cycle itself). When several versions were tried, the error reported is the first
conflict met, the one the newest versions run into.
"""

from __future__ import annotations

import graphlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from semantic_version import NpmSpec, Version

from keystone_edge.deploy.document import DeploymentDocument
from keystone_edge.errors import ResolutionError
from keystone_edge.recipe.model import Recipe

__all__ = ["Constraint", "ConstraintKind", "Plan", "resolve"]

ConstraintKind = Literal["deployment", "hard", "soft"]
# Why the search rejected a candidate: a range on it fails; one of its own ranges fails a
# version already chosen; it hard-requires a component that can never be resolved; or it
# was proved unusable earlier.
RejectionKind = Literal["constraint", "dependency", "doomed", "unusable"]

_RANGE_HINT = (
    "ranges use npm syntax, without a space after the operator: "
    "'>=1.0.0 <2.0.0', '^1.2', '~1.2.3', '1.x', '*' or an exact '1.2.3'"
)
_NOTHING_INSTALLED: Mapping[str, str] = MappingProxyType({})
# A failure that lists every rejected version would drown the reader; the rest is counted.
_MAX_LISTED_REASONS = 5


@dataclass(frozen=True)
class Constraint:
    """One version range in force on a component, and who imposes it."""

    range: str
    source: str  # "deployment", or the dependent as "com.a@1.0.0"
    kind: ConstraintKind
    installed: bool = False  # the dependent is an installed component kept at its version

    def __str__(self) -> str:
        if self.kind == "deployment":
            return f"{self.range} (deployment)"
        kept = ", installed" if self.installed else ""
        if self.kind == "soft":
            return f"{self.range} (soft dependency of {self.source}{kept})"
        return f"{self.range} (required by {self.source}{kept})"


@dataclass(frozen=True)
class Plan:
    """The resolved desired state: chosen recipes, start order, removals, and why."""

    components: dict[str, Recipe]
    """The chosen recipe of every component the deployment lists or pulls in, by name."""
    layers: list[list[str]]
    """Start order: every component's dependencies are in earlier layers; names sorted."""
    removals: list[str]
    """Components to remove, in start order: stop them walking the list in reverse."""
    requested_by: dict[str, list[str]]
    """Why each planned component is there: ``"deployment"`` and/or hard dependents."""
    constraints: dict[str, list[Constraint]] = field(default_factory=dict)
    """The ranges each planned component satisfies: dependents' by name, then the deployment's."""
    kept: dict[str, str] = field(default_factory=dict)
    """Installed components outside the deployment, left at their version (name -> version)."""

    @property
    def versions(self) -> dict[str, str]:
        """Chosen version per planned component."""
        return {name: recipe.version for name, recipe in self.components.items()}

    def layer_of(self, name: str) -> int:
        """Index of the layer ``name`` starts in."""
        for i, layer in enumerate(self.layers):
            if name in layer:
                return i
        raise KeyError(name)

    def reverse_layers(self) -> list[list[str]]:
        """Stop order: dependents before the components they depend on."""
        return [list(layer) for layer in reversed(self.layers)]


def resolve(
    document: DeploymentDocument,
    available: Iterable[Recipe],
    *,
    installed: Mapping[str, str] = _NOTHING_INSTALLED,
) -> Plan:
    """Choose a version for every component of ``document`` and order them for start.

    ``available`` holds every recipe that may be chosen (any order; duplicates that are
    equal are ignored). ``installed`` maps name -> version of what the device runs now.
    Raises :class:`ResolutionError` when no choice satisfies the rules in this module's
    docstring.
    """
    specs = _Specs()
    index = _index(available)
    removed = frozenset(document.removals)
    wanted: dict[str, _Dep] = {}
    for name, request in sorted(document.components.items()):
        if name in removed:
            raise ResolutionError(
                f"{name} is both requested under [components] and listed in remove",
                chain=("deployment", name),
            )
        text = request.version
        spec = specs.parse(text)
        if spec is None:
            raise _error(
                f'deployment: components."{name}".version: invalid version range {text!r}',
                ("deployment", name),
                _RANGE_HINT,
            )
        wanted[name] = _Dep(name, text, spec, hard=True)

    installed_versions: dict[str, Version] = {}
    for name, text in sorted(installed.items()):
        try:
            installed_versions[name] = Version(text)
        except ValueError:
            raise ResolutionError(
                f"installed: {name}: invalid version {text!r}", chain=("installed", name)
            ) from None
    kept: dict[str, _Candidate] = {}
    for name, version in installed_versions.items():
        if name in removed or name in wanted:
            continue
        known = index.get(name, {}).get(str(version))
        if known is None:
            # Without its recipe a kept component constrains only through its version.
            known = _Candidate(name, version, str(version), None, deps=())
        kept[name] = known

    search = _Search(wanted, index, kept, removed, specs)
    chosen = search.run()
    return _plan(
        chosen,
        wanted=wanted,
        kept=kept,
        removed=removed,
        installed=installed_versions,
        index=index,
    )


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Dep:
    name: str
    text: str
    spec: NpmSpec
    hard: bool


@dataclass(eq=False)
class _Candidate:
    """One version of one component that the search may choose."""

    name: str
    version: Version
    text: str  # the version as written in the recipe
    recipe: Recipe | None  # None: installed and kept, but its recipe is not available
    # Parsed on first use, so a bad range in a version never considered blocks nothing.
    deps: tuple[_Dep, ...] | None = None

    @property
    def label(self) -> str:
        return f"{self.name}@{self.text}"


class _Specs:
    """Parses ranges once: NpmSpec parsing dominates the search's cost otherwise."""

    def __init__(self) -> None:
        self._cache: dict[str, NpmSpec | None] = {}

    def parse(self, text: str) -> NpmSpec | None:
        if text not in self._cache:
            try:
                self._cache[text] = NpmSpec(text)
            # semantic_version's parser fails on some malformed hyphen ranges ("1.0 - x")
            # with AttributeError instead of ValueError; both mean "not a range".
            except (ValueError, AttributeError):
                self._cache[text] = None
        return self._cache[text]

    def deps(self, cand: _Candidate, chain: Sequence[str]) -> tuple[_Dep, ...]:
        if cand.deps is None:
            parsed: list[_Dep] = []
            assert cand.recipe is not None  # a recipe-less candidate is built with deps=()
            for dep in cand.recipe.dependencies:
                spec = self.parse(dep.version)
                if spec is None:
                    raise _error(
                        f"{cand.label}: dependency {dep.name}: "
                        f"invalid version range {dep.version!r}",
                        (*chain, cand.label),
                        _RANGE_HINT,
                    )
                parsed.append(_Dep(dep.name, dep.version, spec, dep.type == "hard"))
            cand.deps = tuple(parsed)
        return cand.deps


def _index(available: Iterable[Recipe]) -> dict[str, dict[str, _Candidate]]:
    """name -> version -> candidate, highest precedence first."""
    found: dict[str, dict[str, _Candidate]] = defaultdict(dict)
    for recipe in available:
        try:
            version = Version(recipe.version)
        except ValueError:
            raise ResolutionError(
                f"{recipe.name}: recipe version {recipe.version!r} is not valid SemVer",
                chain=(recipe.name,),
            ) from None
        key = str(version)
        other = found[recipe.name].get(key)
        if other is not None:
            if other.recipe == recipe:
                continue
            raise _error(
                f"{recipe.name}@{key}: two different recipes with this version are available",
                (f"{recipe.name}@{key}",),
                "a published version must not change; give the new recipe a new version",
            )
        found[recipe.name][key] = _Candidate(recipe.name, version, recipe.version, recipe)
    return {
        name: dict(
            sorted(
                versions.items(),
                key=lambda item: (item[1].version.precedence_key, item[0]),
                reverse=True,
            )
        )
        for name, versions in found.items()
    }


@dataclass(eq=False)
class _Frame:
    """One decision of the search: a component and the candidate currently tried."""

    name: str
    candidates: list[_Candidate]
    depth: int
    root: Literal["deployment", "installed"] | None
    # The shallowest decision that hard-requires this component (None for roots): the
    # reason the component must be decided at all.
    intro: _Frame | None
    index: int = -1
    # Earlier decisions that rejected some candidate of this one (the conflict set).
    conflicts: set[_Frame] = field(default_factory=set)
    rejections: list[_Rejection] = field(default_factory=list)

    @property
    def current(self) -> _Candidate:
        return self.candidates[self.index]

    def reject(
        self,
        cand: _Candidate,
        kind: RejectionKind,
        blame: set[_Frame],
        *,
        dep: _Dep | None = None,
        target: _Frame | None = None,
    ) -> set[_Frame]:
        """Note why ``cand`` was rejected (for the error text); return whom to blame."""
        self.rejections.append(_Rejection(cand, kind, dep, target))
        return blame


@dataclass(frozen=True)
class _Edge:
    """A dependency range declared by an assigned decision on another component."""

    source: _Frame
    dep: _Dep

    def constraint(self) -> Constraint:
        return Constraint(
            self.dep.text,
            self.source.current.label,
            "hard" if self.dep.hard else "soft",
            installed=self.source.root == "installed",
        )


@dataclass(frozen=True)
class _Rejection:
    candidate: _Candidate
    kind: RejectionKind
    dep: _Dep | None = None
    target: _Frame | None = None


class _Search:
    """Backjumping search over versions; see rule 4 of the module docstring."""

    def __init__(
        self,
        wanted: Mapping[str, _Dep],
        index: Mapping[str, Mapping[str, _Candidate]],
        kept: Mapping[str, _Candidate],
        removed: frozenset[str],
        specs: _Specs,
    ) -> None:
        self.wanted = wanted
        self.index = index
        self.kept = kept
        self.removed = removed
        self.specs = specs
        self.stack: list[_Frame] = []
        self.assigned: dict[str, _Frame] = {}
        self.incoming: defaultdict[str, list[_Edge]] = defaultdict(list)
        self.hard_refs: Counter[str] = Counter()
        self.required: set[str] = {*wanted, *kept}
        # Learned facts, true whatever else is chosen: never re-proved.
        self.doomed: set[str] = set()
        self.unusable: set[tuple[str, str]] = set()
        self.first_failure: ResolutionError | None = None
        self.retried: set[str] = set()

    def run(self) -> dict[str, _Frame]:
        while (name := self._next()) is not None:
            frame = self._push(name)
            while not self._advance(frame):
                frame = self._backjump(frame)
        return dict(self.assigned)

    def _next(self) -> str | None:
        pending = self.required.difference(self.assigned)
        if not pending:
            return None
        # Kept components first: one candidate each, so they are the most constrained, and
        # their ranges are then in force when the components that can change are decided.
        return min(pending, key=lambda n: (n not in self.kept, n))

    def _push(self, name: str) -> _Frame:
        root: Literal["deployment", "installed"] | None = None
        if name in self.wanted:
            root = "deployment"
        elif name in self.kept:
            root = "installed"
        intro = None
        if root is None:
            intro = next(e.source for e in self.incoming[name] if e.dep.hard)
        if name in self.removed:
            candidates: list[_Candidate] = []
        elif name in self.kept:
            candidates = [self.kept[name]]
        else:
            candidates = list(self.index.get(name, {}).values())
        frame = _Frame(name, candidates, len(self.stack), root, intro)
        self.stack.append(frame)
        return frame

    def _advance(self, frame: _Frame) -> bool:
        """Assign ``frame`` its next acceptable candidate; False when none is left."""
        for i in range(frame.index + 1, len(frame.candidates)):
            blame = self._check(frame, frame.candidates[i])
            if blame is None:
                if frame.index >= 0:
                    # A lower version replaces one that led to a conflict: worth a mention
                    # if the search fails in the end.
                    self.retried.add(frame.name)
                frame.index = i
                self._assign(frame)
                return True
            frame.conflicts |= blame
        frame.index = len(frame.candidates)
        return False

    def _check(self, frame: _Frame, cand: _Candidate) -> set[_Frame] | None:
        """None if ``cand`` fits the decisions above ``frame``, else the decisions to blame.

        Facts independent of other decisions are checked first: a rejection that blames
        nothing lets the search learn the most.
        """
        name = frame.name
        if (name, cand.text) in self.unusable:
            return frame.reject(cand, "unusable", set())
        want = self.wanted.get(name)
        if want is not None and not want.spec.match(cand.version):
            return frame.reject(cand, "constraint", set())
        # incoming is in stack order: the first failing edge is the shallowest to blame,
        # which lets a backjump skip the most decisions.
        for edge in self.incoming[name]:
            if not edge.dep.spec.match(cand.version):
                return frame.reject(cand, "constraint", {edge.source})
        deps = self.specs.deps(cand, self._chain(frame)[:-1])
        for dep in deps:
            if dep.hard and dep.name != name and dep.name in self.doomed:
                return frame.reject(cand, "doomed", set(), dep=dep)
        worst: tuple[_Dep, _Frame] | None = None
        for dep in deps:
            target = self.assigned.get(dep.name)
            if target is None or dep.name == name or dep.spec.match(target.current.version):
                continue
            if worst is None or target.depth < worst[1].depth:
                worst = (dep, target)
        if worst is not None:
            return frame.reject(cand, "dependency", {worst[1]}, dep=worst[0], target=worst[1])
        return None

    def _assign(self, frame: _Frame) -> None:
        self.assigned[frame.name] = frame
        for dep in frame.current.deps or ():
            if dep.name == frame.name:
                continue  # a self-dependency is reported as a cycle once the search is done
            self.incoming[dep.name].append(_Edge(frame, dep))
            if dep.hard:
                self.hard_refs[dep.name] += 1
                self.required.add(dep.name)

    def _unassign(self, frame: _Frame) -> None:
        del self.assigned[frame.name]
        for dep in reversed(frame.current.deps or ()):
            if dep.name == frame.name:
                continue
            # Decisions are undone in reverse order, so this frame's edges are the last ones.
            edge = self.incoming[dep.name].pop()
            assert edge.source is frame
            if dep.hard:
                self.hard_refs[dep.name] -= 1
                roots = (self.wanted, self.kept)
                if not self.hard_refs[dep.name] and all(dep.name not in r for r in roots):
                    self.required.discard(dep.name)

    def _backjump(self, frame: _Frame) -> _Frame:
        """``frame`` has no candidate left: return the decision to revise next."""
        if self.first_failure is None:
            self.first_failure = self._explain(frame)
        nogood = set(frame.conflicts)
        if frame.intro is not None:
            nogood.add(frame.intro)
        if not frame.conflicts:
            # Every candidate failed for reasons independent of other decisions.
            self.doomed.add(frame.name)
        self.stack.pop()
        if not nogood:
            raise self._final_error()
        target = max(nogood, key=lambda f: f.depth)
        while self.stack[-1] is not target:
            self._unassign(self.stack.pop())
        self._unassign(target)
        rest = nogood - {target}
        if not rest:
            self.unusable.add((target.name, target.current.text))
        target.conflicts |= rest
        return target

    def _final_error(self) -> ResolutionError:
        err = self.first_failure
        assert err is not None
        failing = err.chain[-1] if err.chain else ""
        retried = sorted(n for n in self.retried if n != failing)
        if len(retried) > _MAX_LISTED_REASONS:
            more = len(retried) - _MAX_LISTED_REASONS
            retried = [*retried[:_MAX_LISTED_REASONS], f"{more} more"]
        if retried:
            note = f"older versions of {', '.join(retried)} were tried too; none resolves"
            err.hint = f"{err.hint}; {note}" if err.hint else note
        return err

    def _chain(self, frame: _Frame) -> tuple[str, ...]:
        labels = [frame.name]
        at = frame.intro
        root = frame.root
        while at is not None:
            labels.append(at.current.label)
            root = at.root
            at = at.intro
        labels.append(root or "deployment")
        return tuple(reversed(labels))

    def _explain(self, frame: _Frame) -> ResolutionError:
        name = frame.name
        chain = self._chain(frame)
        hint: str | None = None
        if not frame.candidates:
            if name in self.removed:
                dependents = sorted(
                    {e.source.current.label for e in self.incoming[name] if e.dep.hard}
                )
                message = f"cannot remove {name}: still required by {', '.join(dependents)}"
                hint = f"remove its dependents too, or keep {name}"
            elif frame.intro is None:
                message = (
                    f"the deployment requests {name} {self.wanted[name].text}, "
                    f"but no recipe for {name} is available"
                )
            else:
                dep = next(e.dep for e in self.incoming[name] if e.source is frame.intro)
                message = (
                    f"{frame.intro.current.label} requires {name} {dep.text}, "
                    f"but no recipe for {name} is available"
                )
            return _error(message, chain, hint)

        constraints = " and ".join(str(c) for c in self._constraints(name))
        if all(r.kind == "constraint" for r in frame.rejections):
            if frame.root == "installed":
                message = (
                    f"{name}: installed version {frame.candidates[0].text} "
                    f"does not satisfy {constraints}"
                )
                hint = _kept_hint(name)
            else:
                versions = sorted(frame.candidates, key=lambda c: c.version.precedence_key)
                listed = ", ".join(c.text for c in versions)
                message = f"{name}: no version satisfies {constraints}; available: {listed}"
                pre = [c.text for c in versions if c.version.prerelease]
                if pre:
                    hint = (
                        f"prereleases ({', '.join(pre)}) match only ranges that name a "
                        "prerelease of the same version, such as '>=2.0.0-rc.1'"
                    )
            return _error(message, chain, hint)

        reasons: list[str] = []
        unfit: list[str] = []
        for rej in frame.rejections:
            version = rej.candidate.text
            if rej.kind == "constraint":
                unfit.append(version)
            elif rej.kind == "dependency":
                assert rej.dep is not None
                assert rej.target is not None
                target = rej.target.current
                if rej.target.root == "installed":
                    now = f"{target.name} stays at {target.text} (installed, not in the deployment)"
                    hint = _kept_hint(target.name)
                else:
                    now = f"{target.name} {target.text} was chosen"
                reasons.append(f"{version} requires {rej.dep.name} {rej.dep.text}, but {now}")
            elif rej.kind == "doomed":
                assert rej.dep is not None
                reasons.append(f"{version} requires {rej.dep.name}, which cannot be resolved")
            else:
                reasons.append(f"{version} cannot be used (see the versions tried above)")
        if len(reasons) > _MAX_LISTED_REASONS:
            more = len(reasons) - _MAX_LISTED_REASONS
            reasons = [*reasons[:_MAX_LISTED_REASONS], f"and {more} more"]
        if unfit:
            verb = "does" if len(unfit) == 1 else "do"
            reasons.append(f"{', '.join(unfit)} {verb} not satisfy {constraints}")
        return _error(f"{name}: no version can be used: {'; '.join(reasons)}", chain, hint)

    def _constraints(self, name: str) -> list[Constraint]:
        """Ranges in force on ``name``: dependents by name, then the deployment's."""
        found = sorted(
            (e.constraint() for e in self.incoming[name]), key=lambda c: (c.source, c.range)
        )
        want = self.wanted.get(name)
        if want is not None:
            found.append(Constraint(want.text, "deployment", "deployment"))
        return found


def _kept_hint(name: str) -> str:
    return (
        "installed components the deployment does not list keep their version; "
        f"list {name} under [components] to change it"
    )


def _error(
    message: str, chain: tuple[str, ...], hint: str | None = None, *, show_chain: bool = True
) -> ResolutionError:
    # Spell the whole path out only when it says more than the message already does:
    # the message names the failing component and its direct dependent.
    if show_chain and len(chain) >= 4:
        message += f"\n  chain: {' -> '.join(chain)}"
    err = ResolutionError(message, chain=chain)
    err.hint = hint
    return err


def _plan(
    chosen: Mapping[str, _Frame],
    *,
    wanted: Mapping[str, _Dep],
    kept: Mapping[str, _Candidate],
    removed: frozenset[str],
    installed: Mapping[str, Version],
    index: Mapping[str, Mapping[str, _Candidate]],
) -> Plan:
    graph = {
        name: sorted({d.name for d in frame.current.deps or () if d.name in chosen})
        for name, frame in sorted(chosen.items())
    }
    _check_cycles(graph)
    planned = sorted(name for name in chosen if name not in kept)

    requested_by: dict[str, list[str]] = {}
    constraints: dict[str, list[Constraint]] = {}
    for name in planned:
        edges = [
            _Edge(frame, dep)
            for frame in chosen.values()
            for dep in frame.current.deps or ()
            if dep.name == name and frame.name != name
        ]
        why = ["deployment"] if name in wanted else []
        requested_by[name] = why + sorted({e.source.name for e in edges if e.dep.hard})
        found = sorted((e.constraint() for e in edges), key=lambda c: (c.source, c.range))
        if name in wanted:
            found.append(Constraint(wanted[name].text, "deployment", "deployment"))
        constraints[name] = found

    components: dict[str, Recipe] = {}
    for name in planned:
        recipe = chosen[name].current.recipe
        assert recipe is not None  # only kept components may lack a recipe
        components[name] = recipe
    return Plan(
        components=components,
        layers=_layers(_through_kept(graph, set(planned)), planned),
        removals=_removal_order(removed, installed, index),
        requested_by=requested_by,
        constraints=constraints,
        kept={name: cand.text for name, cand in sorted(kept.items())},
    )


def _check_cycles(graph: Mapping[str, Sequence[str]]) -> None:
    sorter = graphlib.TopologicalSorter(graph)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each node before the one that depends on it; reverse it so that
        # "a -> b" reads "a depends on b", and start at the smallest name for stable text.
        nodes: list[str] = list(reversed(exc.args[1]))[:-1]
        start = nodes.index(min(nodes))
        cycle = (*nodes[start:], *nodes[:start], min(nodes))
        raise _error(
            f"cycle: {' -> '.join(cycle)}",
            cycle,
            "dependencies (hard or soft) must not form a cycle: none of them could start",
            show_chain=False,
        ) from None


def _through_kept(graph: Mapping[str, Sequence[str]], planned: set[str]) -> dict[str, set[str]]:
    """Edges among planned components, following paths through kept components."""
    edges: dict[str, set[str]] = {}
    for name in planned:
        found: set[str] = set()
        seen: set[str] = set()
        todo = list(graph[name])
        while todo:
            dep = todo.pop()
            if dep in seen:
                continue
            seen.add(dep)
            if dep in planned:
                found.add(dep)
            else:
                todo.extend(graph[dep])
        edges[name] = found
    return edges


def _layers(edges: Mapping[str, Iterable[str]], names: Iterable[str]) -> list[list[str]]:
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name in names:
        sorter.add(name, *edges.get(name, ()))
    sorter.prepare()
    layers: list[list[str]] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        layers.append(ready)
        sorter.done(*ready)
    return layers


def _removal_order(
    removed: frozenset[str],
    installed: Mapping[str, Version],
    index: Mapping[str, Mapping[str, _Candidate]],
) -> list[str]:
    """Removed components, each after the removed components it depends on.

    Only the installed versions' recipes say who depends on whom; without them (or on a
    cycle, which then is already on the device) the order is by name.
    """
    edges: dict[str, set[str]] = {}
    for name in removed:
        version = installed.get(name)
        cand = index.get(name, {}).get(str(version)) if version is not None else None
        deps = cand.recipe.dependencies if cand is not None and cand.recipe is not None else []
        edges[name] = {d.name for d in deps if d.name in removed and d.name != name}
    try:
        layers = _layers(edges, sorted(removed))
    except graphlib.CycleError:
        return sorted(removed)
    return [name for layer in layers for name in layer]
