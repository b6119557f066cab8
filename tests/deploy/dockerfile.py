"""A small reader for the Dockerfile: its stages (each resolved through the stages it builds
on), and a target's ENV, CMD and HEALTHCHECK."""

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for inst in self.all("ENV"):
            for pair in shlex.split(inst.args):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {inst.args!r}: use the KEY=value form"
                values[key] = value
        return values

    def exec_form(self, keyword: str) -> list[str]:
        """The JSON-array argument of the last `keyword` (CMD, or HEALTHCHECK's CMD)."""
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name}"
        args = found[-1].args
        if keyword == "HEALTHCHECK":
            args = re.sub(r"^(--[a-z-]+=\S+\s+)*CMD\s+", "", args)
        parsed = json.loads(args)
        assert isinstance(parsed, list), f"{keyword} is not in exec form: {args}"
        return [str(part) for part in parsed]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults, and the stages in order."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--")]
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            if keyword == "ARG":
                key, _, value = rest.partition("=")
                args[key] = value
        else:
            stages[-1].instructions.append(Instruction(keyword, rest))
    return args, stages


def named(stages: list[Stage], name: str) -> Stage:
    (stage,) = [s for s in stages if s.name == name]
    return stage


def chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """`stage` and the earlier stages it is built `FROM`, the image-based one first."""
    names = {s.name: s for s in stages[: stages.index(stage)] if s.name}
    found = [stage]
    while found[0].base in names:
        found.insert(0, names[found[0].base])
    return found


def resolve(stages: list[Stage], stage: Stage) -> Stage:
    """What a build of `stage` runs: its own instructions after those of the stages below it.

    Docker's inheritance, simplified: a later CMD, ENTRYPOINT, USER or HEALTHCHECK wins,
    which `all(...)[-1]` and `exec_form` already read as the last one.
    """
    layers = chain(stages, stage)
    return Stage(
        base=layers[0].base,
        name=stage.name,
        instructions=[i for layer in layers for i in layer.instructions],
    )


def default_target(stages: list[Stage]) -> Stage:
    """What `docker build` without `--target` builds: the last stage, resolved."""
    return resolve(stages, stages[-1])
